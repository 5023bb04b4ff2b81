"""The pieces of the aws target that need no AWS: the price table and cost arithmetic, the stack outputs and config
keys (checked against infra/config/settings.py), error lines, log scanning."""

from __future__ import annotations

import ast
import dataclasses
import re
import tomllib

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from ops.aws import prices, stack
from ops.aws.clients import describe
from ops.aws.logs import first_traceback, last_error
from ops.aws.prices import PriceTable, max_runtime_s
from ops.errors import OpsError
from tests.conftest import REPO

INFRA_CONFIG = REPO / "infra" / "config" / "settings.py"


def test_price_table_has_its_date_source_and_sane_prices() -> None:
    text = prices.PRICE_FILE.read_text()
    raw = tomllib.loads(text)
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw["as_of"])
    assert raw["region"] == "us-east-1"
    assert raw["currency"] == "USD"
    table = PriceTable.load()
    for section in ("ec2", "ec2_spot", "sagemaker_training", "sagemaker_hosting", "sagemaker_serverless", "rates"):
        source = table.source(section)
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", source.as_of), f"[sources.{section}] needs its date"
        assert source.source != "unknown source", f"[sources.{section}] names where its prices come from"
    assert raw["as_of"] == min(s.as_of for s in table.sources.values()), "as_of is the oldest section's date"
    for kind in prices.KINDS:
        assert table.prices[kind], kind
        for price in table.prices[kind].values():
            assert 0 < price.usd_per_hour < 100, price
    for price in table.prices["ec2"].values():
        assert price.vcpus, f"{price.instance_type} needs vcpus (the EC2 quotas count them)"
        assert price.gpus, f"{price.instance_type} needs gpus"
    assert table.note("us-east-1") == "us-east-1 on-demand list prices as of 2025-06-01 (ops/aws/prices.toml)"
    assert table.note("eu-west-1").endswith("; the stack is in eu-west-1, where prices differ)")


def _infra_defaults() -> dict[str, object]:
    tree = ast.parse(INFRA_CONFIG.read_text())
    config = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Settings")
    defaults: dict[str, object] = {}
    for node in config.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            try:
                defaults[node.target.id] = ast.literal_eval(node.value) if node.value is not None else None
            except ValueError:  # a default named by a constant
                defaults[node.target.id] = None
    return defaults


def test_infra_defaults_are_priced() -> None:
    defaults = _infra_defaults()
    table = PriceTable.load()
    for kind in defaults["gpu_instance_types"]:
        assert table.find("ec2", kind), f"infra's default GPU type {kind} has no price in ops/aws/prices.toml"
    assert table.find("sagemaker_hosting", defaults["endpoint_instance_type"])


def test_config_keys_ops_sets_are_infras() -> None:
    """infra/config/ makes `deepcloud:<camelCase>` from each Settings field; ops sets and reads some of them."""
    fields = _infra_defaults()

    def camel(name: str) -> str:
        head, *rest = name.split("_")
        return head + "".join(part[:1].upper() + part[1:] for part in rest)

    infra_keys = {f"deepcloud:{camel(name)}" for name in fields}
    for field in dataclasses.fields(stack.ConfigKeys):
        key = getattr(stack.CONFIG, field.name)
        assert key == f"deepcloud:{camel(field.name)}"
        assert key in infra_keys, f"{key} is not a setting of infra/config/settings.py"


def test_every_output_ops_reads_is_exported_by_infra() -> None:
    """The keys of infra/__main__.py's OUTPUTS dict (or its literal pulumi.export calls) cover ops' output keys."""
    tree = ast.parse((REPO / "infra" / "__main__.py").read_text())
    exported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "OUTPUTS" for t in node.targets):
            exported |= {k.value for k in node.value.keys if isinstance(k, ast.Constant)}
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", "") == "export"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            exported.add(node.args[0].value)
    assert exported, "found no OUTPUTS dict and no pulumi.export call in infra/__main__.py"
    assert set(stack.OUTPUT_KEYS) <= exported, f"not exported by infra/: {set(stack.OUTPUT_KEYS) - exported}"


