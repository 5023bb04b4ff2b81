"""infra/config/: one typed config, every error naming its key; and the one-line errors outside Pulumi."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from infra.config import KEYS, NAMESPACE, ConfigError, StackConfig, config_key, parse
from tests.infra.harness import REPO, synthesize

EXAMPLE = REPO / "Pulumi.dev.yaml.example"


def load(values: dict[str, str], region: str | None = "eu-west-1") -> StackConfig:
    return parse(values, project="deepcloud", stack="dev", region=region)


def test_defaults() -> None:
    cfg = load({})
    assert cfg.stack_tag == "deepcloud/dev"
    assert cfg.name_prefix == "deepcloud-dev" == cfg.endpoint_name
    assert cfg.model_artifact is None
    assert not cfg.uses_existing_vpc
    assert cfg.protect_data_bucket
    assert not cfg.force_destroy


def test_keys_are_the_camel_case_field_names() -> None:
    assert config_key("gpu_max_instances") == "gpuMaxInstances"
    assert config_key("errors_5xx_alarm") == "errors5xxAlarm"
    assert set(KEYS) == {config_key(f.name) for f in dataclasses.fields(StackConfig)} - {"project", "stack", "region"}


def test_values_are_parsed_from_pulumi_strings() -> None:
    cfg = load(
        {
            "gpuMaxInstances": "4",
            "forceDestroy": "true",
            "protectDataBucket": "False",
            "gpuInstanceTypes": '["g6.xlarge", "g5.xlarge"]',
            "vpcId": "vpc-0abc1234def567890",
            "subnetIds": "subnet-0aaa1111bbbb22223, subnet-0ccc3333dddd44445",
        }
    )
    assert cfg.gpu_max_instances == 4
    assert cfg.force_destroy
    assert not cfg.protect_data_bucket
    assert cfg.gpu_instance_types == ("g6.xlarge", "g5.xlarge")
    assert cfg.subnet_ids == ("subnet-0aaa1111bbbb22223", "subnet-0ccc3333dddd44445")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"gpuMaxInstance": "3"},
            "deepcloud:gpuMaxInstance is not a deepcloud setting (did you mean deepcloud:gpuMaxInstances?)",
        ),
        ({"gpuMaxInstances": "two"}, "deepcloud:gpuMaxInstances must be a whole number, got 'two'"),
        ({"gpuMaxInstances": "0"}, "deepcloud:gpuMaxInstances must be 1 to 100"),
        ({"forceDestroy": "maybe"}, "deepcloud:forceDestroy must be true or false, got 'maybe'"),
        ({"gpuInstanceTypes": '["g5.xlarge", 3]'}, "deepcloud:gpuInstanceTypes must be a list of strings"),
        ({"gpuInstanceTypes": "g5g.xlarge"}, "deepcloud:gpuInstanceTypes 'g5g.xlarge' is not an x86_64 NVIDIA GPU"),
        ({"gpuInstanceTypes": "m5.large"}, "deepcloud:gpuInstanceTypes 'm5.large' is not an x86_64 NVIDIA GPU"),
        ({"onDemandBaseCapacity": "3"}, "deepcloud:onDemandBaseCapacity must be 0 to gpuMaxInstances (2)"),
        ({"spotAllocationStrategy": "cheapest"}, "deepcloud:spotAllocationStrategy must be one of capacity-optimized"),
        ({"logRetentionDays": "31"}, "deepcloud:logRetentionDays must be one of CloudWatch's retention periods"),
        ({"subnetIds": "subnet-0aaa1111bbbb22223"}, "deepcloud:subnetIds needs deepcloud:vpcId as well"),
        (
            {"vpcId": "vpc-0abc1234def567890", "subnetIds": "subnet-0aaa1111bbbb22223"},
            "deepcloud:subnetIds needs at least two private subnets",
        ),
        ({"vpcId": "my-vpc"}, "deepcloud:vpcId 'my-vpc' is not a VPC id"),
        ({"vpcCidr": "10.0.0.0/8"}, "deepcloud:vpcCidr '10.0.0.0/8' must be an IPv4 network from /16 to /22"),
        ({"azCount": "1"}, "deepcloud:azCount must be 2 to 6"),
        ({"rootVolumeGib": "20"}, "deepcloud:rootVolumeGib must be >= 30 GiB"),
        ({"trainerShmMib": "20000"}, "deepcloud:trainerShmMib must be >= 64 MiB and below trainerMemoryMib (14336)"),
        ({"modelArtifact": "s3://bucket/model.tar.gz"}, "deepcloud:modelArtifact 's3://bucket/model.tar.gz' must be"),
        ({"modelArtifact": "models/../data/x.tar.gz"}, "deepcloud:modelArtifact 'models/../data/x.tar.gz' must be"),
        ({"endpointInstanceType": "m5.large"}, "deepcloud:endpointInstanceType 'm5.large' is not a SageMaker"),
        ({"endpointInstanceCount": "5"}, "deepcloud:endpointInstanceCount must be between endpointMinInstances (2)"),
        ({"rollout": "canary"}, "deepcloud:rollout must be one of CANARY, LINEAR, ALL_AT_ONCE"),
        ({"rolloutStepInstances": "2"}, "deepcloud:rolloutStepInstances a CANARY step may be at most half the fleet"),
        (
            {"endpointMinInstances": "1", "endpointInstanceCount": "1"},
            "deepcloud:rolloutStepInstances a CANARY step may be at most half the fleet",
        ),
        ({"trainerImageTag": "has space"}, "deepcloud:trainerImageTag 'has space' is not a Docker image tag"),
        ({"servingImageTag": " "}, "deepcloud:servingImageTag is set but empty"),
        ({"endpointMode": "batch"}, "deepcloud:endpointMode must be one of realtime, serverless, async"),
        (
            {"serverlessMemoryMb": "1500"},
            "deepcloud:serverlessMemoryMb must be one of 1024, 2048, 3072, 4096, 5120, 6144",
        ),
        ({"serverlessMaxConcurrency": "201"}, "deepcloud:serverlessMaxConcurrency must be 1 to 200"),
        ({"asyncBacklogPerInstance": "0"}, "deepcloud:asyncBacklogPerInstance must be >= 1"),
        ({"networkProfile": "nat"}, "deepcloud:networkProfile must be one of endpoints, on-demand"),
        ({"monthlyBudget": "50"}, "deepcloud:monthlyBudget needs someone to alert: set deepcloud:budgetEmails"),
        ({"monthlyBudget": "-1"}, "deepcloud:monthlyBudget must be 0 (no budget) or a whole number"),
        ({"budgetEmails": "ops"}, "deepcloud:budgetEmails 'ops' is not an email address"),
        ({"budgetSnsTopicArn": "alerts"}, "deepcloud:budgetSnsTopicArn 'alerts' is not an SNS topic ARN"),
    ],
)
def test_errors_name_the_key(values: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load(values)
    assert str(error.value).startswith(message), str(error.value)
    assert "\n" not in str(error.value)


def test_region_is_required_and_named() -> None:
    with pytest.raises(ConfigError, match=r"^aws:region is not set: run `pulumi config set aws:region"):
        load({}, region=None)
    with pytest.raises(ConfigError, match=r"^aws:region 'Ireland' is not a region name"):
        load({}, region="Ireland")


def test_config_errors_stop_the_program_before_any_resource() -> None:
    """A Pulumi RunError is printed by `pulumi up` as one line, without a traceback."""
    with pytest.raises(ConfigError, match="deepcloud:gpuMaxInstances must be a whole number"):
        synthesize({"gpuMaxInstances": "many"})
    with pytest.raises(ConfigError, match="aws:region is not set"):
        synthesize({}, region="")


def _example() -> dict[str, object]:
    return yaml.safe_load(EXAMPLE.read_text())["config"]


def test_example_stack_config_documents_every_key_with_its_default() -> None:
    text = EXAMPLE.read_text()
    for key in KEYS:
        assert re.search(rf"^\s*(# )?{NAMESPACE}:{key}:", text, flags=re.M), f"{EXAMPLE.name} does not mention {key}"
    # the uncommented entries are exactly the defaults, in the form Pulumi hands them to the program
    as_pulumi = {
        k.removeprefix(f"{NAMESPACE}:"): json.dumps(v)
        if isinstance(v, list)
        else str(v).lower()
        if isinstance(v, bool)
        else str(v)
        for k, v in _example().items()
        if k.startswith(f"{NAMESPACE}:")
    }
    assert parse(as_pulumi, project="deepcloud", stack="dev", region=_example()["aws:region"]) == load({})


def test_example_comments_give_working_values() -> None:
    """The commented-out settings (existing VPC, model) are valid when uncommented."""
    text = EXAMPLE.read_text()
    commented = dict(re.findall(rf"^\s*# {NAMESPACE}:(\w+): (.+)$", text, flags=re.M))
    assert set(commented) == {"vpcId", "subnetIds", "modelArtifact", "budgetSnsTopicArn"}
    values = {k: json.dumps(yaml.safe_load(v)) if k == "subnetIds" else v for k, v in commented.items()}
    cfg = load({**values, "monthlyBudget": "25"})
    assert cfg.uses_existing_vpc
    assert cfg.model_artifact == "models/job-1/model.tar.gz"
    assert cfg.budget_sns_topic_arn == "arn:aws:sns:us-east-1:123456789012:deepcloud-budget"


def _run(args: list[str], path: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": path}
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_program_run_by_python_says_to_use_pulumi() -> None:
    result = _run([sys.executable, "infra/__main__.py"], os.environ.get("PATH", ""))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: infra/ is a Pulumi program: run `pulumi preview` or `pulumi up` in the repository root, not python"
    ]


def test_cli_without_pulumi_says_how_to_install_it(tmp_path) -> None:
    result = _run([sys.executable, "-m", "infra.cli", "preview"], str(tmp_path))  # a PATH with no pulumi on it
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line == (
        "error: the pulumi CLI is not installed (no `pulumi` on PATH): install it: curl -fsSL "
        "https://get.pulumi.com | sh (or brew install pulumi/tap/pulumi), then pulumi login (see README, "
        "'The AWS workflow')"
    )
    # make ... TARGET=aws says exactly the same (it used to word it another way, with another install command)
    home = tmp_path / "home"
    ops = subprocess.run(
        [sys.executable, "-m", "ops", "--target", "aws", "status"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PATH": str(tmp_path), "DEEPCLOUD_HOME": str(home)},
    )
    assert ops.stderr.strip().splitlines()[-1] == line, ops.stderr


def test_cli_attaches_the_policy_pack() -> None:
    from infra.cli import POLICY_PACK, command

    assert command("preview", "dev", "pulumi") == [
        "pulumi",
        "preview",
        "--policy-pack",
        str(POLICY_PACK),
        "--stack",
        "dev",
    ]
    assert command("destroy", None, "pulumi") == ["pulumi", "destroy"]


# --- names AWS accepts, rollouts the provider can wait for --------------------------------------------------------
def _sagemaker_name_pattern() -> re.Pattern[str]:
    """SageMaker's own rule for endpoint names (botocore's model of the EndpointName shape)."""
    import botocore.session

    shape = botocore.session.get_session().get_service_model("sagemaker").shape_for("EndpointName")
    return re.compile(shape.metadata["pattern"])


@pytest.mark.parametrize("stack", ["a" * 29 + "-b", "x" * 30 + "--y", "prod", "Team Alpha / GPU-" + "z" * 40])
def test_name_prefix_is_a_name_sagemaker_accepts(stack: str) -> None:
    """Cut to 40 characters *after* cleaning, a name could end in `-`, which SageMaker's pattern forbids."""
    cfg = parse({}, project="deepcloud", stack=stack, region="eu-west-1")
    assert len(cfg.name_prefix) <= 40
    assert _sagemaker_name_pattern().fullmatch(cfg.endpoint_name), cfg.endpoint_name


