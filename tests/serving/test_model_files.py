"""A model file is data: hostile ``.pt2`` files built from a real trained artifact are refused, with no side
effect.

Each file here is what an attacker who can put a model in the store (or on S3 for ``make deploy``) would
write: the real artifact's archive with its graph edited, and the manifest's checksum updated to match.
The security review's proofs were: a pre-2.7 layout whose pickle ran a command during the load, and a graph
calling ``aten.from_file`` that wrote a file and read the management token into the logits. Every test
below fails on the reader as it was (commit 4c2cb96), which ran both.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from serving.artifact import ArtifactError, load_artifact, sha256_file
from serving.program import ArchiveProgram

UINT8, FLOAT32 = 1, 7  # torch/_export/serde/schema.py ScalarType codes


def t(name: str) -> dict[str, Any]:
    return {"as_tensor": {"name": name}}


def node(target: str, inputs: list[tuple[str, dict[str, Any], int]], output: str | None) -> dict[str, Any]:
    """A serialized graph node as torch.export.save writes it (kind 1 positional, 2 keyword)."""
    return {
        "target": f"torch.ops.aten.{target}",
        "inputs": [{"name": n, "arg": a, "kind": k} for n, a, k in inputs],
        "outputs": [t(output)] if output else [],
        "metadata": {},
        "is_hop_single_tensor_return": None,
    }


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {info.filename: zf.read(info) for info in zf.infolist()}


def _write(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def _seal(model_dir: Path) -> Path:
    """Update the manifest's checksum to the tampered file, as an attacker would."""
    manifest = json.loads((model_dir / "manifest.json").read_text())
    manifest["model"]["sha256"] = sha256_file(model_dir / "model.pt2")
    (model_dir / "manifest.json").write_text(json.dumps(manifest))
    return model_dir