def test_max_runtime_from_max_cost() -> None:
    assert max_runtime_s(1.006, 24, None) == 24 * 3600
    assert max_runtime_s(1.006, 24, 0.5) == 1789
    assert max_runtime_s(1.006, 1, 100) == 3600, "MAX_HOURS stays the ceiling"
    with pytest.raises(OpsError, match=r"^MAX_COST=0.01 buys 36 s at \$1.01/h, under a minute: raise MAX_COST"):
        max_runtime_s(1.006, 24, 0.01)
    with pytest.raises(OpsError, match=r"^MAX_COST must be above 0"):
        max_runtime_s(1.006, 24, 0)
    with pytest.raises(OpsError, match=r"^MAX_HOURS must be above 0"):
        max_runtime_s(1.006, 0, None)
    assert prices.duration(1789) == "29 min 49 s"
    assert prices.duration(7260) == "2 h 01 min"
    assert prices.usd(24.144) == "$24.14"
    assert prices.usd(0.012) == "$0.012"


def test_stack_outputs_are_named_in_one_place() -> None:
    assert stack.OUTPUT_KEYS == (
        "region",
        "data_bucket",
        "artifacts_bucket",
        "kms_key_arn",
        "trainer_repository_url",
        "serving_repository_url",
        "cluster_name",
        "capacity_provider_name",
        "task_definition_family",
        "subnet_ids",
        "security_group_id",
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
    raw = {key: f"v-{key}" for key in stack.OUTPUT_KEYS} | {"subnet_ids": "subnet-a, subnet-b", "endpoint_name": ""}
    outputs = stack.StackOutputs.parse(raw, "dev")
    assert outputs.subnet_ids == ("subnet-a", "subnet-b")
    assert outputs.endpoint_name is None, "an empty endpoint name means none yet"
    applied = stack.StackOutputs.parse({**raw, "force_destroy": False, "protect_data_bucket": True}, "dev")
    assert (applied.force_destroy, applied.protect_data_bucket) == (False, True), "false is a value, not absence"
    assert stack.StackOutputs.parse({**raw, "interface_endpoints_up": False}, "dev").interface_endpoints_up is False
    assert stack.StackOutputs.parse({**raw, "subnet_ids": ["subnet-c"]}, "dev").subnet_ids == ("subnet-c",)
    del raw["region"], raw["training_role_arn"], raw["stack_tag"]
    with pytest.raises(OpsError, match=r"^stack 'dev' has no output region: run `pulumi up`"):
        stack.StackOutputs.parse(raw, "dev")


def test_aws_errors_become_one_line() -> None:
    def error(code: str, message: str, operation: str = "RunTask") -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": message}}, operation)

    assert describe(NoCredentialsError()).startswith("no AWS credentials found")
    assert describe(error("ExpiredToken", "expired")).startswith("AWS rejected the credentials (ExpiredToken: expired)")
    assert describe(error("AccessDeniedException", "not allowed")) == (
        "AWS denied RunTask: not allowed; the credentials in use need that permission (see README, 'The AWS workflow')"
    )
    assert describe(error("ThrottlingException", "slow down")) == "AWS RunTask failed: ThrottlingException: slow down"
    assert describe(EndpointConnectionError(endpoint_url="https://ecs")).startswith("cannot reach AWS: Could not")


def test_first_traceback_and_last_error() -> None:
    lines = [
        "start",
        "Traceback (most recent call last):",
        '  File "a.py", line 1',
        "    x()",
        "ValueError: bad",
        "Traceback (most recent call last):",
        "KeyError: 2",
    ]
    assert first_traceback(lines) == lines[1:5]
    assert first_traceback(["no", "trace"]) == []
    assert last_error(["error: first", "noise", "error: second", "done"]) == "second"
    assert last_error(["fine"]) is None
