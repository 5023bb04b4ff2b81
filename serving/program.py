"""Run a ``torch.export`` archive (``model.pt2``) without ``torch.export.load``, and refuse any that is more
than data.

Why its own reader: ``torch.export.load`` unpickles (it retries ``torch.load`` with ``weights_only=False``
on files in torch.export's pre-2.7 layout), resolves any ``torch.*`` attribute path a graph names, and
imports ``torch._dynamo``, ``torch._inductor``, sympy and networkx (about 96 MiB of resident memory and
0.9 s of start-up in every server process, none of which a forward pass needs). The archive itself is
plain: a JSON graph of ATen operator calls (``torch._export.serde.schema``) and raw tensor payloads. This
module reads both and runs the graph node by node, calling the same operators in the same order, so its
outputs are the ones ``torch.export.load(path).module()`` gives (tests/serving/test_archive_program.py
compares them bit for bit on every model the trainer and the benchmarks export, and on a zoo of layers).

A model file is data, so this reader is also the one place that decides what a ``.pt2`` may hold:

- the zip holds one folder with the members torch.export.save (torch 2.7 and later) writes, and nothing
  else; the pre-2.7 layout (``serialized_state_dict.pt`` and friends: pickles) is refused;
- weights and constants are raw tensor bytes; nothing is ever unpickled (the pickled sample inputs that
  torch.export.save adds are never read);
- every node calls an operator from the allow-list in serving/operators.py, with string and device
  arguments checked against the operator's schema, or the integer arithmetic of dynamic shapes;
- the program may not write to its own weights, buffers or constants (checked at load, and on every
  in-place call), so nothing is carried from one forward pass to the next;
- inputs are a flat list of tensors, outputs a tensor or a flat tuple or list of them.

Anything else (control flow such as ``torch.cond``, custom operators, state updates, nested inputs,
another schema major version) raises :class:`Unsupported`, and the model is refused with that reason.
Only a server started with ``--trust-model-files`` (off by default; docs/serving.md, "Threat model")
hands such a file to ``torch.export.load`` instead, which may run code from it.
"""

from __future__ import annotations

import json
import logging
import math
import operator
import re
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

import torch
from torch import nn
from torch._C._export import pt2_archive_constants as c

from serving import operators

log = logging.getLogger("serving.program")

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
    6: torch._mkldnn,
    7: torch.strided,
}  # type: ignore[attr-defined]
MEMORY_FORMATS = {
    1: torch.contiguous_format,
    2: torch.channels_last,
    3: torch.channels_last_3d,
    4: torch.preserve_format,
}
STRIDED = 7

# The symbolic-size operators torch.export may emit (serialize.py's _SYM_OPS), by their serialized name.
SYM_OPS: dict[str, Callable[..., Any]] = {
    **{
        f"_operator.{name}": getattr(operator, name)
        for name in (
            "eq",
            "ne",
            "le",
            "ge",
            "lt",
            "gt",
            "neg",
            "pos",
            "mul",
            "add",
            "sub",
            "floordiv",
            "mod",
            "pow",
            "truediv",
            "and_",
            "or_",
            "lshift",
            "rshift",
        )
    },
    "math.trunc": math.trunc,
    **{
        f"torch.{name}": getattr(torch, name)
        for name in ("sym_not", "sym_int", "sym_float", "sym_ite", "sym_max", "sym_min", "sym_sqrt")
    },
}
_ATEN_TARGET = re.compile(r"torch\.ops\.aten\.([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)")
_SYMBOL = re.compile(r"Symbol\('([A-Za-z_][A-Za-z0-9_]*)'(?:, [^()]*)?\)")


class _Step(NamedTuple):
    op: Callable[..., Any]
    args: list[Any]
    kwargs: dict[str, Any]
    store: Callable[[list[Any], Any], None]
    target: str
    output: int | None
    """The slot of the node's one tensor output, else None."""


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


def load_program(path: Path, *, trusted: bool = False) -> nn.Module:
    """The program in ``path`` as a module, run by this reader; Unsupported when the file holds more than
    it runs. ``trusted`` (the server's ``--trust-model-files``): hand such a file to ``torch.export.load``
    instead, which may unpickle it and run its code."""
    try:
        return ArchiveProgram.load(path)
    except Unsupported as why:
        if not trusted:
            raise
        log.warning(
            "%s: %s; loading it with torch.export.load because --trust-model-files is on (it may run "
            "code from the file)",
            path,
            why,
        )
        return torch.export.load(path).module()