def test_each_endpoint_mode_has_its_own_endpoint_name() -> None:
    """SageMaker cannot turn a real-time endpoint into a serverless one in place; a change of mode is a new endpoint,
    created (under its own name) before Pulumi deletes the old one."""
    names = {
        mode: load({"endpointMode": mode}).endpoint_name for mode in ("realtime", "serverless", "async", "multi-model")
    }
    assert names == {
        "realtime": "deepcloud-dev",
        "serverless": "deepcloud-dev-serverless",
        "async": "deepcloud-dev-async",
        "multi-model": "deepcloud-dev-multi-model",
    }
    assert all(_sagemaker_name_pattern().fullmatch(name) for name in names.values())


def test_mode_specific_checks() -> None:
    """A serverless endpoint has no instances, so no canary to size; an async one rolls out ALL_AT_ONCE (its fleet may
    be at zero), so the canary's half-the-fleet rule does not apply to it either."""
    serverless = load(
        {"endpointMode": "serverless", "endpointMinInstances": "1", "endpointInstanceCount": "1", "bakeSeconds": "3600"}
    )
    assert serverless.endpoint_rollout == "CANARY"  # configured, unused: serverless endpoints have no guardrails
    queued = load({"endpointMode": "async", "endpointMinInstances": "1", "endpointInstanceCount": "1"})
    assert queued.endpoint_rollout == "ALL_AT_ONCE"
    assert queued.rollout_seconds == 600 + 2 * 600
    with pytest.raises(ConfigError, match="deepcloud:bakeSeconds 3600 makes a ALL_AT_ONCE rollout"):
        load({"endpointMode": "async", "bakeSeconds": "3600"})


