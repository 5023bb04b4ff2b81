"""Read a ``torch.export`` archive (``model.pt2``) as data: its members, its JSON program and its raw tensor
payloads, refusing (:class:`Unsupported`) anything a plain program's archive does not hold.

serving/program.py runs what this returns; the rules on what a ``.pt2`` may hold are in its docstring.
Nothing here unpickles: the pickled sample inputs torch.export.save adds are never read.
"""

from __future__ import annotations

import json
import math
import sys
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

import torch
from torch._C._export import pt2_archive_constants as c

SCHEMA_MAJOR = 8
"""The major version of torch.export's serialization schema this interpreter was tested with
(torch 2.13); a test checks it against ``torch._export.serde.schema.SCHEMA_VERSION``."""

# Serialized enum values -> torch objects (torch/_export/serde/schema.py; a test checks both tables).
DTYPES = {
    1: torch.uint8,
    2: torch.int8,
    3: torch.int16,
    4: torch.int32,
    5: torch.int64,
    6: torch.float16,
    7: torch.float32,
    8: torch.float64,
    9: torch.complex32,
    10: torch.complex64,
    11: torch.complex128,
    12: torch.bool,
    13: torch.bfloat16,
    28: torch.uint16,
    29: torch.float8_e4m3fn,
    30: torch.float8_e5m2,
    31: torch.float8_e4m3fnuz,
    32: torch.float8_e5m2fnuz,
    33: torch.float8_e8m0fnu,
    34: torch.uint32,
    35: torch.uint64,
}
LAYOUTS = {
    1: torch.sparse_coo,
    2: torch.sparse_csr,
    3: torch.sparse_csc,
    4: torch.sparse_bsr,
    5: torch.sparse_bsc,
    6: torch._mkldnn,  # type: ignore[attr-defined]  # a layout torch has at run time; its stubs omit it
    7: torch.strided,
}
MEMORY_FORMATS = {
    1: torch.contiguous_format,
    2: torch.channels_last,
    3: torch.channels_last_3d,
    4: torch.preserve_format,
}
STRIDED = 7


class Unsupported(Exception):
    """The archive holds something this reader does not run: the model is refused, with this reason."""


LEGACY_MEMBERS = (
    "serialized_exported_program.json",
    "serialized_state_dict.pt",
    "serialized_constants.pt",
    "serialized_example_inputs.pt",
    "version",
)
"""What torch.export.save wrote before torch 2.7, at the zip's top level; its weights are pickles."""


class Archive(NamedTuple):
    """What the program is built from."""

    graph: dict[str, Any]
    """The graph, with the exported program's signature under ``"signature"``."""
    tensors: dict[str, torch.Tensor]
    """Weights and constants by fully qualified name."""
    ranges: dict[str, Any]
    """The range constraints of the dynamic dimensions' symbols."""
    in_spec: str
    out_spec: str


def read_archive(path: Path) -> Archive:
    """The archive at ``path``, checked member by member; Unsupported when it holds more than a plain program."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            root = _root(names)
            _check_members(names, root)
            _check_format(zf, names, root)
            models = [n for n in names if n.startswith(root + c.MODELS_DIR) and n.endswith(".json")]
            if models != [root + c.MODELS_FILENAME_FORMAT.format("model")]:
                raise Unsupported(f"expected the one program 'model', found {len(models)} program(s)")
            program = json.loads(zf.read(models[0]))
            tensors = _read_payloads(
                zf, root, c.WEIGHTS_CONFIG_FILENAME_FORMAT.format("model"), c.WEIGHTS_DIR, c.WEIGHT_FILENAME_PREFIX
            )
            constants = _read_payloads(
                zf,
                root,
                c.CONSTANTS_CONFIG_FILENAME_FORMAT.format("model"),
                c.CONSTANTS_DIR,
                c.TENSOR_CONSTANT_FILENAME_PREFIX,
            )
    except (KeyError, ValueError, TypeError, zipfile.BadZipFile) as exc:
        raise Unsupported(f"unexpected archive layout ({type(exc).__name__}: {exc})") from None
    major = program.get("schema_version", {}).get("major")
    if major != SCHEMA_MAJOR:
        raise Unsupported(f"schema version {major} (this interpreter reads {SCHEMA_MAJOR})")
    module = program["graph_module"]
    if len(module["module_call_graph"]) < 1 or module["module_call_graph"][0]["fqn"] != "":
        raise Unsupported("no top-level call signature")
    call = module["module_call_graph"][0]["signature"]
    graph = {**module["graph"], "signature": module["signature"]}
    return Archive(
        graph, {**constants, **tensors}, program.get("range_constraints", {}), call["in_spec"], call["out_spec"]
    )


def _check_format(zf: zipfile.ZipFile, names: list[str], root: str) -> None:
    fmt = zf.read(root + c.ARCHIVE_FORMAT_PATH).decode().strip() if (root + c.ARCHIVE_FORMAT_PATH) in names else None
    if fmt != c.ARCHIVE_FORMAT_VALUE:
        raise Unsupported(f"archive_format is {fmt!r}, not {c.ARCHIVE_FORMAT_VALUE!r}")
    order = zf.read(root + "byteorder").decode().strip() if root + "byteorder" in names else "little"
    if order != sys.byteorder:
        raise Unsupported(f"payloads are {order}-endian and this machine is {sys.byteorder}-endian")


def _root(names: list[str]) -> str:
    """The archive's one top folder ('model/', or the temporary name torch.export.save wrote it under)."""
    if any(name in LEGACY_MEMBERS for name in names):
        raise Unsupported(
            "it is in torch.export's pre-2.7 layout, whose weights are pickles: re-export it with "
            "torch.export.save from torch 2.7 or later"
        )
    roots = {name.split("/", 1)[0] for name in names}
    if len(roots) != 1 or any("/" not in name for name in names):
        raise Unsupported(f"expected one top-level folder in the archive, found {len(roots)} top-level entries")
    return roots.pop() + "/"


