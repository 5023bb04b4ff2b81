"""The Pulumi stack as ops sees it: its outputs and config, read and changed through the `pulumi` CLI.

This is the one place that names the stack outputs and config keys ops depends on. The infra program
(infra/) exports the outputs; ops never builds a resource name itself.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

from infra.engine import INSTALL_HINT, STACK_TAG
from ops.aws import proc
from ops.errors import OpsError

PULUMI_INSTALL = INSTALL_HINT
"""infra/engine.py's (a dependency-free module): `make ... TARGET=aws` and `python -m infra.cli` say the same."""
POLICY_PACK = "infra/policy"
"""The policy pack (relative to the repository) that gates every `pulumi up` ops runs, as `python -m infra.cli up`
attaches it: the engine runs its mandatory rules in the preview and stops before anything changes."""
STACK_TAG_KEY = STACK_TAG
"""Every taggable resource of the stack carries this tag, valued `<project>/<stack>` (infra's default tags)."""


@dataclass(frozen=True, slots=True)
class StackOutputs:
    """The stack outputs ops reads (`pulumi stack output --json`); each field name is the output's key."""

    region: str
    """AWS region of the stack."""
    data_bucket: str
    """S3 bucket for training data (protected: `pulumi destroy` keeps it unless the config says otherwise)."""
    artifacts_bucket: str
    """S3 bucket for models/<run-id>/, checkpoints/<run-id>/ and the deploy history."""
    kms_key_arn: str
    """KMS key of both buckets; SageMaker jobs encrypt their volumes and outputs with it."""
    trainer_repository_url: str
    """ECR repository URL of the trainer image (<account>.dkr.ecr.<region>.amazonaws.com/<name>)."""
    serving_repository_url: str
    """ECR repository URL of the serving image."""
    cluster_name: str
    """ECS cluster with the GPU capacity."""
    capacity_provider_name: str
    """ECS capacity provider backed by the GPU Auto Scaling group."""
    task_definition_family: str
    """Family of the trainer's ECS task definition (RunTask takes its latest ACTIVE revision)."""
    subnet_ids: tuple[str, ...]
    """Private subnets for awsvpc tasks and SageMaker jobs."""
    security_group_id: str
    """Security group for training tasks and jobs."""
    endpoint_name: str | None = None
    """The SageMaker endpoint's name; present once a model is configured (`make deploy`)."""
    training_role_arn: str | None = None
    """IAM role SageMaker training jobs run as; only BACKEND=sagemaker needs it."""
    stack_tag: str | None = None
    """Value of the `deepcloud:stack` tag on every resource (`<project>/<stack>` when absent)."""
    task_definition_arn: str | None = None
    """The task definition revision Pulumi registered (RunTask runs exactly it; else the family's latest)."""
    endpoint_config_name: str | None = None
    """The endpoint configuration the last `pulumi up` applied: what DescribeEndpoint must name after a rollout."""
    endpoint_instance_type: str | None = None
    """The endpoint's SageMaker instance type (deepcloud:endpointInstanceType, or infra's default)."""
    endpoint_max_instances: int | None = None
    """The endpoint's auto scaling upper bound: a rollout may run twice as many instances."""
    access_logs_bucket: str | None = None
    """S3 bucket the data and artifacts buckets log their accesses to (never empty once they were used)."""
    force_destroy: bool | None = None
    """deepcloud:forceDestroy as applied: may `pulumi destroy` delete buckets and repositories that hold data?"""
    protect_data_bucket: bool | None = None
    """deepcloud:protectDataBucket as applied: `make destroy` keeps the data bucket while it is true."""
    endpoint_mode: str | None = None
    """realtime, serverless, async or multi-model (deepcloud:endpointMode; absent from stacks older than the modes:
    realtime)."""
    async_prefix: str | None = None
    """s3://<artifacts>/async/ of an async endpoint: requests go under input/, results come back under output/."""
    models_prefix: str | None = None
    """s3://<artifacts>/multi-model/models/ of a multi-model endpoint: the archives it can serve (TargetModel is the key
    under it)."""
    network_profile: str | None = None
    """endpoints, on-demand or existing-vpc (deepcloud:networkProfile)."""
    interface_endpoints_up: bool | None = None
    """Whether the managed VPC's interface endpoints exist now (always with the endpoints profile)."""
    monthly_budget: int | None = None
    """deepcloud:monthlyBudget in USD, when there is a budget."""
    budget_name: str | None = None
    """The AWS Budgets budget of the stack's tag, when there is one (`make train` reads what is left of it)."""

    @classmethod
    def parse(cls, raw: dict, stack: str) -> StackOutputs:
        known = {f.name: f for f in fields(cls)}
        required = [name for name in known if name not in OPTIONAL_OUTPUTS]
        missing = [name for name in required if raw.get(name) in (None, "", [])]
        if missing:
            raise OpsError(
                f"stack '{stack}' has no output {', '.join(missing)}: run `pulumi up` with the current "
                "infra/ program (it exports them)"
            )
        values = {}
        for name in known:
            value = raw.get(name)
            if name == "subnet_ids" and value is not None:
                value = tuple(value) if isinstance(value, list) else tuple(s.strip() for s in str(value).split(","))
            if name in OPTIONAL_OUTPUTS and not isinstance(value, bool):
                value = value or None  # absent, null and "" all mean "not there (yet)"
            values[name] = value
        return cls(**values)