# ------------------------------------------------------------------------------------------------ the archive


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


def _tree_leaves(spec_json: str, what: str) -> tuple[str | None, int]:
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


# ------------------------------------------------------------------------------------------------ the program


class ArchiveProgram(nn.Module):
    """An exported program's graph, run node by node: a drop-in for ``ExportedProgram.module()`` on the
    graphs described in this module's docstring. Its tensors are buffers, so ``.to(device)`` moves them."""

    def __init__(
        self,
        graph: dict[str, Any],
        tensors: dict[str, torch.Tensor],
        ranges: dict[str, Any],
        in_spec: str,
        out_spec: str,
    ) -> None:
        super().__init__()
        self._slots: dict[str, int] = {}
        self._state: list[tuple[int, str]] = []  # (slot, buffer attribute)
        self._inputs: list[tuple[int, list[int | tuple[int, int] | None]]] = []  # (slot, dims: fixed, range, any)
        self._outputs: list[Any] = []
        self._storages: frozenset[int] | None = None
        self._setup_inputs(graph, tensors, ranges)
        self._aliases_state = {slot for slot, _ in self._state}
        """Slots holding the program's state or a view of it: in-place ops may not write to them."""
        self._graph_steps = [self._compile_node(node) for node in graph["nodes"]]
        self._setup_outputs(graph, in_spec, out_spec)
        self._size = len(self._slots)
        self._plan = self._schedule(self._graph_steps)
        self.fused = 0
        """How many convolution + ReLU pairs run as one oneDNN call (see :meth:`fuse_conv_relu`)."""

    @classmethod
    def load(cls, path: Path) -> ArchiveProgram:
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
                root = _root(names)
                _check_members(names, root)
                fmt = (
                    zf.read(root + c.ARCHIVE_FORMAT_PATH).decode().strip()
                    if (root + c.ARCHIVE_FORMAT_PATH) in names
                    else None
                )
                if fmt != c.ARCHIVE_FORMAT_VALUE:
                    raise Unsupported(f"archive_format is {fmt!r}, not {c.ARCHIVE_FORMAT_VALUE!r}")
                order = zf.read(root + "byteorder").decode().strip() if root + "byteorder" in names else "little"
                if order != sys.byteorder:
                    raise Unsupported(f"payloads are {order}-endian and this machine is {sys.byteorder}-endian")
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
        try:
            return cls(
                graph, {**constants, **tensors}, program.get("range_constraints", {}), call["in_spec"], call["out_spec"]
            )
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            raise Unsupported(f"unexpected graph ({type(exc).__name__}: {exc})") from None

    # -------------------------------------------------------------------------------------------- compile

    def _schedule(self, steps: list[_Step]) -> list[tuple[Any, ...]]:
        """What forward runs: each step with the slots to drop after it. Each intermediate value goes at
        its last use, as in FX's generated code: otherwise every activation of a pass stays alive to its
        end (22 instead of 16 MiB for the bench CNN)."""
        last_use = {}
        for index, step in enumerate(steps):
            for slot in _refs([*step.args, *step.kwargs.values()]):
                last_use[slot] = index
        kept = set(_refs(self._outputs))
        frees: list[list[int]] = [[] for _ in steps]
        for slot, index in last_use.items():
            if slot not in kept:
                frees[index].append(slot)
        return [
            (step.op, step.args, step.kwargs, step.store, tuple(free)) for step, free in zip(steps, frees, strict=True)
        ]

    def _slot(self, name: str) -> int:
        return self._slots.setdefault(name, len(self._slots))

    def _setup_inputs(self, graph: dict[str, Any], tensors: dict[str, torch.Tensor], ranges: dict[str, Any]) -> None:
        specs = graph["signature"]["input_specs"]
        if len(specs) != len(graph["inputs"]):
            raise Unsupported("the graph's inputs and its signature disagree")
        for index, spec in enumerate(specs):
            ((kind, body),) = spec.items()
            if kind == "user_input":
                if "as_tensor" not in body["arg"]:
                    raise Unsupported(f"a user input of kind {next(iter(body['arg']))}")
                name = body["arg"]["as_tensor"]["name"]
                self._inputs.append((self._slot(name), self._input_dims(graph, name, ranges)))
                continue
            fqn = {
                "parameter": "parameter_name",
                "buffer": "buffer_name",
                "tensor_constant": "tensor_constant_name",
            }.get(kind)
            if fqn is None:
                raise Unsupported(f"an input of kind {kind}")
            if body[fqn] not in tensors:
                raise Unsupported(f"{kind} '{body[fqn]}' has no stored tensor")
            attribute = f"_t{index}"
            self.register_buffer(attribute, tensors[body[fqn]])
            self._state.append((self._slot(body["arg"]["name"]), attribute))

    @staticmethod
    def _input_dims(graph: dict[str, Any], name: str, ranges: dict[str, Any]) -> list[int | tuple[int, int] | None]:
        """What each dimension of an input may be: a fixed size, a (min, max) range, or anything."""
        dims: list[int | tuple[int, int] | None] = []
        for size in graph["tensor_values"][name]["sizes"]:
            if "as_int" in size:
                dims.append(int(size["as_int"]))
                continue
            symbol = _SYMBOL.fullmatch(size.get("as_expr", {}).get("expr_str", ""))
            bounds = ranges.get(symbol.group(1)) if symbol else None
            dims.append(
                (int(bounds["min_val"]), int(bounds["max_val"]))
                if bounds and all(isinstance(bounds.get(k), int) for k in ("min_val", "max_val"))
                else None
            )
        return dims

    def _value(self, arg: dict[str, Any]) -> Any:
        """A compiled argument: ('ref', slot), ('list', [compiled...]) or ('const', value)."""
        ((kind, value),) = arg.items()
        if kind == "as_tensor":
            return ("ref", self._slots_of(value["name"]))
        if kind in ("as_sym_int", "as_sym_float", "as_sym_bool"):
            ((sym_kind, sym),) = value.items()
            return ("ref", self._slots_of(sym)) if sym_kind == "as_name" else ("const", sym)
        if kind == "as_tensors":
            return ("list", [("ref", self._slots_of(t["name"])) for t in value])
        if kind == "as_optional_tensors":
            return (
                "list",
                [("const", None) if "as_none" in t else ("ref", self._slots_of(t["as_tensor"]["name"])) for t in value],
            )
        if kind in ("as_sym_ints", "as_sym_floats", "as_sym_bools"):
            return ("list", [self._value({kind.removesuffix("s"): item}) for item in value])
        if kind == "as_none":
            return ("const", None)
        if kind in ("as_int", "as_float", "as_bool", "as_string"):
            return ("const", value)
        if kind in ("as_ints", "as_floats", "as_bools", "as_strings"):
            return ("const", list(value))
        if kind == "as_scalar_type":
            return ("const", DTYPES[value])
        if kind == "as_layout":
            return ("const", LAYOUTS[value])
        if kind == "as_memory_format":
            return ("const", MEMORY_FORMATS[value])
        if kind == "as_device":
            return ("const", torch.device(value["type"], value.get("index")))
        if kind == "as_complex":
            return ("const", complex(value["real"], value["imag"]))
        raise Unsupported(f"an argument of kind {kind}")

    def _slots_of(self, name: str) -> int:
        if name not in self._slots:
            raise Unsupported(f"'{name}' is used before it is computed")
        return self._slots[name]

    def _compile_node(self, node: dict[str, Any]):
        target = node["target"]
        sym_op = SYM_OPS.get(target)
        if sym_op is not None:
            args = [self._value(i["arg"]) for i in node["inputs"]]
            # size arithmetic takes numbers only: no device, dtype or string can be laundered through it
            if not all(isinstance(c, int | float | bool) for c in _flat_constants(args)):
                raise Unsupported(f"{target} takes a constant that is not a number")
            store, output = self._compile_outputs(target, node["outputs"])
            return _Step(sym_op, args, {}, store, target, output)
        match = _ATEN_TARGET.fullmatch(target)
        packet = getattr(torch.ops.aten, match.group(1), None) if match else None
        op = getattr(packet, match.group(2), None) if packet is not None else None
        if not isinstance(op, torch._ops.OpOverload):
            raise Unsupported(f"operator {target}")
        try:
            operators.check_overload(op)
        except operators.Refused as why:
            raise Unsupported(str(why)) from None
        schema = {argument.name: argument for argument in op._schema.arguments}
        args, kwargs = [], {}
        written: list[tuple[str, Any]] = []  # (argument name, compiled value) of what the op writes to
        views_state = False
        constants: dict[str, Any] = {}
        references: set[str] = set()
        for named in node["inputs"]:
            name, value = named["name"], self._value(named["arg"])
            try:
                operators.check_argument(op, name, _constants(value))
            except operators.Refused as why:
                raise Unsupported(str(why)) from None
            if value[0] == "const":
                constants[name] = value[1]
            else:
                references.add(name)
            alias = schema[name].alias_info
            if alias is not None and alias.is_write and _refs([value]):
                written.append((name, value))
            views_state = views_state or any(slot in self._aliases_state for slot in _refs([value]))
            # kind 1 (or unset, in older files) is positional, kind 2 keyword (schema.ArgumentKind)
            if named.get("kind") == 2:
                kwargs[name] = value
            elif kwargs:
                raise Unsupported(f"{target}: a positional argument after a keyword one")
            else:
                args.append(value)
        try:
            operators.check_call(op, constants, references)
        except operators.Refused as why:
            raise Unsupported(str(why)) from None
        for name, value in written:
            if any(slot in self._aliases_state for slot in _refs([value])):
                raise Unsupported(
                    f"{target} writes to the program's own weights, buffers or constants ('{name}'): "
                    "a model file may not change its state from one request to the next"
                )
        store, output = self._compile_outputs(target, node["outputs"])
        returns_view = any(r.alias_info is not None for r in op._schema.returns) or match.group(1) in _UNMARKED_VIEWS
        if views_state and returns_view:  # a view of state is state: writes through it are refused too
            self._aliases_state.update(self._output_slots(node["outputs"]))
        run = operators.runnable(op)
        if written:
            positional = [named["name"] for named in node["inputs"][: len(args)]]
            run = _guard_writes(
                run,
                target,
                [positional.index(n) for n, _ in written if n in positional],
                [n for n, _ in written if n in kwargs],
                self,
            )
        return _Step(run, args, kwargs, store, target, output)

    def _output_slots(self, outputs: list[dict[str, Any]]) -> list[int]:
        slots = []
        for out in outputs:
            ((kind, value),) = out.items()
            if kind == "as_tensor":
                slots.append(self._slots[value["name"]])
            elif kind == "as_tensors":
                slots.extend(self._slots[t["name"]] for t in value)
        return slots

    def _state_storages(self) -> frozenset[int]:
        """Where the program's weights, buffers and constants live (cached until .to() moves them)."""
        if self._storages is None:
            self._storages = frozenset(
                ptr
                for buffer in self._buffers.values()
                if buffer is not None and (ptr := buffer.untyped_storage().data_ptr())
            )
        return self._storages

    def _apply(self, fn, recurse=True):
        self._storages = None  # .to(device) and .to(memory_format) give the state new storage
        return super()._apply(fn, recurse)

    def _compile_outputs(
        self, target: str, outputs: list[dict[str, Any]]
    ) -> tuple[Callable[[list[Any], Any], None], int | None]:
        def name_of(out: dict[str, Any]) -> str | None:
            ((kind, value),) = out.items()
            if kind == "as_tensor":
                return value["name"]
            if kind in ("as_sym_int", "as_sym_float", "as_sym_bool") and "as_name" in value:
                return value["as_name"]
            if kind == "as_none":
                return None
            raise Unsupported(f"{target}: an output of kind {kind}")

        if len(outputs) == 1 and "as_tensors" in outputs[0]:
            slots = [self._slot(t["name"]) for t in outputs[0]["as_tensors"]]
        elif len(outputs) == 1:
            name = name_of(outputs[0])
            if name is None:
                return _discard, None
            slot = self._slot(name)
            return _store_in(slot), (slot if "as_tensor" in outputs[0] else None)
        else:
            slots = [None if (name := name_of(out)) is None else self._slot(name) for out in outputs]
        if not slots:
            return _discard, None
        pairs = [(index, slot) for index, slot in enumerate(slots) if slot is not None]

        def store_many(env: list[Any], result: Any) -> None:
            for index, slot in pairs:
                env[slot] = result[index]

        return store_many, None

    def _setup_outputs(self, graph: dict[str, Any], in_spec: str, out_spec: str) -> None:
        for spec in graph["signature"]["output_specs"]:
            kind = next(iter(spec))
            if kind != "user_output":
                raise Unsupported(f"an output of kind {kind} (the program mutates state)")
        self._outputs = [self._value(out) for out in graph["outputs"]]
        version, spec = json.loads(in_spec)
        args, kwargs = spec["children_spec"] if spec["type"] == "builtins.tuple" else (None, None)
        if version != 1 or args is None or kwargs["children_spec"]:
            raise Unsupported("the program takes keyword or nested inputs")
        container, count = _tree_leaves(json.dumps([version, args]), "the input")
        if container != "tuple" or count != len(self._inputs):
            raise Unsupported("the program's inputs are not a flat list of tensors")
        self._container, leaves = _tree_leaves(out_spec, "the output")
        if leaves != len(self._outputs):
            raise Unsupported("the output spec and the graph's outputs disagree")

    # -------------------------------------------------------------------------------------------- fusion

    def fuse_conv_relu(self, enable: bool = True) -> int:
        """Run each 2-D convolution whose one use is a ReLU as a single oneDNN call with the ReLU as its
        post-op (``mkldnn::_convolution_pointwise``, what torch.compile's CPU backend emits): one pass over
        the activation instead of two (docs/serving.md, "How a model runs"). CPU only: serving/tuning.py
        checks the outputs on a batch before keeping it. ``enable=False`` restores the graph as exported.
        Returns how many pairs were fused."""
        fused_op = getattr(torch.ops.mkldnn, "_convolution_pointwise", None) if hasattr(torch.ops, "mkldnn") else None
        steps = self._graph_steps
        if not enable or fused_op is None or not torch.backends.mkldnn.is_available():
            self._plan, self.fused = self._schedule(steps), 0
            return 0
        uses: dict[int, list[int]] = {}
        for index, step in enumerate(steps):
            for slot in _refs([*step.args, *step.kwargs.values()]):
                uses.setdefault(slot, []).append(index)
        kept = set(_refs(self._outputs))
        plan: list[_Step] = []
        dropped: set[int] = set()
        for index, step in enumerate(steps):
            if index in dropped:
                continue
            conv = _conv2d_arguments(step)
            readers = uses.get(step.output, []) if conv else []
            relu = steps[readers[0]] if len(readers) == 1 else None
            if (
                conv is None
                or step.output in kept
                or relu is None
                or relu.kwargs
                or relu.output is None
                or (relu.target not in RELUS or relu.args != [("ref", step.output)])
            ):
                plan.append(step)
                continue
            x, w, b, stride, padding, dilation, groups = conv
            plan.append(
                _Step(
                    fused_op.default,
                    [x, w, b, padding, stride, dilation, groups, ("const", "relu"), ("const", []), ("const", None)],
                    {},
                    relu.store,
                    "mkldnn._convolution_pointwise(relu)",
                    relu.output,
                )
            )
            dropped.add(readers[0])
        self._plan, self.fused = self._schedule(plan), len(dropped)
        return self.fused

    # -------------------------------------------------------------------------------------------- run

    def forward(self, *inputs: torch.Tensor) -> Any:
        if len(inputs) != len(self._inputs):
            raise TypeError(f"the program takes {len(self._inputs)} tensor(s), got {len(inputs)}")
        env: list[Any] = [None] * self._size
        for (slot, dims), tensor in zip(self._inputs, inputs, strict=True):
            _check_dims(tensor, dims, slot)
            env[slot] = tensor
        buffers = self._buffers
        for slot, attribute in self._state:
            env[slot] = buffers[attribute]
        for op, args, kwargs, store, free in self._plan:
            store(env, op(*[_resolve(a, env) for a in args], **{k: _resolve(v, env) for k, v in kwargs.items()}))
            for slot in free:
                env[slot] = None
        results = [_resolve(out, env) for out in self._outputs]
        if self._container is None:
            return results[0]
        return tuple(results) if self._container == "tuple" else results


