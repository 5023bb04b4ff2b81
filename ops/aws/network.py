"""The on-demand network profile: the managed VPC's interface endpoints exist only while a training run needs them.

With `deepcloud:networkProfile` on-demand, infra/ declares the 7 interface endpoints (ECR, ECS, CloudWatch Logs, STS,
in each zone; billed per hour, docs/aws-behaviours.md C3) only while `deepcloud:interfaceEndpointsUp` is true. The
GPU instances and the trainer reach AWS only through them (the VPC has no internet path), so `make train` sets it
and runs `pulumi up` before the run, and puts it back and runs `pulumi up` again after the run ends, however it ends.
The start-up cost is that `pulumi up`: creating interface endpoints takes minutes (the provider waits for each to be
available), paid once per run instead of $0.14 an hour all month.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ops.aws.console import say
from ops.aws.context import Context
from ops.aws.stack import CONFIG


def _set(ctx: Context, up: bool) -> None:
    ctx.pulumi.set_config(CONFIG.interface_endpoints_up, "true" if up else "false")
    ctx.pulumi.up(on_line=lambda line: say(f"  {line}"))
    ctx.stack = ctx.stack.reload()


@contextmanager
def endpoints_for_run(ctx: Context) -> Iterator[None]:
    """Inside: the interface endpoints exist (created first when the on-demand profile has them down); after: removed
    again if they were created here."""
    out = ctx.outputs
    if out.network_profile != "on-demand" or out.interface_endpoints_up:
        yield
        return
    say("network      on-demand profile: creating the interface endpoints for this run (pulumi up)")
    _set(ctx, True)
    try:
        yield
    except Exception as exc:
        if getattr(exc, "keeps_network", False):  # the run goes on: it still needs them
            say(
                f"network      the interface endpoints stay up while the run goes on: set "
                f"{CONFIG.interface_endpoints_up}=false and `python -m infra.cli up` once it has ended"
            )
            raise
        _down(ctx)
        raise
    _down(ctx)


def _down(ctx: Context) -> None:
    say("network      removing the interface endpoints again (pulumi up): $0 while idle")
    _set(ctx, False)