OPTIONAL_OUTPUTS = (
    "endpoint_name",
    "training_role_arn",
    "stack_tag",
    "task_definition_arn",
    "endpoint_config_name",
    "endpoint_instance_type",
    "endpoint_max_instances",
    "access_logs_bucket",
    "force_destroy",
    "protect_data_bucket",
    "endpoint_mode",
    "async_prefix",
    "models_prefix",
    "network_profile",
    "interface_endpoints_up",
    "monthly_budget",
    "budget_name",
)
OUTPUT_KEYS = tuple(f.name for f in fields(StackOutputs))
"""Every stack output key ops reads, for the README and for reconciling with infra/__main__.py."""


@dataclass(frozen=True, slots=True)
class ConfigKeys:
    """The `deepcloud:` stack config keys ops reads or sets (infra/config.py defines them)."""

    trainer_image_tag: str = "deepcloud:trainerImageTag"
    serving_image_tag: str = "deepcloud:servingImageTag"
    model_artifact: str = "deepcloud:modelArtifact"
    endpoint_instance_type: str = "deepcloud:endpointInstanceType"
    protect_data_bucket: str = "deepcloud:protectDataBucket"
    interface_endpoints_up: str = "deepcloud:interfaceEndpointsUp"
    endpoint_mode: str = "deepcloud:endpointMode"


CONFIG = ConfigKeys()