def hostile(model_dir: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """``model_dir`` with its graph edited by ``edit(graph)`` and the checksum sealed."""
    path = model_dir / "model.pt2"
    members = _members(path)
    name = next(n for n in members if n.endswith("/models/model.json"))
    program = json.loads(members[name])
    edit(program["graph_module"]["graph"])
    members[name] = json.dumps(program).encode()
    _write(path, members)
    return _seal(model_dir)


def output_plus(graph: dict[str, Any], nodes: list[dict[str, Any]], extra: str) -> None:
    """Run ``nodes`` first and add their tensor ``extra`` to the model's output (the logits carry it out)."""
    out = graph["outputs"][0]["as_tensor"]["name"]
    graph["nodes"][:0] = nodes
    graph["nodes"].append(node("add.Tensor", [("self", t(out), 1), ("other", t(extra), 1)], "leaked"))
    graph["outputs"] = [t("leaked")]


def refused_after_the_first_node(model_dir: Path, nodes: list[dict[str, Any]], message: str) -> None:
    """``nodes`` inserted after the graph's first node, each reading its output where it names "x": refused."""

    def edit(graph: dict[str, Any]) -> None:
        first = graph["nodes"][0]["outputs"][0]["as_tensor"]["name"]
        for n in nodes:
            for named in n["inputs"]:
                if named["arg"] == t("x"):
                    named["arg"] = t(first)
        graph["nodes"][1:1] = nodes

    with pytest.raises(ArtifactError, match=message):
        load_artifact(hostile(model_dir, edit))


def test_a_pre_2_7_layout_with_a_pickle_is_refused_and_the_pickle_never_runs(
    trained_model: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.makedirs, (str(marker),))  # what the review's proof did with `id`, harmlessly

    members = _members(trained_model / "model.pt2")
    program = next(data for name, data in members.items() if name.endswith("/models/model.json"))
    buffer = io.BytesIO()
    torch.save({"weight": Payload()}, buffer)
    legacy = {
        "version": b"8.0",
        "serialized_exported_program.json": program,
        "serialized_state_dict.pt": buffer.getvalue(),
        "serialized_constants.pt": buffer.getvalue(),
        "serialized_example_inputs.pt": buffer.getvalue(),
    }
    _write(trained_model / "model.pt2", legacy)
    with pytest.raises(
        ArtifactError,
        match=r"is refused: it is in torch\.export's pre-2\.7 layout, whose weights "
        r"are pickles: re-export it",
    ):
        load_artifact(_seal(trained_model))
    assert not marker.exists()


def test_a_graph_reading_a_file_into_its_logits_is_refused(trained_model: Path, tmp_path: Path) -> None:
    secret = tmp_path / "management-token"
    secret.write_bytes(b"0123456789")

    def edit(graph: dict[str, Any]) -> None:
        output_plus(
            graph,
            [
                node(
                    "from_file.default",
                    [
                        ("filename", {"as_string": str(secret)}, 1),
                        ("shared", {"as_bool": False}, 1),
                        ("size", {"as_int": 10}, 1),
                        ("dtype", {"as_scalar_type": UINT8}, 2),
                    ],
                    "raw",
                ),
                node("_to_copy.default", [("self", t("raw"), 1), ("dtype", {"as_scalar_type": FLOAT32}, 2)], "secret"),
            ],
            "secret",
        )

    with pytest.raises(ArtifactError, match=r"operator aten\.from_file is not one a model file may call"):
        load_artifact(hostile(trained_model, edit))


def test_a_graph_writing_a_file_is_refused_and_the_file_is_untouched(trained_model: Path, tmp_path: Path) -> None:
    target = tmp_path / "sitecustomize.py"  # in site-packages this would be code execution at the next start
    target.write_bytes(b"# clean\n")

    def edit(graph: dict[str, Any]) -> None:
        graph["nodes"][:0] = [
            node(
                "from_file.default",
                [
                    ("filename", {"as_string": str(target)}, 1),
                    ("shared", {"as_bool": True}, 1),
                    ("size", {"as_int": 8}, 1),
                    ("dtype", {"as_scalar_type": UINT8}, 2),
                ],
                "mapped",
            ),
            node(
                "full.default",
                [
                    ("size", {"as_ints": [8]}, 1),
                    ("fill_value", {"as_int": 65}, 1),
                    ("dtype", {"as_scalar_type": UINT8}, 2),
                ],
                "payload",
            ),
            node("copy_.default", [("self", t("mapped"), 1), ("src", t("payload"), 1)], "written"),
        ]

    with pytest.raises(ArtifactError, match=r"aten\.from_file is not one a model file may call"):
        load_artifact(hostile(trained_model, edit))
    assert target.read_bytes() == b"# clean\n"


@pytest.mark.slow
def test_the_server_refuses_a_hostile_model_in_one_line_and_touches_nothing(
    trained_model: Path, tmp_path: Path, start_server
) -> None:
    target = tmp_path / "sitecustomize.py"
    target.write_bytes(b"# clean\n")

    def edit(graph: dict[str, Any]) -> None:
        output_plus(
            graph,
            [
                node(
                    "from_file.default",
                    [
                        ("filename", {"as_string": str(target)}, 1),
                        ("shared", {"as_bool": True}, 1),
                        ("size", {"as_int": 8}, 1),
                        ("dtype", {"as_scalar_type": UINT8}, 2),
                    ],
                    "mapped",
                ),
                node("fill_.Scalar", [("self", t("mapped"), 1), ("value", {"as_int": 65}, 1)], "written"),
                node("_to_copy.default", [("self", t("written"), 1), ("dtype", {"as_scalar_type": FLOAT32}, 2)], "sum"),
            ],
            "sum",
        )

    server = start_server(hostile(trained_model, edit))
    assert server.wait_exit(timeout=60) == 1
    output = server.output()
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1
    assert "is refused: operator aten.from_file is not one a model file may call" in errors[0]
    assert target.read_bytes() == b"# clean\n"


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        # storage: point the input at the weights, or grow a tensor into memory nobody wrote
        (
            [node("set_.source_Tensor", [("self", t("x"), 1), ("source", t("x"), 1)], "aliased")],
            r"aten\.set_ is not one",
        ),
        (
            [node("resize_.default", [("self", t("x"), 1), ("size", {"as_ints": [1 << 20]}, 1)], "grown")],
            r"aten\.resize_ is not one",
        ),
        (
            [node("resize_as_.default", [("self", t("x"), 1), ("the_template", t("x"), 1)], "grown")],
            r"aten\.resize_as_ is not one",
        ),
        # device management
        ([node("_pin_memory.default", [("self", t("x"), 1)], "pinned")], r"aten\._pin_memory is not one"),
        ([node("pin_memory.default", [("self", t("x"), 1)], "pinned")], r"aten\.pin_memory is not one"),
        (
            [node("_cufft_clear_plan_cache.default", [("device_index", {"as_int": 0}, 1)], None)],
            r"aten\._cufft_clear_plan_cache is not one",
        ),
        # a string where the schema takes none, or one the allow-list does not name
        (
            [node("add.Tensor", [("self", t("x"), 1), ("other", {"as_string": "/etc/passwd"}, 1)], "y")],
            r"aten\.add\.Tensor: 'other' may not be '/etc/passwd'",
        ),
        (
            [node("gelu.default", [("self", t("x"), 1), ("approximate", {"as_string": "/etc/passwd"}, 2)], "y")],
            r"aten\.gelu\.default: 'approximate' may not be '/etc/passwd'",
        ),
        (
            [node("add.Tensor", [("self", t("x"), 1), ("other", t("x"), 1), ("path", {"as_int": 1}, 2)], "y")],
            r"aten\.add\.Tensor has no argument 'path'",
        ),
        # a device that is not a CPU or a GPU
        (
            [node("_to_copy.default", [("self", t("x"), 1), ("device", {"as_device": {"type": "meta"}}, 2)], "y")],
            r"'device' names device meta, not cpu or cuda",
        ),
    ],
)
def test_file_storage_and_device_operators_and_stray_strings_are_refused(
    trained_model: Path, nodes: list[dict[str, Any]], message: str
) -> None:
    refused_after_the_first_node(trained_model, nodes, message)


