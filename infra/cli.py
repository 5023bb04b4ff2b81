"""`python -m infra.cli preview|up|destroy|cost [--stack NAME]`: the Pulumi CLI with the policy pack attached, and
what the stack costs before anything is created.

    preview   pulumi preview --policy-pack infra/policy   (what would change, checked against every rule)
    up        pulumi up --policy-pack infra/policy        (the same checks gate the deployment)
    destroy   pulumi destroy                              (the data bucket is protected unless config says not)
    cost      the stack's idle cost per month and running cost per hour, by component (offline: no CLI, no AWS)

`preview` and `up` print the cost's two summary lines first. `cost` runs the program under Pulumi's mocks for the
stack's config file, Pulumi.<stack>.yaml (`--stack`, else $STACK, else the selected stack, else dev), with
`--set key=value` on top (deepcloud: keys without the namespace, e.g. `--set endpointMode=serverless`), and prices
what it declares with ops/aws/prices.toml (infra/cost.py).

Runs in the repository root, where Pulumi.yaml is. Without the pulumi CLI on PATH, preview, up and destroy stop with
one line saying how to install it; cost needs no CLI.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from infra.engine import POLICY_PACK as POLICY_PACK  # the pack `preview` and `up` attach, for the tests to name
from infra.engine import CliMissing, pulumi_cli, pulumi_command

REPO = Path(__file__).resolve().parent.parent
DEFAULT_REGION = "us-east-1"
"""The region `cost` assumes when the stack's config file has none (the price table's region)."""


def command(action: str, stack: str | None, executable: str) -> list[str]:
    """The pulumi command line for `action`, as a person runs it (infra/engine.py builds it)."""
    return pulumi_command(executable, action, stack=stack)


class CostError(Exception):
    """A config `cost` cannot price, said in one line."""


def _as_pulumi(value: object) -> str:
    """A YAML config value as the string Pulumi hands the program (lists as JSON, booleans lower case)."""
    if isinstance(value, list | dict):
        return json.dumps(value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def stack_values(stack: str, overrides: list[str], repo: Path = REPO) -> tuple[dict[str, str], str, str]:
    """(deepcloud: values without namespace, region, where they came from) for `stack`."""
    import yaml

    path = repo / f"Pulumi.{stack}.yaml"
    config: dict = {}
    where = f"no {path.name}: the defaults"
    if path.exists():
        try:
            config = (yaml.safe_load(path.read_text()) or {}).get("config") or {}
        except yaml.YAMLError as exc:
            raise CostError(
                f"{path.name} is not valid YAML ({str(exc).splitlines()[0]}): fix it or pass --stack"
            ) from None
        where = path.name
    values = {
        key.removeprefix("deepcloud:"): _as_pulumi(v) for key, v in config.items() if key.startswith("deepcloud:")
    }
    region = str(config.get("aws:region") or DEFAULT_REGION)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CostError(f"--set {item!r} is not key=value: write e.g. --set endpointMode=serverless")
        values[key.strip().removeprefix("deepcloud:")] = value.strip()
    if overrides:
        where += " + " + " ".join(overrides)
    return values, region, where


def selected_stack() -> str:
    """$STACK, else the stack the pulumi CLI has selected (when it is installed), else dev."""
    if os.environ.get("STACK"):
        return os.environ["STACK"]
    try:
        exe = pulumi_cli()
    except CliMissing:
        return "dev"
    done = subprocess.run(
        pulumi_command(exe, "stack", "--show-name", interactive=False),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else "dev"


def cost_lines(stack: str, overrides: list[str], summary: bool = False) -> list[str]:
    """The cost report of `stack` (or its two summary lines): the program synthesized under mocks, then priced."""
    from infra.config import ConfigError
    from infra.cost import price, render
    from infra.prices import PriceError, PriceTable
    from infra.synth import run_program

    values, region, where = stack_values(stack, overrides)
    try:
        resources, outputs, _, _ = run_program(values, stack=stack, region=region)
        prices = PriceTable.load()
        bill = price(resources, prices, outputs)
    except (ConfigError, PriceError) as exc:
        raise CostError(str(exc)) from None
    mode = outputs.get("endpoint_mode") if outputs.get("endpoint_name") else "none (no modelArtifact)"
    title = (
        f"stack {stack} ({where}), {region}; endpoint {mode}, network {outputs.get('network_profile')}, "
        f"budget {('$' + str(outputs['monthly_budget']) + '/month') if outputs.get('monthly_budget') else 'none'}"
    )
    lines = render(bill, prices, title, region)
    if summary:
        return [lines[0], *[line for line in lines if line.startswith(("idle ", "running "))]]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.cli", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("preview", "up", "destroy", "cost"))
    parser.add_argument("--stack", help="Pulumi stack (default: $STACK, the selected one, or dev)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="cost: a deepcloud: setting on top of the stack's config (repeatable)",
    )
    args = parser.parse_args(argv)
    overrides = [item for group in args.set for item in group.split()]
    if args.action == "cost":
        try:
            print("\n".join(cost_lines(args.stack or selected_stack(), overrides)), flush=True)
        except CostError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0
    try:
        executable = pulumi_cli()
    except CliMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.action in ("preview", "up"):
        try:
            print("\n".join(cost_lines(args.stack or selected_stack(), [], summary=True)), flush=True)
        except CostError as exc:
            print(f"cost: not priced ({exc})", flush=True)
    return subprocess.run(command(args.action, args.stack, executable), cwd=REPO, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