_METADATA = frozenset(
    {
        c.ARCHIVE_FORMAT_PATH,
        c.ARCHIVE_VERSION_PATH,
        "byteorder",
        ".data/version",
        ".data/serialization_id",
        c.MODELS_FILENAME_FORMAT.format("model"),
        c.WEIGHTS_CONFIG_FILENAME_FORMAT.format("model"),
        c.CONSTANTS_CONFIG_FILENAME_FORMAT.format("model"),
        c.SAMPLE_INPUTS_FILENAME_FORMAT.format("model"),
    }
)
"""The members torch.export.save writes besides payloads. The sample inputs are a pickle: never read."""


def _check_members(names: list[str], root: str) -> None:
    """Every member is one torch.export.save writes for a plain program; anything else is refused."""
    for name in names:
        inner = name[len(root) :]
        parts = PurePosixPath(inner).parts
        if inner.endswith("/") or inner in _METADATA:
            continue
        if len(parts) == 3 and (
            (inner.startswith(c.WEIGHTS_DIR) and parts[2].startswith(c.WEIGHT_FILENAME_PREFIX))
            or (inner.startswith(c.CONSTANTS_DIR) and parts[2].startswith(c.TENSOR_CONSTANT_FILENAME_PREFIX))
        ):
            continue
        if inner.startswith((c.AOTINDUCTOR_DIR, c.EXECUTORCH_DIR, c.MTIA_DIR)):
            raise Unsupported(f"it holds compiled code ({inner}); only plain programs are served")
        raise Unsupported(f"it holds {inner!r}, which is not part of a plain torch.export program")


def _ints(values: list[dict[str, Any]], what: str) -> list[int]:
    out = []
    for value in values:
        if "as_int" not in value:
            raise Unsupported(f"{what} is symbolic")
        out.append(int(value["as_int"]))
    return out


def _read_payloads(
    zf: zipfile.ZipFile, root: str, config_name: str, folder: str, prefix: str
) -> dict[str, torch.Tensor]:
    """Tensors by fully qualified name, from a weights or constants config; files shared by several
    names (tied weights) are read once, so the views alias as they did when saved."""
    config = json.loads(zf.read(root + config_name)).get("config", {})
    files: dict[str, torch.Tensor] = {}
    tensors = {}
    for fqn, meta in config.items():
        file = meta.get("path_name", "")
        tensor_meta = meta.get("tensor_meta")
        if meta.get("use_pickle") or not file.startswith(prefix) or tensor_meta is None:
            raise Unsupported(f"'{fqn}' is not stored as a plain tensor")
        if tensor_meta.get("layout", STRIDED) != STRIDED:
            raise Unsupported(f"'{fqn}' is not a strided tensor")
        dtype = DTYPES.get(tensor_meta["dtype"])
        if dtype is None:
            raise Unsupported(f"'{fqn}' has dtype code {tensor_meta['dtype']}")
        sizes = _ints(tensor_meta["sizes"], f"the size of '{fqn}'")
        if file not in files:
            data = bytearray(zf.read(root + folder + file))
            if len(data) % dtype.itemsize:
                raise Unsupported(f"'{fqn}': {len(data)} bytes is not a whole number of {dtype}")
            files[file] = torch.frombuffer(data, dtype=dtype) if data else torch.zeros(sizes, dtype=dtype)
        base = files[file]
        if base.numel() == 0 and math.prod(sizes) == 0:
            tensors[fqn] = base.reshape(sizes)
            continue
        tensors[fqn] = base.as_strided(
            sizes,
            _ints(tensor_meta["strides"], f"the strides of '{fqn}'"),
            _ints([tensor_meta["storage_offset"]], f"the offset of '{fqn}'")[0],
        )
    return tensors


def tree_leaves(spec_json: str, what: str) -> tuple[str | None, int]:
    """(container, number of leaves) for a treespec that is a leaf (container None) or a flat
    tuple or list of leaves; anything deeper is Unsupported."""
    version, spec = json.loads(spec_json)
    if version != 1:
        raise Unsupported(f"{what} treespec version {version}")
    if spec["type"] is None:
        return None, 1
    if spec["type"] in ("builtins.tuple", "builtins.list") and all(
        child["type"] is None for child in spec["children_spec"]
    ):
        return spec["type"].removeprefix("builtins."), len(spec["children_spec"])
    raise Unsupported(f"{what} is a nested {spec['type']}")