class Pulumi:
    """The `pulumi` CLI, run in the repository root (where Pulumi.yaml is), on one stack."""

    def __init__(self, repo: Path, stack: str | None = None, binary: str = "pulumi") -> None:
        self.repo = repo
        self.stack = stack
        self.binary = binary

    def _argv(self, *args: str, stack: bool = True) -> list[str]:
        exe = proc.require(self.binary, PULUMI_INSTALL)
        return [exe, *args, *(["--stack", self.stack] if self.stack and stack else []), "--non-interactive"]

    def _env(self) -> dict[str, str]:
        return {**os.environ, "PULUMI_SKIP_UPDATE_CHECK": "true"}

    def run(self, *args: str, what: str, hint: str = "", stack: bool = True) -> str:
        """Run `pulumi ARGS`; its stdout, or an OpsError: ``what``, pulumi's own error line, then ``hint``."""
        try:
            done = subprocess.run(
                self._argv(*args, stack=stack),
                cwd=self.repo,
                env=self._env(),
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise OpsError(f"`pulumi {' '.join(args)}` did not answer within 300 s") from None
        if done.returncode != 0:
            said = _error_line(done.stdout + done.stderr, done.returncode)
            raise OpsError(f"{what} (pulumi: {said})" + (f": {hint}" if hint else ""))
        return done.stdout

    def stream(
        self,
        *args: str,
        what: str,
        on_line: Callable[[str], None],
        poll: Callable[[], None] | None = None,
        poll_seconds: float = 5.0,
    ) -> None:
        """Run a long `pulumi` command (up, destroy), each output line to ``on_line`` as it comes and ``poll``
        every ``poll_seconds`` meanwhile (ops watches the endpoint while `pulumi up` waits for it)."""
        code, lines = proc.stream(
            self._argv(*args), self.repo, on_line, env=self._env(), poll=poll, poll_seconds=poll_seconds
        )
        if code != 0:
            raise OpsError(f"{what} (pulumi: {_error_line(chr(10).join(lines), code)})")

    def up(
        self, *, on_line: Callable[[str], None], poll: Callable[[], None] | None = None, poll_seconds: float = 5.0
    ) -> None:
        """`pulumi up` gated by the policy pack: the preview (not skipped) runs its rules before any change."""
        self.stream(
            "up",
            "--yes",
            "--policy-pack",
            str(self.repo / POLICY_PACK),
            what="pulumi up failed",
            on_line=on_line,
            poll=poll,
            poll_seconds=poll_seconds,
        )

    def stack_name(self) -> str:
        name = self.run(
            "stack",
            "--show-name",
            what="no Pulumi stack is selected",
            hint="run `pulumi login`, then `pulumi stack init dev` (or `pulumi stack select dev`)",
        ).strip()
        if not name:
            raise OpsError("no Pulumi stack is selected: run `pulumi stack init dev` (or `pulumi stack select dev`)")
        return name

    def outputs(self) -> dict:
        text = self.run("stack", "output", "--json", what="cannot read the stack outputs")
        try:
            data = json.loads(text or "{}")
        except json.JSONDecodeError:
            raise OpsError(f"`pulumi stack output --json` printed something that is not JSON: {text[:80]!r}") from None
        return data if isinstance(data, dict) else {}

    def config(self) -> dict[str, str]:
        """The stack's config as `namespace:key` -> value (secrets show as '[secret]')."""
        text = self.run("config", "--json", what="cannot read the stack config")
        try:
            data = json.loads(text or "{}")
        except json.JSONDecodeError:
            raise OpsError(f"`pulumi config --json` printed something that is not JSON: {text[:80]!r}") from None
        return {
            key: str(entry.get("value", "[secret]")) if isinstance(entry, dict) else str(entry)
            for key, entry in data.items()
        }

    def managed_arns(self) -> set[str]:
        """The ARNs of every resource still in the stack's state (`pulumi stack export`): after
        `pulumi destroy --exclude-protected`, what was kept on purpose."""
        text = self.run("stack", "export", what="cannot read the stack's state")
        try:
            resources = json.loads(text or "{}").get("deployment", {}).get("resources", []) or []
        except (json.JSONDecodeError, AttributeError):
            raise OpsError(f"`pulumi stack export` printed something that is not a deployment: {text[:80]!r}") from None
        arns = set()
        for resource in resources:
            for value in (resource.get("outputs") or {}).values():
                if isinstance(value, str) and value.startswith("arn:"):
                    arns.add(value.removesuffix(":*"))
        return arns

    def set_config(self, key: str, value: str) -> None:
        self.run("config", "set", key, value, what=f"cannot set {key}")

    def remove_config(self, key: str) -> None:
        self.run("config", "rm", key, what=f"cannot remove {key}")


def _error_line(output: str, code: int) -> str:
    """Pulumi's own `error: ...` line (its first one), else its last line, else the exit code."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in lines:
        if line.lower().startswith("error:"):
            return line[len("error:") :].strip()
    return lines[-1] if lines else f"pulumi exited with code {code}"


def project_name(repo: Path) -> str:
    """`name:` in Pulumi.yaml: with the stack name it makes the stack tag."""
    try:
        text = (repo / "Pulumi.yaml").read_text()
    except OSError:
        raise OpsError(f"no Pulumi.yaml in {repo}: run ops from the deepcloud checkout") from None
    match = re.search(r"^name:\s*(\S+)", text, flags=re.M)
    if not match:
        raise OpsError(f"{repo / 'Pulumi.yaml'} has no `name:`")
    return match.group(1).strip("'\"")


@dataclass(frozen=True, slots=True)
class Stack:
    """A selected stack with its outputs: what every aws command starts from."""

    name: str
    project: str
    outputs: StackOutputs
    pulumi: Pulumi

    @property
    def tag(self) -> str:
        """The value of the `deepcloud:stack` tag on its resources."""
        return self.outputs.stack_tag or f"{self.project}/{self.name}"

    @classmethod
    def load(cls, pulumi: Pulumi) -> Stack:
        name = pulumi.stack_name()
        raw = pulumi.outputs()
        if not raw:
            raise OpsError(f"stack '{name}' has no outputs: run `pulumi up` first (README, 'The AWS workflow')")
        return cls(name=name, project=project_name(pulumi.repo), outputs=StackOutputs.parse(raw, name), pulumi=pulumi)

    def reload(self) -> Stack:
        """The same stack after `pulumi up` changed its outputs."""
        return Stack(
            name=self.name,
            project=self.project,
            outputs=StackOutputs.parse(self.pulumi.outputs(), self.name),
            pulumi=self.pulumi,
        )
