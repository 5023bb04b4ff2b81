"""The on-demand network profile in `make train TARGET=aws` (ops/aws/network.py): the interface endpoints are created
(`deepcloud:interfaceEndpointsUp=true`, `pulumi up`) before a run and removed after it however it ends, unless the run
was left running. The pulumi stand-in's `pulumi up` hook does what infra/ does to the outputs (C3 in
docs/aws-behaviours.md: interface endpoints bill per zone-hour; the program declares them only while the flag is up).
"""

from __future__ import annotations

import pytest

from ops.aws import network
from ops.aws.training.run import LeftRunning
from ops.errors import OpsError
from tests.ops.conftest import pulumi_ups

HOOK_UP = """
state["outputs"]["interface_endpoints_up"] = state["config"].get("deepcloud:interfaceEndpointsUp") == "true"
"""


@pytest.fixture
def on_demand(stack):
    stack.standins.update(
        outputs={**stack.outputs, "network_profile": "on-demand", "interface_endpoints_up": False},
        hooks={"up": HOOK_UP},
    )
    return stack


def flags(stack) -> list[str]:
    key = "deepcloud:interfaceEndpointsUp"
    return [c[3] for c in stack.standins.calls("pulumi") if c[:3] == ["config", "set", key]]


def test_the_endpoints_exist_for_the_run_and_go_after_it(on_demand, tmp_path, capsys) -> None:
    ctx = on_demand.context(tmp_path)
    with network.endpoints_for_run(ctx):
        assert ctx.outputs.interface_endpoints_up is True, "up (and the outputs reloaded) before the run starts"
        assert flags(on_demand) == ["true"]
    assert flags(on_demand) == ["true", "false"]
    assert len(pulumi_ups(on_demand)) == 2, "each change through the policy pack"
    assert ctx.outputs.interface_endpoints_up is False
    assert "removing the interface endpoints again (pulumi up): $0 while idle" in capsys.readouterr().out


def test_a_failed_run_removes_them_too_and_one_left_running_keeps_them(on_demand, tmp_path, capsys) -> None:
    ctx = on_demand.context(tmp_path)
    with pytest.raises(OpsError, match="run failed"), network.endpoints_for_run(ctx):
        raise OpsError("run failed")
    assert flags(on_demand) == ["true", "false"]
    with pytest.raises(LeftRunning), network.endpoints_for_run(ctx):
        raise LeftRunning("left task-1 running")
    assert flags(on_demand) == ["true", "false", "true"], "the running task still needs them"
    assert "stay up while the run goes on" in capsys.readouterr().out


def test_the_endpoints_profile_changes_nothing(stack, tmp_path) -> None:
    stack.standins.update(outputs={**stack.outputs, "network_profile": "endpoints", "interface_endpoints_up": True})
    with network.endpoints_for_run(stack.context(tmp_path)):
        pass
    assert flags(stack) == []
    assert pulumi_ups(stack) == []