def _first_parameter(graph: dict[str, Any]) -> str:
    return graph["inputs"][0]["as_tensor"]["name"]  # parameters come first, then the user's input


@pytest.mark.parametrize("through", ["directly", "a view", "an unmarked view"])
def test_a_graph_writing_into_its_own_weights_is_refused(trained_model: Path, through: str) -> None:
    """A program that records a request into its weights could return it in the answer to another client."""

    def edit(graph: dict[str, Any]) -> None:
        weight = _first_parameter(graph)
        view = {
            "directly": [],
            "a view": [node("view.default", [("self", t(weight), 1), ("size", {"as_ints": [-1]}, 1)], "w")],
            "an unmarked view": [
                node("_unsafe_view.default", [("self", t(weight), 1), ("size", {"as_ints": [-1]}, 1)], "w")
            ],
        }[through]
        target = weight if through == "directly" else "w"
        graph["nodes"][:0] = [*view, node("zero_.default", [("self", t(target), 1)], "wiped")]

    with pytest.raises(ArtifactError, match=r"zero_\.default writes to the program's own weights"):
        load_artifact(hostile(trained_model, edit))


def test_a_write_into_state_that_the_load_time_check_misses_fails_at_run_time(
    trained_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run-time guard: storage shared through an operator the alias check does not know about."""
    import serving.program

    def edit(graph: dict[str, Any]) -> None:
        weight = _first_parameter(graph)
        graph["nodes"][:0] = [
            node("_unsafe_view.default", [("self", t(weight), 1), ("size", {"as_ints": [-1]}, 1)], "w"),
            node("zero_.default", [("self", t("w"), 1)], "wiped"),
        ]

    monkeypatch.setattr(serving.program, "_UNMARKED_VIEWS", frozenset())  # as if _unsafe_view were unknown
    program = ArchiveProgram.load(hostile(trained_model, edit) / "model.pt2")
    before = [b.clone() for b in program.buffers()]
    with pytest.raises(RuntimeError, match="writes to the program's own weights, buffers or constants"):
        program(torch.zeros(1, 1, 8, 8))
    assert all(torch.equal(a, b) for a, b in zip(before, program.buffers(), strict=True))


def test_memory_nobody_wrote_is_handed_out_zeroed(trained_model: Path) -> None:
    def edit(graph: dict[str, Any]) -> None:
        output_plus(
            graph,
            [
                node(
                    "empty.memory_format",
                    [("size", {"as_ints": [10]}, 1), ("dtype", {"as_scalar_type": FLOAT32}, 2)],
                    "heap",
                )
            ],
            "heap",
        )

    plain = load_artifact(trained_model).module
    tampered = load_artifact(hostile(trained_model, edit)).module
    x = torch.rand(4, 1, 8, 8) * 255
    with torch.inference_mode():
        assert torch.equal(tampered(x), plain(x))  # + zeros, whatever was on the heap


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("extra/payload.py", r"it holds 'extra/payload\.py', which is not part of a plain torch\.export program"),
        ("data/aotinductor/model/model.so", r"it holds compiled code \(data/aotinductor/model/model\.so\)"),
        ("data/constants/custom_obj_0", r"it holds 'data/constants/custom_obj_0'"),
        ("data/weights/weight_0.pt", None),  # a payload file name: read only if the config names it, never unpickled
    ],
)
def test_members_a_plain_program_does_not_have_are_refused(
    trained_model: Path, extra: str, message: str | None
) -> None:
    path = trained_model / "model.pt2"
    members = _members(path)
    root = next(iter(members)).split("/", 1)[0]
    members[f"{root}/{extra}"] = b"\x80\x04N."  # a pickle of None
    _write(path, members)
    if message is None:
        assert load_artifact(_seal(trained_model)).labels
        return
    with pytest.raises(ArtifactError, match=message):
        load_artifact(_seal(trained_model))


def test_a_second_top_level_entry_is_refused(trained_model: Path) -> None:
    path = trained_model / "model.pt2"
    members = _members(path)
    members["serialized_exported_program.json"] = b"{}"
    _write(path, members)
    with pytest.raises(ArtifactError, match=r"pre-2\.7 layout"):
        load_artifact(_seal(trained_model))
    del members["serialized_exported_program.json"]
    members["other/models/model.json"] = b"{}"
    _write(path, members)
    with pytest.raises(ArtifactError, match="expected one top-level folder in the archive, found 2"):
        load_artifact(_seal(trained_model))


def test_every_operator_on_the_allow_list_exists_and_computes_on_tensors() -> None:
    from serving import operators

    missing = [
        name
        for name in operators.ALLOWED
        if not isinstance(getattr(torch.ops.aten, name, None), torch._ops.OpOverloadPacket)
    ]
    assert missing == []
    for name in operators.ALLOWED:
        for packet in filter(None, (getattr(torch.ops.aten, name, None), getattr(torch.ops.aten, name + "_", None))):
            for overload in packet.overloads():
                op = getattr(packet, overload)
                try:
                    operators.check_overload(op)
                except operators.Refused:
                    continue
                types = {str(a.type) for a in op._schema.arguments}
                assert not types & {"Storage", "Optional[Storage]", "Stream", "List[str]"}, op
                if types & {"str", "Optional[str]"}:
                    assert any(
                        (operators._base(name), a.name) in operators.STRING_ARGUMENTS
                        for a in op._schema.arguments
                        if str(a.type) in ("str", "Optional[str]")
                    ), op


# The findings of a second, adversarial review (each built the same way; each passed the reader before).

_CRASH = r"""
import json, sys, torch
from pathlib import Path
from serving.artifact import ArtifactError, load_artifact
try:
    module = load_artifact(Path(sys.argv[1])).module
except ArtifactError as exc:
    print("refused:", exc)
    sys.exit(0)
try:
    module(torch.zeros(1, 1, 8, 8) + float(sys.argv[2]))
except RuntimeError as exc:
    print("error:", exc)
    sys.exit(0)
print("ran")
"""


def _outcome(model_dir: Path, pixel: float = 0.0) -> str:
    """What loading and running ``model_dir`` in a fresh process does: a signal shows as 'killed by ...'."""
    import signal
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _CRASH, str(model_dir), str(pixel)],
        cwd=Path(__file__).parents[2],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode < 0:
        return f"killed by {signal.Signals(-done.returncode).name}"
    lines = done.stdout.strip().splitlines()
    return lines[-1] if lines else f"exit {done.returncode}: {done.stderr[-300:]}"


def test_repeat_interleave_with_an_output_size_is_refused(trained_model: Path) -> None:
    """ATen trusts output_size and skips its negative-repeats check: the review's model wrote past a two-element
    buffer (SIGSEGV) on the request whose largest pixel was 123."""

    def edit(graph: dict[str, Any]) -> None:
        graph["nodes"][:0] = [
            node(
                "full.default",
                [("size", {"as_ints": [2]}, 1), ("fill_value", {"as_int": 0}, 1), ("dtype", {"as_scalar_type": 5}, 2)],
                "zero",
            ),
            node("add.Tensor", [("self", t("zero"), 1), ("other", {"as_int": 1000000}, 1)], "big"),
            node("mul.Tensor", [("self", t("big"), 1), ("other", {"as_int": -1}, 1)], "negative"),
            node("cat.default", [("tensors", {"as_tensors": [{"name": "big"}, {"name": "negative"}]}, 1)], "r4"),
            node(
                "slice.Tensor",
                [
                    ("self", t("r4"), 1),
                    ("dim", {"as_int": 0}, 1),
                    ("start", {"as_int": 1}, 1),
                    ("end", {"as_int": 3}, 1),
                ],
                "repeats",
            ),  # [1e6, -1e6]: sums to 0
            node("repeat_interleave.Tensor", [("repeats", t("repeats"), 1), ("output_size", {"as_int": 0}, 2)], "ri"),
        ]

    assert _outcome(hostile(trained_model, edit)) == (
        "refused: " + str(trained_model / "model.pt2") + " is refused: aten.repeat_interleave.Tensor may not be given "
        "an output_size: ATen trusts it without checking the repeats (a model file may only hold a plain "
        "torch.export program; see docs/serving.md, 'Threat model')"
    )


@pytest.mark.parametrize("operand", ["tensor", "scalar"])
def test_integer_division_of_the_minimum_by_minus_one_is_an_error_not_a_crash(
    trained_model: Path, operand: str
) -> None:
    def edit(graph: dict[str, Any]) -> None:
        divisor = {"as_int": -1} if operand == "scalar" else t("minus_one")
        output_plus(
            graph,
            [
                node(
                    "full.default",
                    [
                        ("size", {"as_ints": [10]}, 1),
                        ("fill_value", {"as_int": -(2**63)}, 1),
                        ("dtype", {"as_scalar_type": 5}, 2),
                    ],
                    "smallest",
                ),
                node(
                    "full.default",
                    [
                        ("size", {"as_ints": [10]}, 1),
                        ("fill_value", {"as_int": -1}, 1),
                        ("dtype", {"as_scalar_type": 5}, 2),
                    ],
                    "minus_one",
                ),
                node(
                    "div.Scalar_mode" if operand == "scalar" else "div.Tensor_mode",
                    [("self", t("smallest"), 1), ("other", divisor, 1), ("rounding_mode", {"as_string": "trunc"}, 2)],
                    "quotient",
                ),
                node("_to_copy.default", [("self", t("quotient"), 1), ("dtype", {"as_scalar_type": FLOAT32}, 2)], "q"),
            ],
            "q",
        )

    # the forward raises (the server answers 500, or refuses the model at its warm-up) and the process lives
    assert _outcome(hostile(trained_model, edit)) == "error: integer division of the type's minimum by -1 overflows"


@pytest.mark.parametrize(
    ("target", "inputs", "message"),
    [
        (
            "batch_norm.default",
            lambda rm, rv: [
                ("input", t("flat"), 1),
                ("weight", {"as_none": ()}, 1),
                ("bias", {"as_none": ()}, 1),
                ("running_mean", t(rm), 1),
                ("running_var", t(rv), 1),
                ("training", {"as_bool": True}, 1),
                ("momentum", {"as_float": 1.0}, 1),
                ("eps", {"as_float": 1e-5}, 1),
                ("cudnn_enabled", {"as_bool": False}, 1),
            ],
            r"batch_norm\.default must have training=False",
        ),
        (
            "instance_norm.default",
            lambda rm, rv: [
                ("input", t("flat3"), 1),
                ("weight", {"as_none": ()}, 1),
                ("bias", {"as_none": ()}, 1),
                ("running_mean", t(rm), 1),
                ("running_var", t(rv), 1),
                ("use_input_stats", {"as_bool": True}, 1),
                ("momentum", {"as_float": 1.0}, 1),
                ("eps", {"as_float": 1e-5}, 1),
                ("cudnn_enabled", {"as_bool": False}, 1),
            ],
            r"instance_norm\.default with running statistics must have use_input_stats=False",
        ),
    ],
)
def test_a_norm_that_would_update_its_running_statistics_is_refused(
    trained_model: Path, target: str, inputs, message: str
) -> None:
    """The review recorded each request into batch_norm's running_mean (a write its schema does not declare)
    and returned it in the answer to the next client."""

    def edit(graph: dict[str, Any]) -> None:
        buffers = [
            i["as_tensor"]["name"]
            for i in graph["inputs"]
            if "running_mean" in i["as_tensor"]["name"] or "running_var" in i["as_tensor"]["name"]
        ]
        rm, rv = buffers[0], buffers[1]
        user = graph["inputs"][-1]["as_tensor"]["name"]
        graph["nodes"][:0] = [
            node("view.default", [("self", t(user), 1), ("size", {"as_ints": [-1, 64]}, 1)], "flat"),
            node("unsqueeze.default", [("self", t("flat"), 1), ("dim", {"as_int": 2}, 1)], "flat3"),
            node(target, inputs(rm, rv), "recorded"),
        ]

    with pytest.raises(ArtifactError, match=message):
        load_artifact(hostile(trained_model, edit))


def test_a_strided_allocation_is_zeroed_in_its_gaps_too(trained_model: Path) -> None:
    def edit(graph: dict[str, Any]) -> None:
        output_plus(
            graph,
            [
                node(
                    "empty_strided.default",
                    [
                        ("size", {"as_ints": [2]}, 1),
                        ("stride", {"as_ints": [9]}, 1),
                        ("dtype", {"as_scalar_type": FLOAT32}, 2),
                    ],
                    "gappy",
                ),
                node(
                    "as_strided.default",
                    [("self", t("gappy"), 1), ("size", {"as_ints": [10]}, 1), ("stride", {"as_ints": [1]}, 1)],
                    "heap",
                ),
            ],
            "heap",
        )

    plain = load_artifact(trained_model).module
    x = torch.rand(4, 1, 8, 8) * 255
    with torch.inference_mode():
        for _ in range(3):  # whatever the heap held from the request before
            assert torch.equal(load_artifact(hostile(trained_model, edit)).module(x), plain(x))


def test_a_device_laundered_through_size_arithmetic_is_refused(trained_model: Path) -> None:
    def edit(graph: dict[str, Any]) -> None:
        meta = {"as_device": {"type": "meta"}}
        graph["nodes"][:0] = [
            {
                "target": "torch.sym_ite",
                "inputs": [
                    {"name": "a", "arg": {"as_bool": True}, "kind": 1},
                    {"name": "b", "arg": meta, "kind": 1},
                    {"name": "c", "arg": meta, "kind": 1},
                ],
                "outputs": [{"as_sym_int": {"as_name": "dev"}}],
                "metadata": {},
                "is_hop_single_tensor_return": None,
            }
        ]

    with pytest.raises(ArtifactError, match=r"torch\.sym_ite takes a constant that is not a number"):
        load_artifact(hostile(trained_model, edit))


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        (
            [
                node(
                    "full.default",
                    [
                        ("size", {"as_ints": [2]}, 1),
                        ("fill_value", {"as_int": 0}, 1),
                        ("pin_memory", {"as_bool": True}, 2),
                    ],
                    "pinned",
                )
            ],
            r"pin_memory=True is device management",
        ),
        (
            [
                node(
                    "full.default",
                    [("size", {"as_ints": [2]}, 1), ("fill_value", {"as_int": 0}, 1), ("layout", {"as_layout": 2}, 2)],
                    "sparse",
                )
            ],
            r"layout torch\.sparse_csr is not a strided",
        ),
        ([node("embedding_bag.padding_idx", [("weight", t("x"), 1)], "bag")], r"aten\.embedding_bag is not one"),
        (
            [node("_upsample_bilinear2d_aa.default", [("self", t("x"), 1)], "aa")],
            r"aten\._upsample_bilinear2d_aa is not",
        ),
    ],
)
def test_pinning_other_layouts_and_the_kernels_found_unsafe_are_refused(trained_model: Path, nodes, message) -> None:
    refused_after_the_first_node(trained_model, nodes, message)