_UNMARKED_VIEWS = frozenset({"_unsafe_view"})
"""Operators whose result shares its input's storage although their schema does not say so."""


def _constants(compiled: tuple[str, Any]) -> Any:
    """The constant values in a compiled argument (references to computed values are left out)."""
    kind, value = compiled
    if kind == "const":
        return value
    if kind == "list":
        return [item for item in (_constants(entry) for entry in value) if item is not None]
    return None


def _flat_constants(compiled: list[tuple[str, Any]]) -> list[Any]:
    """Every constant in a list of compiled arguments, lists flattened."""
    found = []
    for kind, value in compiled:
        if kind == "const":
            found.extend(value if isinstance(value, list) else [value])
        elif kind == "list":
            found.extend(_flat_constants(value))
    return found


def _guard_writes(
    op: Callable[..., Any], target: str, positions: list[int], names: list[str], program: ArchiveProgram
) -> Callable[..., Any]:
    """``op``, refusing at run time to write into the program's state: what the load-time alias check
    cannot see (storage shared through an operator that does not declare it) still cannot change it."""

    def guarded(*args: Any, **kwargs: Any) -> Any:
        state = program._state_storages()
        for value in [*(args[i] for i in positions), *(kwargs[n] for n in names if n in kwargs)]:
            for tensor in value if isinstance(value, list | tuple) else (value,):
                if isinstance(tensor, torch.Tensor) and tensor.untyped_storage().data_ptr() in state:
                    raise RuntimeError(
                        f"{target} writes to the program's own weights, buffers or constants: "
                        "a model file may not change its state"
                    )
        return op(*args, **kwargs)

    return guarded


