"""Canaries for the private APIs of pinned packages that the project relies on.

Each test checks one private (underscored, or internal-module) API the way the project uses it, and fails with the
pin to revisit, the file that pins it and the file that uses it. An upgrade that moves or changes one of them then
fails here, by name, instead of somewhere deep in a server, a synthesis or a policy run.

    torch                   serving/program.py, serving/operators.py, tests/serving/test_archive_program.py,
                            tests/serving/test_model_files.py
    uvicorn                 serving/limits.py
    pulumi                  infra/config/parsing.py, infra/engine.py, infra/synth.py
    pulumi-policy           tests/infra/harness.py, tests/infra/test_policy.py
    moto                    tests/infra/test_spot_interruption.py
    schemathesis, pytest    tests/serving/test_openapi_fuzz.py
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent

TORCH = ("torch", "2.13.0", "serving/requirements.txt")
UVICORN = ("uvicorn", "0.54.0", "serving/requirements.txt")
PULUMI = ("pulumi", "3.272.0", "infra/requirements.txt")
PULUMI_POLICY = ("pulumi-policy", "1.21.0", "infra/requirements.txt")
MOTO = ("moto[server]", "5.2.5", "requirements/dev.txt")
SCHEMATHESIS = ("schemathesis", "4.32.5", "requirements/dev.txt")
PYTEST = ("pytest", "9.2.0", "requirements/dev.txt")
PINS = (TORCH, UVICORN, PULUMI, PULUMI_POLICY, MOTO, SCHEMATHESIS, PYTEST)


def revisit(api: str, pin: tuple[str, str, str], used_by: str) -> str:
    """The failure message: what moved, which pin to revisit where, and what relies on it."""
    name, version, where = pin
    return f"{api} moved or changed: revisit {name}=={version} in {where}, used by {used_by}"


@pytest.mark.parametrize("pin", PINS, ids=[pin[0] for pin in PINS])
def test_the_pins_named_here_are_the_pins(pin: tuple[str, str, str]) -> None:
    """Each message names a real pin: the requirement file holds exactly that version."""
    name, version, where = pin
    text = (REPO / where).read_text()
    assert re.search(rf"^{re.escape(name)}=={re.escape(version)}\b", text, flags=re.M), (
        f"{where} no longer pins {name}=={version}: update the pin named in tests/test_private_apis.py"
    )


# --- torch ------------------------------------------------------------------------------------------------------
def test_torch_pt2_archive_constants_name_what_torch_export_save_writes(tmp_path: Path) -> None:
    """serving/program.py reads a .pt2 by the member names of torch._C._export.pt2_archive_constants."""
    import torch

    used_by = "serving/program.py (the .pt2 reader)"
    try:
        from torch._C._export import pt2_archive_constants as c

        names = {
            name: getattr(c, name)
            for name in (
                "ARCHIVE_FORMAT_PATH",
                "ARCHIVE_FORMAT_VALUE",
                "ARCHIVE_VERSION_PATH",
                "MODELS_DIR",
                "MODELS_FILENAME_FORMAT",
                "WEIGHTS_CONFIG_FILENAME_FORMAT",
                "CONSTANTS_CONFIG_FILENAME_FORMAT",
                "SAMPLE_INPUTS_FILENAME_FORMAT",
                "WEIGHTS_DIR",
                "WEIGHT_FILENAME_PREFIX",
                "CONSTANTS_DIR",
                "TENSOR_CONSTANT_FILENAME_PREFIX",
                "AOTINDUCTOR_DIR",
                "EXECUTORCH_DIR",
                "MTIA_DIR",
            )
        }
    except (ImportError, AttributeError) as missing:
        pytest.fail(f"{revisit('torch._C._export.pt2_archive_constants', TORCH, used_by)}: {missing}")

    class Scale(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(3))
            self.register_buffer("offset", torch.zeros(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.weight + self.offset

    path = tmp_path / "model.pt2"
    torch.export.save(torch.export.export(Scale(), (torch.rand(3),)), path)
    with zipfile.ZipFile(path) as zf:
        members = zf.namelist()
        root = members[0].split("/", 1)[0] + "/"
        inner = [m.removeprefix(root) for m in members]
        fmt = zf.read(root + names["ARCHIVE_FORMAT_PATH"]).decode().strip()
    message = revisit("torch._C._export.pt2_archive_constants", TORCH, used_by)
    for member in (
        names["ARCHIVE_FORMAT_PATH"],
        names["ARCHIVE_VERSION_PATH"],
        names["MODELS_FILENAME_FORMAT"].format("model"),
        names["WEIGHTS_CONFIG_FILENAME_FORMAT"].format("model"),
        names["CONSTANTS_CONFIG_FILENAME_FORMAT"].format("model"),
    ):
        assert member in inner, f"{message}: torch.export.save wrote no {member} ({inner})"
    assert fmt == names["ARCHIVE_FORMAT_VALUE"], message
    assert all(m.startswith(names["MODELS_DIR"]) for m in inner if m.endswith(".json") and "models" in m), message
    weights = [m for m in inner if m.startswith(names["WEIGHTS_DIR"]) and not m.endswith(".json")]
    assert weights, f"{message}: no weights under {names['WEIGHTS_DIR']}"
    assert all(m.split("/")[-1].startswith(names["WEIGHT_FILENAME_PREFIX"]) for m in weights), message


def test_torch_mkldnn_layout_is_a_layout() -> None:
    """serving/program.py maps the serialized layout 6 to torch._mkldnn."""
    import torch

    layout = getattr(torch, "_mkldnn", None)
    assert isinstance(layout, torch.layout), revisit("torch._mkldnn", TORCH, "serving/program.py (LAYOUTS)")
    assert layout is not torch.strided


def test_torch_op_overloads_expose_their_schema() -> None:
    """serving/operators.py and serving/program.py vet each graph node by torch._ops.OpOverload's _schema (name,
    arguments with name, type and alias_info, returns) and _overloadname."""
    import torch

    message = revisit(
        "torch._ops.OpOverload._schema / _overloadname", TORCH, "serving/operators.py, serving/program.py"
    )
    ops = getattr(torch, "_ops", None)
    assert ops is not None, message
    assert isinstance(torch.ops.aten.add.Tensor, ops.OpOverload), message
    assert isinstance(torch.ops.aten.add, ops.OpOverloadPacket), message
    add = torch.ops.aten.add.Tensor
    assert add._schema.name == "aten::add", message
    assert add._overloadname == "Tensor", message
    assert [(a.name, str(a.type)) for a in add._schema.arguments] == [
        ("self", "Tensor"),
        ("other", "Tensor"),
        ("alpha", "number"),  # a Scalar, as str() spells it and serving/operators.py ARGUMENT_TYPES lists it
    ], message
    assert add._schema.arguments[0].alias_info is None, message
    in_place = {a.name: a for a in torch.ops.aten.add_.Tensor._schema.arguments}
    assert in_place["self"].alias_info is not None, message
    assert in_place["self"].alias_info.is_write, message
    assert any(r.alias_info is not None for r in torch.ops.aten.view.default._schema.returns), message
    assert all(r.alias_info is None for r in torch.ops.aten.relu.default._schema.returns), message


def test_nn_module_apply_is_what_to_calls_and_buffers_hold_the_state() -> None:
    """serving/program.py overrides nn.Module._apply(fn, recurse) to drop a cache when .to() moves the state, and
    reads its buffers from nn.Module._buffers."""
    import torch

    message = revisit("torch.nn.Module._apply / _buffers", TORCH, "serving/program.py (ArchiveProgram)")
    calls: list[bool] = []

    class Program(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("w", torch.ones(2))

        def _apply(self, fn, recurse=True):
            calls.append(recurse)
            return super()._apply(fn, recurse)

    program = Program()
    before = program._buffers["w"].untyped_storage().data_ptr()
    program.to(torch.float64)
    assert calls, f"{message}: .to() no longer goes through _apply"
    assert set(program._buffers) == {"w"}, message
    assert program._buffers["w"].dtype == torch.float64, message
    assert program._buffers["w"].untyped_storage().data_ptr() != before, message


def test_mkldnn_convolution_pointwise_fuses_a_relu() -> None:
    """serving/program.py runs a conv2d followed by a ReLU as torch.ops.mkldnn._convolution_pointwise, passing its
    arguments by position; without the op the fusion is silently off, so its absence fails here."""
    import torch

    if not torch.backends.mkldnn.is_available():
        pytest.skip("this torch build has no oneDNN: the server never fuses here")
    message = revisit("torch.ops.mkldnn._convolution_pointwise", TORCH, "serving/program.py (fuse_conv_relu)")
    op = getattr(torch.ops.mkldnn, "_convolution_pointwise", None)
    assert op is not None, message
    names = [a.name for a in op.default._schema.arguments]
    assert names == ["X", "W", "B", "padding", "stride", "dilation", "groups", "attr", "scalars", "algorithm"], message
    x, w, b = torch.rand(1, 2, 5, 5), torch.rand(3, 2, 3, 3), torch.rand(3)
    with torch.no_grad():
        fused = op.default(x, w, b, [1, 1], [1, 1], [1, 1], 1, "relu", [], None)
        plain = torch.relu(torch.nn.functional.conv2d(x, w, b, stride=1, padding=1))
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5, msg=message)


def test_torch_export_serde_tables_exist() -> None:
    """tests/serving/test_archive_program.py checks serving/program.py's enum tables against these internals."""
    message = revisit(
        "torch._export.serde (SCHEMA_VERSION, _SERIALIZE_TO_TORCH_*, _SYM_OPS)",
        TORCH,
        "tests/serving/test_archive_program.py and serving/program.py (SCHEMA_MAJOR, DTYPES, LAYOUTS, SYM_OPS)",
    )
    try:
        from torch._export.serde import schema, serialize
    except ImportError as missing:
        pytest.fail(f"{message}: {missing}")
    assert isinstance(schema.SCHEMA_VERSION[0], int), message
    for table in ("_SERIALIZE_TO_TORCH_DTYPE", "_SERIALIZE_TO_TORCH_LAYOUT", "_SERIALIZE_TO_TORCH_MEMORY_FORMAT"):
        assert len(getattr(serialize, table, {})) > 1, f"{message}: {table}"
    assert getattr(serialize, "_SYM_OPS", None), f"{message}: _SYM_OPS"
    assert all(callable(op) for op in serialize._SYM_OPS), message