def test_multi_model_endpoints_exist_without_a_model_on_cpu_instances_only() -> None:
    """Its models are objects under its S3 prefix, not a config value; SageMaker serves GPU multi-model endpoints only
    with its Triton container (docs/aws-behaviours.md S19), so GPU and accelerator types are refused, naming the key."""
    multi = load({"endpointMode": "multi-model"})
    assert multi.has_endpoint
    assert multi.model_artifact is None
    assert multi.multi_model_cache == "Enabled", "SageMaker's own default"
    assert load({"endpointMode": "multi-model", "multiModelCache": "Disabled"}).multi_model_cache == "Disabled"
    assert not load({}).has_endpoint
    assert load({"modelArtifact": "models/job-1/model.tar.gz"}).has_endpoint
    assert load({"endpointMode": "multi-model", "endpointInstanceType": "ml.c5.xlarge"}).endpoint_rollout == "CANARY"
    for kind in ("ml.g5.xlarge", "ml.p3.2xlarge", "ml.inf2.xlarge", "ml.trn1.2xlarge"):
        with pytest.raises(ConfigError) as error:
            load({"endpointMode": "multi-model", "endpointInstanceType": kind})
        assert str(error.value).startswith(f"deepcloud:endpointInstanceType {kind} cannot host a multi-model endpoint")
    for values, message in (
        ({"multiModelCache": "On"}, "deepcloud:multiModelCache must be one of Enabled, Disabled"),
        ({"modelArtifact": "models/job-1/model.tar.gz"}, "deepcloud:modelArtifact is not used by a multi-model"),
        ({"endpointMinInstances": "1", "endpointInstanceCount": "1"}, "deepcloud:rolloutStepInstances a CANARY"),
    ):
        with pytest.raises(ConfigError) as error:
            load({"endpointMode": "multi-model", **values})
        assert str(error.value).startswith(message), str(error.value)
        assert "\n" not in str(error.value)