def _resolve(compiled: tuple[str, Any], env: list[Any]) -> Any:
    kind, value = compiled
    if kind == "ref":
        return env[value]
    if kind == "const":
        return value
    return [_resolve(item, env) for item in value]


def _refs(compiled: list[tuple[str, Any]]) -> list[int]:
    """The slots a list of compiled arguments reads."""
    slots = []
    for kind, value in compiled:
        if kind == "ref":
            slots.append(value)
        elif kind == "list":
            slots.extend(_refs(value))
    return slots


RELUS = ("torch.ops.aten.relu.default", "torch.ops.aten.relu_.default")


def _conv2d_arguments(step: _Step) -> tuple[Any, ...] | None:
    """(x, w, b, stride, padding, dilation, groups) of an ``aten.conv2d`` call with constant geometry."""
    if step.target != "torch.ops.aten.conv2d.default" or step.kwargs or not 2 <= len(step.args) <= 7:
        return None
    x, w, b, *geometry = [*step.args, *[("const", None)] * (7 - len(step.args))]
    defaults = ([1, 1], [0, 0], [1, 1])
    pairs = []
    for (kind, value), default in zip(geometry[:3], defaults, strict=True):
        if kind != "const":
            return None
        value = default if value is None else value
        if not isinstance(value, list) or not 1 <= len(value) <= 2 or not all(isinstance(v, int) for v in value):
            return None
        pairs.append(("const", value * 2 if len(value) == 1 else value))
    kind, groups = geometry[3]
    if kind != "const" or not isinstance(groups, int | None):
        return None
    return x, w, b, *pairs, ("const", 1 if groups is None else groups)


def _store_in(slot: int) -> Callable[[list[Any], Any], None]:
    def store(env: list[Any], result: Any) -> None:
        env[slot] = result

    return store


def _discard(env: list[Any], result: Any) -> None:
    pass


def _check_dims(tensor: torch.Tensor, dims: list[int | tuple[int, int] | None], slot: int) -> None:
    """What ExportedProgram.module() checks before running: rank, fixed sizes, dynamic sizes' ranges."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"input {slot} must be a tensor, got {type(tensor).__name__}")
    if tensor.dim() != len(dims):
        raise ValueError(f"expected a tensor of rank {len(dims)}, got shape {list(tensor.shape)}")
    for axis, (size, dim) in enumerate(zip(tensor.shape, dims, strict=True)):
        if isinstance(dim, int) and size != dim:
            raise ValueError(f"dimension {axis} must be {dim}, got shape {list(tensor.shape)}")
        if isinstance(dim, tuple) and not dim[0] <= size <= dim[1]:
            raise ValueError(f"dimension {axis} must lie in [{dim[0]}, {dim[1]}], got shape {list(tensor.shape)}")