# --- uvicorn ----------------------------------------------------------------------------------------------------
def test_uvicorn_httptools_protocol_internals() -> None:
    """serving/limits.py subclasses uvicorn's HttpToolsProtocol: it overrides its callbacks, replays its
    data_received (_unset_keepalive_if_required, then parser.feed_data), and reads its connection state."""
    message = revisit(
        "uvicorn.protocols.http.httptools_impl (HttpToolsProtocol, STATUS_LINE)", UVICORN, "serving/limits.py"
    )
    try:
        import uvicorn
        from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle
        from uvicorn.server import ServerState
    except ImportError as missing:
        pytest.fail(f"{message}: {missing}")
    for status in (400, 408, 414, 431, 503):
        assert STATUS_LINE[status].startswith(f"HTTP/1.1 {status} ".encode()), message
        assert STATUS_LINE[status].endswith(b"\r\n"), message
    for method in (
        "connection_made",
        "connection_lost",
        "data_received",
        "on_message_begin",
        "on_url",
        "on_headers_complete",
        "on_body",
        "on_message_complete",
        "on_response_complete",
        "_unset_keepalive_if_required",
    ):
        assert callable(getattr(HttpToolsProtocol, method, None)), f"{message}: {method}"
    replayed = inspect.getsource(HttpToolsProtocol.data_received)
    for step in ("self._unset_keepalive_if_required()", "self.parser.feed_data(data)"):
        assert step in replayed, f"{message}: data_received changed, and serving/limits.py's _feed replays it"
    cycle = inspect.getsource(RequestResponseCycle.__init__)
    for attribute in ("response_complete", "response_started", "disconnected", "message_event"):
        assert f"self.{attribute}" in cycle, f"{message}: RequestResponseCycle.{attribute}"
    for attribute in ("client", "headers", "url", "transport"):
        assert f"self.{attribute}" in inspect.getsource(HttpToolsProtocol), f"{message}: {attribute}"

    async def construct() -> None:
        config = uvicorn.Config(app=lambda scope, receive, send: None, http="httptools", log_config=None)
        config.load()
        state = ServerState()
        protocol = HttpToolsProtocol(config=config, server_state=state, app_state={})
        assert protocol.connections is state.connections, message
        assert protocol.cycle is None, message
        assert len(protocol.pipeline) == 0, message
        assert callable(protocol.parser.feed_data), message
        assert protocol.loop is asyncio.get_running_loop(), message

    asyncio.run(construct())