def test_network_profiles() -> None:
    assert load({}).interface_endpoints
    assert not load({"networkProfile": "on-demand"}).interface_endpoints
    assert load({"networkProfile": "on-demand", "interfaceEndpointsUp": "true"}).interface_endpoints
    existing = load(
        {"vpcId": "vpc-0abc1234def567890", "subnetIds": "subnet-0aaa1111bbbb22223,subnet-0ccc3333dddd44445"}
    )
    assert not existing.interface_endpoints, "an existing VPC brings its own"


def test_rollout_duration_of_the_defaults() -> None:
    """CANARY: green fleet allowance + the canary's bake + the final bake before the old fleet goes."""
    cfg = load({})
    assert cfg.rollout_seconds == 600 + 600 + 600
    linear = load({"rollout": "LINEAR"})
    assert linear.rollout_seconds == 600 + 4 * 600 + 600, "one bake per step of 1 in a fleet of up to 4, then the last"


@pytest.mark.parametrize(
    ("values", "seconds"),
    [
        ({"bakeSeconds": "3600"}, 600 + 3600 + 3600),
        ({"rollout": "LINEAR", "bakeSeconds": "900"}, 600 + 4 * 900 + 900),
        (
            {
                "rollout": "ALL_AT_ONCE",
                "endpointMinInstances": "1",
                "endpointInstanceCount": "1",
                "bakeSeconds": "1800",
            },
            600 + 1800 + 1800,
        ),
    ],
)
def test_rollouts_longer_than_the_providers_wait_are_refused(values: dict[str, str], seconds: int) -> None:
    """terraform-provider-aws (which pulumi-aws wraps) waits 60 minutes for an endpoint update
    (internal/service/sagemaker endpoint.go, waitEndpointInService): past that `pulumi up` fails while SageMaker
    carries on with the rollout."""
    with pytest.raises(ConfigError) as error:
        load(values)
    message = str(error.value)
    assert message.startswith("deepcloud:bakeSeconds "), message
    assert f"{seconds} s" in message, "the computed duration"
    assert "3600 s" in message, "the provider's limit"
    assert "\n" not in message