# --- pulumi -----------------------------------------------------------------------------------------------------
def test_pulumi_runtime_config_map_lists_every_key() -> None:
    """infra/config/parsing.py reads pulumi.runtime.config.CONFIG to refuse unknown deepcloud: keys."""
    import pulumi.runtime
    from pulumi.runtime import config

    message = revisit("pulumi.runtime.config.CONFIG", PULUMI, "infra/config/parsing.py (load)")

    def check() -> None:
        pulumi.runtime.set_all_config({"deepcloud:unknownKey": "1", "aws:region": "eu-west-1"})
        assert dict(config.CONFIG.get()) == {"deepcloud:unknownKey": "1", "aws:region": "eu-west-1"}, message

    contextvars.copy_context().run(check)  # CONFIG is a ContextVar: the change stays in the copy


def test_pulumi_get_monitor_is_none_outside_the_engine() -> None:
    """infra/engine.py tells `python infra/__main__.py` from `pulumi up` by pulumi.runtime.settings.get_monitor()."""
    message = revisit("pulumi.runtime.settings.get_monitor", PULUMI, "infra/engine.py (require_engine)")
    done = subprocess.run(
        [sys.executable, "-c", "from pulumi.runtime.settings import get_monitor; print(get_monitor())"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"{message}: {done.stderr}"
    assert done.stdout.strip() == "None", f"{message}: {done.stdout}"


def test_pulumi_mock_internals_infra_synth_builds_on() -> None:
    """infra/synth.py runs the program under mocks with a MockMonitor subclass that keeps each RegisterResource
    request, resets settings.ROOT, resolves the Stack's outputs with _sync_await and drives run_pulumi_func."""
    message = revisit(
        "pulumi.runtime internals (mocks.MockMonitor, settings.ROOT, rpc, stack, sync_await)",
        PULUMI,
        "infra/synth.py",
    )
    try:
        import pulumi.runtime
        from pulumi.runtime import rpc, settings
        from pulumi.runtime.mocks import MockMonitor, Mocks
        from pulumi.runtime.proto import resource_pb2
        from pulumi.runtime.stack import Stack, run_pulumi_func
        from pulumi.runtime.sync_await import _sync_await
    except ImportError as missing:
        pytest.fail(f"{message}: {missing}")
    from google.protobuf import struct_pb2

    assert "monitor" in inspect.signature(pulumi.runtime.set_mocks).parameters, message
    assert list(inspect.signature(MockMonitor.__init__).parameters) == ["self", "mocks"], message
    assert callable(MockMonitor.RegisterResource), message
    assert callable(MockMonitor.Invoke), message
    assert "outputs" in Stack.__annotations__, f"{message}: Stack.outputs"
    assert callable(run_pulumi_func), message
    assert isinstance(settings.ROOT, contextvars.ContextVar), message
    assert callable(settings.get_root_resource), message
    assert _sync_await(asyncio.sleep(0, result=5)) == 5, f"{message}: _sync_await"
    fields = set(resource_pb2.RegisterResourceRequest.DESCRIPTOR.fields_by_name)
    read = {"type", "name", "custom", "object", "parent", "provider", "protect", "retainOnDelete"}
    read |= {"ignoreChanges", "dependencies", "propertyDependencies"}
    assert read <= fields, f"{message}: RegisterResourceRequest lacks {read - fields}"
    struct = struct_pb2.Struct()
    struct.update({"bucket": "b", "tags": {"k": "v"}, "count": 2})
    assert rpc.deserialize_properties(struct) == {"bucket": "b", "tags": {"k": "v"}, "count": 2}, message

    class Echo(Mocks):
        def new_resource(self, args: Any) -> tuple[str, dict]:
            return f"{args.name}-id", dict(args.inputs)

        def call(self, args: Any) -> tuple[dict, list]:
            return {}, []

    def run() -> dict[str, Any]:
        mocks = Echo()
        monitor = MockMonitor(mocks)
        settings.ROOT.set(None)
        pulumi.runtime.set_all_config({})
        pulumi.runtime.set_mocks(mocks, project="canary", stack="dev", preview=False, monitor=monitor)
        seen: dict[str, Any] = {}

        def program() -> None:
            pulumi.CustomResource("test:index:Thing", "thing", {"size": 3})
            pulumi.export("answer", 42)
            root = settings.get_root_resource()
            assert isinstance(root, Stack), message
            seen["outputs"] = _sync_await(pulumi.Output.from_input(root.outputs).future())

        _sync_await(run_pulumi_func(program))
        seen["registered"] = {urn: (r.id, dict(r.state)) for urn, r in monitor.resources.items()}
        return seen

    seen = contextvars.copy_context().run(run)
    assert seen["outputs"] == {"answer": 42}, message
    things = [state for urn, state in seen["registered"].items() if urn.endswith("test:index:Thing::thing")]
    assert things == [("thing-id", {"size": 3})], f"{message}: MockMonitor.resources {seen['registered']}"


# --- pulumi-policy ----------------------------------------------------------------------------------------------
def test_pulumi_policy_objects_the_tests_build_as_the_engine_does() -> None:
    """tests/infra/harness.py and tests/infra/test_policy.py build PolicyResource, ResourceValidationArgs and
    StackValidationArgs by position, as the engine's analyzer does, and call a policy's validate(args, report)."""
    import pulumi_policy as pp

    message = revisit(
        "pulumi_policy engine-side constructors", PULUMI_POLICY, "tests/infra/harness.py, tests/infra/test_policy.py"
    )

    def params(cls: type) -> list[str]:
        return list(inspect.signature(cls.__init__).parameters)[1:]

    assert params(pp.PolicyResource) == [
        "resource_type",
        "props",
        "urn",
        "name",
        "opts",
        "provider",
        "parent",
        "dependencies",
        "property_dependencies",
    ], message
    assert params(pp.PolicyProviderResource) == ["resource_type", "props", "urn", "name"], message
    assert params(pp.PolicyCustomTimeouts) == ["create_seconds", "update_seconds", "delete_seconds"], message
    assert params(pp.ResourceValidationArgs)[:6] == ["resource_type", "props", "urn", "name", "opts", "provider"], (
        message
    )
    assert params(pp.StackValidationArgs)[:1] == ["resources"], message
    options = {"protect", "ignore_changes", "delete_before_replace", "aliases", "custom_timeouts"}
    options |= {"additional_secret_outputs", "parent"}
    assert options <= set(params(pp.PolicyResourceOptions)), message
    found: list[str] = []
    policy = pp.ResourceValidationPolicy(
        "canary", "a canary", lambda args, report: report(f"saw {args.name}", None), pp.EnforcementLevel.MANDATORY
    )
    opts = pp.PolicyResourceOptions(False, [], None, [], pp.PolicyCustomTimeouts(0, 0, 0), [], None)
    policy.validate(
        pp.ResourceValidationArgs("t:index:T", {}, "urn:x", "x", opts, None), lambda m, u=None: found.append(m)
    )
    assert found == ["saw x"], message


def test_pulumi_policy_proxy_raises_on_unknown_values() -> None:
    """tests/infra/test_policy.py wraps fixture props in pulumi_policy.proxy.unknown_checking_proxy, as the
    analyzer does during preview, so a rule that swallows UnknownValueError fails."""
    message = revisit(
        "pulumi_policy.proxy (unknown_checking_proxy, UNKNOWN_STRING_VALUE, UnknownValueError)",
        PULUMI_POLICY,
        "tests/infra/test_policy.py",
    )
    try:
        from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, UnknownValueError, unknown_checking_proxy
    except ImportError as missing:
        pytest.fail(f"{message}: {missing}")
    props = unknown_checking_proxy(
        {"known": "yes", "arn": UNKNOWN_STRING_VALUE, "nested": {"id": UNKNOWN_STRING_VALUE}}
    )
    assert props["known"] == "yes", message
    with pytest.raises(UnknownValueError):
        props["arn"]
    with pytest.raises(UnknownValueError):
        props["nested"]["id"]


# --- moto, schemathesis, pytest ---------------------------------------------------------------------------------
def test_moto_event_pattern_matches_as_eventbridge() -> None:
    """tests/infra/test_spot_interruption.py checks the spot rule's pattern with moto.events.models.EventPattern."""
    message = revisit("moto.events.models.EventPattern", MOTO, "tests/infra/test_spot_interruption.py")
    try:
        from moto.events.models import EventPattern
    except ImportError as missing:
        pytest.fail(f"{message}: {missing}")
    pattern = EventPattern.load(json.dumps({"source": ["aws.ec2"], "detail-type": ["EC2 Spot Instance Interruption"]}))
    assert pattern.matches_event({"source": "aws.ec2", "detail-type": "EC2 Spot Instance Interruption"}), message
    assert not pattern.matches_event({"source": "aws.ec2", "detail-type": "EC2 Instance Rebalance"}), message


def test_schemathesis_from_fixture_still_reads_item_nodeid() -> None:
    """tests/serving/test_openapi_fuzz.py gives the pytest item a `_nodeid` copied from its public `nodeid`
    because schemathesis's from_fixture reads and rewrites that attribute, which pytest items no longer have."""
    import _pytest.nodes
    import schemathesis

    message = revisit(
        "schemathesis.pytest from_fixture's use of Item._nodeid", SCHEMATHESIS, "tests/serving/test_openapi_fuzz.py"
    )
    lazy = Path(schemathesis.__file__).with_name("pytest") / "lazy.py"
    assert lazy.is_file(), message
    assert "request.node._nodeid" in lazy.read_text(), (
        f"{message}: it no longer reads _nodeid, so the shim in served_schema can go"
    )
    assert isinstance(getattr(_pytest.nodes.Node, "nodeid", None), property), revisit(
        "pytest Node.nodeid", PYTEST, "tests/serving/test_openapi_fuzz.py"
    )
