"""The stack infra/__main__.py synthesizes under mocks, in the three configurations: what exists and how it is set.

Each test reads the resources as registered (inputs as the engine sees them: camelCase, JSON-able) and asserts
the properties the stack must have, so a change that drops a setting fails here before it reaches `pulumi up`.
"""

from __future__ import annotations

import ast
import base64
import json
from pathlib import Path

import pytest

from infra.config import GPU_AMI_PARAMETER
from tests.infra.conftest import EXISTING_VPC, MODEL_KEY
from tests.infra.harness import REPO, Synthesis, policy_json, synthesize

COMPONENTS = ("ArtifactStore", "ImageRepos", "Network", "GpuCapacity", "SpotInterruption", "TrainingTask")
BUCKET = "aws:s3/bucket:Bucket"
SG = "aws:ec2/securityGroup:SecurityGroup"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
TASK = "aws:ecs/taskDefinition:TaskDefinition"


def settings_of(stack: Synthesis, kind: str, bucket: str) -> list:
    """The pulumi-aws 7 bucket-setting resources of `kind` whose bucket input comes from bucket `bucket`."""
    urn = stack.one(BUCKET, bucket).urn
    return [
        r
        for r in stack.of_type(f"aws:s3/{kind[0].lower() + kind[1:]}:{kind}")
        if urn in r.property_dependencies.get("bucket", [])
    ]


def statements(stack: Synthesis, role_suffix: str) -> dict[str, dict]:
    """The inline policy of the role named *role_suffix, by statement Sid."""
    policy = policy_json(stack.one(ROLE_POLICY, role_suffix).inputs["policy"])
    return {s["Sid"]: s for s in policy["Statement"]}


def container(stack: Synthesis) -> dict:
    (definition,) = json.loads(stack.one(TASK).inputs["containerDefinitions"])
    return definition


# --- composition ---------------------------------------------------------------------------------------------
def test_components_have_type_tokens_and_own_their_resources(any_stack: Synthesis) -> None:
    components = {
        r.type.removeprefix("deepcloud:index:"): r for r in any_stack.resources if r.type.startswith("deepcloud:index:")
    }
    expected = set(COMPONENTS) | ({"InferenceEndpoint"} if any_stack.stack == "prod" else set())
    assert set(components) == expected
    component_urns = {r.urn for r in components.values()}
    for r in any_stack.resources:
        if r.custom and not r.type.startswith("pulumi:providers:"):
            assert r.parent in component_urns, f"{r.type} {r.name} is not a child of a component (parent=self)"


def test_every_aws_resource_uses_the_provider_with_the_stack_tag(any_stack: Synthesis) -> None:
    provider = any_stack.one("pulumi:providers:aws")
    assert json.loads(provider.inputs["defaultTags"]) == {"tags": {"deepcloud:stack": f"deepcloud/{any_stack.stack}"}}
    assert provider.inputs["region"] == "eu-west-1"
    for r in any_stack.resources:
        if r.type.startswith("aws:"):
            assert r.provider.startswith(provider.urn + "::"), f"{r.name} does not use the tagged provider"


def test_no_resource_is_created_inside_apply() -> None:
    """A resource created in an apply callback is invisible to preview; no callback in infra/ constructs one."""
    for path in (REPO / "infra").rglob("*.py"):
        tree = ast.parse(path.read_text())
        functions = {f.name: f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)}
        for call in ast.walk(tree):
            if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "apply"):
                continue
            for arg in call.args:
                body = functions.get(arg.id) if isinstance(arg, ast.Name) else arg
                constructed = (
                    [
                        ast.unparse(c.func)
                        for c in ast.walk(body)
                        if isinstance(c, ast.Call) and ast.unparse(c.func).startswith("aws.")
                    ]
                    if body is not None
                    else []
                )
                assert not constructed, f"{path.name}:{call.lineno} creates {constructed} inside apply()"


OPS_OUTPUTS = (
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
    "endpoint_config_name",
    "endpoint_instance_type",
    "endpoint_max_instances",
    "access_logs_bucket",
    "force_destroy",
    "protect_data_bucket",
    "endpoint_mode",
    "async_prefix",
    "network_profile",
    "interface_endpoints_up",
    "monthly_budget",
    "budget_name",
    "models_prefix",
)
"""The outputs ops/aws/stack.py (StackOutputs) reads: `make train` and `make deploy TARGET=aws` need every one."""


def test_stack_outputs_give_ops_every_name(default_stack: Synthesis) -> None:
    outputs = default_stack.outputs
    assert set(OPS_OUTPUTS) <= set(outputs)
    training_role = default_stack.one("aws:iam/role:Role", "training-sagemaker")
    assert outputs["training_role_arn"] == training_role.outputs["arn"]
    store = {r.name: r for r in default_stack.of_type(BUCKET)}
    assert outputs["data_bucket"] == store["store-data"].outputs["bucket"]
    assert outputs["artifacts_bucket"] == store["store-artifacts"].outputs["bucket"]
    assert outputs["kms_key_arn"] == default_stack.one("aws:kms/key:Key").outputs["arn"]
    assert outputs["trainer_repository_url"].endswith(
        default_stack.one("aws:ecr/repository:Repository", "trainer").outputs["name"]
    )
    assert outputs["cluster_name"] == default_stack.one("aws:ecs/cluster:Cluster").outputs["name"]
    provider = default_stack.one("aws:ecs/capacityProvider:CapacityProvider")
    assert outputs["capacity_provider_name"] == provider.outputs["name"]
    assert outputs["task_definition_family"] == "deepcloud-dev-trainer"
    assert outputs["security_group_id"] == default_stack.one(SG, "workload").id
    assert len(outputs["subnet_ids"]) == 2
    assert outputs["region"] == "eu-west-1"
    assert outputs["endpoint_name"] is None
    assert outputs["model_data_url"] is None
    assert (outputs["endpoint_instance_type"], outputs["endpoint_max_instances"]) == ("ml.m5.large", 4), (
        "ops checks the endpoint quota before the first deploy, with no endpoint yet"
    )


def test_synthesizes_under_mocks_in_under_ten_seconds(capsys: pytest.CaptureFixture[str]) -> None:
    """Fast enough to run on every change; measured on a fresh run of the model configuration (the largest)."""
    stack = synthesize({"modelArtifact": MODEL_KEY}, stack="timing")
    with capsys.disabled():
        print(f"\n[infra] synthesized {len(stack.resources)} resources under mocks in {stack.seconds:.2f} s")
    assert stack.seconds < 10


# --- ArtifactStore -------------------------------------------------------------------------------------------
def test_kms_key_rotates_and_has_an_explicit_policy(default_stack: Synthesis) -> None:
    key = default_stack.one("aws:kms/key:Key")
    assert key.inputs["enableKeyRotation"] is True
    policy = policy_json(key.inputs["policy"])
    sids = {s["Sid"]: s for s in policy["Statement"]}
    assert sids["AccountAdministersKey"]["Principal"] == {"AWS": "arn:aws:iam::123456789012:root"}
    assert sids["CloudWatchLogsEncrypt"]["Principal"] == {"Service": "logs.eu-west-1.amazonaws.com"}
    assert default_stack.one("aws:kms/alias:Alias").inputs["name"] == "alias/deepcloud-dev"


@pytest.mark.parametrize("bucket", ["store-data", "store-artifacts", "store-access-logs"])
def test_every_bucket_is_private_versioned_tls_only_and_lifecycled(default_stack: Synthesis, bucket: str) -> None:
    (block,) = settings_of(default_stack, "BucketPublicAccessBlock", bucket)
    assert all(
        block.inputs[flag] is True
        for flag in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    )
    (owners,) = settings_of(default_stack, "BucketOwnershipControls", bucket)
    assert owners.inputs["rule"] == {"objectOwnership": "BucketOwnerEnforced"}
    (versioning,) = settings_of(default_stack, "BucketVersioning", bucket)
    assert versioning.inputs["versioningConfiguration"]["status"] == "Enabled"
    (policy,) = settings_of(default_stack, "BucketPolicy", bucket)
    deny = policy_json(policy.inputs["policy"])["Statement"][0]
    arn = default_stack.one(BUCKET, bucket).outputs["arn"]
    assert deny["Effect"] == "Deny"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert deny["Resource"] == [arn, f"{arn}/*"]
    assert block.urn in policy.dependencies, "the policy must wait for the public access block"
    (lifecycle,) = settings_of(default_stack, "BucketLifecycleConfiguration", bucket)
    rules = {r["id"]: r for r in lifecycle.inputs["rules"]}
    assert rules["abort-incomplete-multipart"]["abortIncompleteMultipartUpload"] == {"daysAfterInitiation": 7}
    assert versioning.urn in lifecycle.dependencies


def test_data_and_artifacts_use_the_kms_key_and_log_to_the_log_bucket(default_stack: Synthesis) -> None:
    key_arn = default_stack.one("aws:kms/key:Key").outputs["arn"]
    logs_bucket = default_stack.one(BUCKET, "access-logs")
    for bucket in ("store-data", "store-artifacts"):
        (sse,) = settings_of(default_stack, "BucketServerSideEncryptionConfiguration", bucket)
        assert sse.inputs["rules"] == [
            {
                "applyServerSideEncryptionByDefault": {"sseAlgorithm": "aws:kms", "kmsMasterKeyId": key_arn},
                "bucketKeyEnabled": True,
            }
        ]
        (logging,) = settings_of(default_stack, "BucketLogging", bucket)
        assert logging.inputs["targetBucket"] == logs_bucket.id
    (sse,) = settings_of(default_stack, "BucketServerSideEncryptionConfiguration", "store-access-logs")
    assert sse.inputs["rules"][0]["applyServerSideEncryptionByDefault"] == {"sseAlgorithm": "AES256"}
    assert not settings_of(default_stack, "BucketLogging", "store-access-logs")
    (policy,) = settings_of(default_stack, "BucketPolicy", "store-access-logs")
    delivery = policy_json(policy.inputs["policy"])["Statement"][1]
    assert delivery["Principal"] == {"Service": "logging.s3.amazonaws.com"}
    assert sorted(delivery["Condition"]["ArnLike"]["aws:SourceArn"]) == sorted(
        default_stack.one(BUCKET, name).outputs["arn"] for name in ("store-data", "store-artifacts")
    )


def test_noncurrent_checkpoints_expire(default_stack: Synthesis) -> None:
    (lifecycle,) = settings_of(default_stack, "BucketLifecycleConfiguration", "store-artifacts")
    rules = {r["id"]: r for r in lifecycle.inputs["rules"]}
    assert rules["noncurrent-checkpoints"]["filter"] == {"prefix": "checkpoints/"}
    assert rules["noncurrent-checkpoints"]["noncurrentVersionExpiration"] == {"noncurrentDays": 7}


def test_data_bucket_is_protected_and_nothing_is_force_destroyed_by_default(default_stack: Synthesis) -> None:
    """Protected: the data bucket, its settings but its logging, and the key (and alias) its objects need."""
    buckets = {r.name: r for r in default_stack.of_type(BUCKET)}
    protected = {r.name for r in default_stack.resources if r.protect}
    data_settings = {r.name for r in default_stack.resources if r.name.startswith("store-data-")}
    assert len(data_settings) == 7  # ownership, public access, encryption, versioning, lifecycle, policy, logging
    assert protected == {"store-data", "store-key", "store-key-alias"} | data_settings - {"store-data-logging"}
    assert all(b.inputs["forceDestroy"] is False for b in buckets.values())
    assert all(r.inputs["forceDelete"] is False for r in default_stack.of_type("aws:ecr/repository:Repository"))


def test_config_lets_destroy_empty_buckets_and_repositories() -> None:
    stack = synthesize({"forceDestroy": "true", "protectDataBucket": "false"}, stack="scratch")
    buckets = {r.name: r for r in stack.of_type(BUCKET)}
    assert not [r.name for r in stack.resources if r.protect]
    assert all(b.inputs["forceDestroy"] is True for b in buckets.values())
    assert all(r.inputs["forceDelete"] is True for r in stack.of_type("aws:ecr/repository:Repository"))
    protected_only = synthesize({"forceDestroy": "true"}, stack="scratch")
    data = protected_only.one(BUCKET, "store-data")
    assert data.protect is True
    assert data.inputs["forceDestroy"] is False, "a protected bucket is never force-emptied"


# --- ImageRepos ----------------------------------------------------------------------------------------------
def test_repositories_scan_are_immutable_encrypted_and_lifecycled(default_stack: Synthesis) -> None:
    key_arn = default_stack.one("aws:kms/key:Key").outputs["arn"]
    repos = default_stack.of_type("aws:ecr/repository:Repository")
    assert sorted(r.name for r in repos) == ["images-serving", "images-trainer"]
    for repo in repos:
        assert repo.inputs["imageTagMutability"] == "IMMUTABLE"
        assert repo.inputs["imageScanningConfiguration"] == {"scanOnPush": True}
        assert repo.inputs["encryptionConfigurations"] == [{"encryptionType": "KMS", "kmsKey": key_arn}]
        (policy,) = [
            p
            for p in default_stack.of_type("aws:ecr/lifecyclePolicy:LifecyclePolicy")
            if repo.urn in p.property_dependencies["repository"]
        ]
        rules = json.loads(policy.inputs["policy"])["rules"]
        assert [r["selection"]["tagStatus"] for r in rules] == ["untagged", "any"]


# --- Network -------------------------------------------------------------------------------------------------
def test_managed_vpc_is_private_in_two_zones_with_endpoints(default_stack: Synthesis) -> None:
    assert default_stack.one("aws:ec2/vpc:Vpc").inputs["cidrBlock"] == "10.42.0.0/16"
    subnets = sorted(default_stack.of_type("aws:ec2/subnet:Subnet"), key=lambda s: s.name)  # registration order varies
    assert len({s.inputs["availabilityZone"] for s in subnets}) == 2
    assert [s.inputs["cidrBlock"] for s in subnets] == ["10.42.0.0/20", "10.42.16.0/20"]
    assert all(s.inputs["mapPublicIpOnLaunch"] is False for s in subnets)
    for kind in ("internetGateway:InternetGateway", "natGateway:NatGateway", "eip:Eip"):
        assert not default_stack.of_type(f"aws:ec2/{kind}"), f"the managed VPC must have no {kind}"
    endpoints = {
        e.inputs["serviceName"].removeprefix("com.amazonaws.eu-west-1."): e
        for e in default_stack.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")
    }
    assert set(endpoints) == {"s3", "ecr.api", "ecr.dkr", "logs", "sts", "ecs", "ecs-agent", "ecs-telemetry"}
    assert endpoints["s3"].inputs["vpcEndpointType"] == "Gateway"
    assert all(e.inputs["privateDnsEnabled"] is True for name, e in endpoints.items() if name != "s3")
    default_sg = default_stack.one("aws:ec2/defaultSecurityGroup:DefaultSecurityGroup")
    assert default_sg.inputs["ingress"] == []
    assert default_sg.inputs["egress"] == []


def test_security_groups_admit_nothing_from_the_internet(any_stack: Synthesis) -> None:
    for group in any_stack.of_type(SG):
        for rule in group.inputs.get("ingress", []):
            assert "0.0.0.0/0" not in rule.get("cidrBlocks", []), f"{group.name} is open to the internet"
    workload = any_stack.one(SG, "workload")
    assert [r.get("self") for r in workload.inputs["ingress"]] == [True]


def test_the_instances_of_one_training_job_reach_each_other(any_stack: Synthesis) -> None:
    """A SageMaker job on several instances runs them all in the workload group: "In distributed training, you must
    allow communication between the different containers in the same training job ... a rule for your security group
    that allows inbound connections between members of the same security group" (SageMaker guide, "Give SageMaker
    Training Jobs Access to Resources in Your Amazon VPC"), and inter-container traffic encryption adds inbound and
    outbound rules for UDP 500 and IP protocol 50 (ESP) within the group ("Protect Communications Between ML Compute
    Instances in a Distributed Training Job"). One all-protocols self rule each way holds both, and nothing else."""
    workload = any_stack.one(SG, "workload").inputs
    for direction in ("ingress", "egress"):
        own = [r for r in workload[direction] if r.get("self")]
        assert [(r["protocol"], r["fromPort"], r["toPort"]) for r in own] == [("-1", 0, 0)], direction
        assert not own[0].get("cidrBlocks"), f"the {direction} self rule admits only the group"


def test_existing_vpc_is_used_as_given(existing_vpc_stack: Synthesis) -> None:
    subnets = json.loads(EXISTING_VPC["subnetIds"])
    for kind in ("vpc:Vpc", "subnet:Subnet", "vpcEndpoint:VpcEndpoint", "routeTable:RouteTable"):
        assert not existing_vpc_stack.of_type(f"aws:ec2/{kind}"), f"an existing VPC gets no new {kind}"
    assert existing_vpc_stack.one(SG, "workload").inputs["vpcId"] == EXISTING_VPC["vpcId"]
    assert existing_vpc_stack.one("aws:autoscaling/group:Group").inputs["vpcZoneIdentifiers"] == subnets
    assert existing_vpc_stack.outputs["subnet_ids"] == subnets
    assert existing_vpc_stack.outputs["vpc_id"] == EXISTING_VPC["vpcId"]


# --- GpuCapacity ---------------------------------------------------------------------------------------------
def test_launch_template_is_hardened_gpu_ami(default_stack: Synthesis) -> None:
    template = default_stack.one("aws:ec2/launchTemplate:LaunchTemplate").inputs
    assert template["imageId"] == f"resolve:ssm:{GPU_AMI_PARAMETER}"
    assert template["metadataOptions"]["httpTokens"] == "required"
    assert template["metadataOptions"]["httpPutResponseHopLimit"] == 1
    assert template["networkInterfaces"][0]["associatePublicIpAddress"] == "false"
    (volume,) = template["blockDeviceMappings"]
    assert volume["ebs"]["encrypted"] == "true"
    assert volume["ebs"]["volumeSize"] == 100
    profile = default_stack.one("aws:iam/instanceProfile:InstanceProfile")
    assert template["iamInstanceProfile"] == {"arn": profile.outputs["arn"]}
    cluster = default_stack.one("aws:ecs/cluster:Cluster").outputs["name"]
    script = base64.b64decode(template["userData"]).decode()
    assert f"ECS_CLUSTER={cluster}" in script
    assert "ECS_ENABLE_SPOT_INSTANCE_DRAINING=true" in script
    assert {spec["resourceType"] for spec in template["tagSpecifications"]} == {"instance", "volume"}


def test_auto_scaling_group_scales_to_zero_on_spot(default_stack: Synthesis) -> None:
    group = default_stack.one("aws:autoscaling/group:Group")
    props = group.inputs
    assert props["minSize"] == 0
    assert props["maxSize"] == 2
    assert "desiredCapacity" not in props
    assert "desiredCapacity" in group.ignore_changes
    assert props["vpcZoneIdentifiers"] == default_stack.outputs["subnet_ids"]
    policy = props["mixedInstancesPolicy"]
    assert [o["instanceType"] for o in policy["launchTemplate"]["overrides"]] == [
        "g5.xlarge",
        "g6.xlarge",
        "g4dn.xlarge",
        "g5.2xlarge",
    ]
    assert policy["instancesDistribution"] == {
        "onDemandBaseCapacity": 0,
        "onDemandPercentageAboveBaseCapacity": 0,
        "onDemandAllocationStrategy": "prioritized",
        "spotAllocationStrategy": "capacity-optimized",
    }
    assert props["protectFromScaleIn"] is True
    assert {t["key"]: t["propagateAtLaunch"] for t in props["tags"]} == {
        "AmazonECSManaged": True,
        "deepcloud:stack": True,
    }


def test_capacity_provider_manages_scaling_and_is_the_default(default_stack: Synthesis) -> None:
    provider = default_stack.one("aws:ecs/capacityProvider:CapacityProvider")
    asg = provider.inputs["autoScalingGroupProvider"]
    assert asg["autoScalingGroupArn"] == default_stack.one("aws:autoscaling/group:Group").outputs["arn"]
    assert asg["managedTerminationProtection"] == "ENABLED"
    assert asg["managedScaling"]["status"] == "ENABLED"
    assert asg["managedScaling"]["targetCapacity"] == 100
    cluster = default_stack.one("aws:ecs/cluster:Cluster")
    assert cluster.inputs["settings"] == [{"name": "containerInsights", "value": "enabled"}]
    binding = default_stack.one("aws:ecs/clusterCapacityProviders:ClusterCapacityProviders").inputs
    assert binding["clusterName"] == cluster.outputs["name"]
    assert binding["defaultCapacityProviderStrategies"] == [
        {"capacityProvider": provider.outputs["name"], "weight": 1, "base": 0}
    ]


def test_a_fresh_account_gets_the_ecs_service_linked_role_before_the_capacity_provider() -> None:
    """CreateCluster makes AWSServiceRoleForECS asynchronously in an account that never used ECS, and
    CreateCapacityProvider fails until it exists ("ECS Service Linked Role does not exist"; the provider retries only
    CreateCluster, on "Unable to assume the service linked role": terraform-provider-aws ecs/cluster.go)."""
    stack = synthesize({}, stack="fresh", roles=())
    role = stack.one("aws:iam/serviceLinkedRole:ServiceLinkedRole")
    assert role.inputs["awsServiceName"] == "ecs.amazonaws.com"
    assert role.retain_on_delete, "other clusters in the account use it; a later run no longer declares it"
    cluster = stack.one("aws:ecs/cluster:Cluster")
    assert role.urn in cluster.dependencies
    provider = stack.one("aws:ecs/capacityProvider:CapacityProvider")
    assert cluster.urn in provider.dependencies, "the capacity provider waits for the cluster, and so for the role"
    assert "aws:iam/getRoles:getRoles" in stack.invokes


def test_an_account_that_has_the_role_does_not_create_it_again(default_stack: Synthesis) -> None:
    """IAM refuses a second service-linked role for a service ("has been taken in this account")."""
    assert not default_stack.of_type("aws:iam/serviceLinkedRole:ServiceLinkedRole")
    cluster = default_stack.one("aws:ecs/cluster:Cluster")
    assert cluster.urn in default_stack.one("aws:ecs/capacityProvider:CapacityProvider").dependencies


def test_no_capacity_rebalancing_with_managed_termination_protection(default_stack: Synthesis) -> None:
    """A rebalance replacement would idle beside the protected instance that runs the task (gpu_capacity.py)."""
    group = default_stack.one("aws:autoscaling/group:Group").inputs
    assert group["capacityRebalance"] is False
    provider = default_stack.one("aws:ecs/capacityProvider:CapacityProvider").inputs
    assert provider["autoScalingGroupProvider"]["managedTerminationProtection"] == "ENABLED"


# --- TrainingTask --------------------------------------------------------------------------------------------
def test_trainer_task_definition(default_stack: Synthesis) -> None:
    task = default_stack.one(TASK).inputs
    assert task["family"] == "deepcloud-dev-trainer"
    assert task["networkMode"] == "awsvpc"
    assert task["requiresCompatibilities"] == ["EC2"]
    c = container(default_stack)
    repo = default_stack.one("aws:ecr/repository:Repository", "trainer").outputs["repositoryUrl"]
    assert c["image"] == f"{repo}:0.1.0"
    assert c["command"] == ["train"]
    assert c["resourceRequirements"] == [{"type": "GPU", "value": "1"}]
    assert c["stopTimeout"] == 120
    assert c["privileged"] is False
    assert c["readonlyRootFilesystem"] is True
    assert {m["containerPath"] for m in c["mountPoints"]} == {"/opt/ml", "/tmp"}
    assert all(v["dockerVolumeConfiguration"]["scope"] == "task" for v in task["volumes"])
    logs = default_stack.one("aws:cloudwatch/logGroup:LogGroup", "training-logs")
    assert logs.inputs["name"] == "/deepcloud/deepcloud-dev/trainer"
    assert c["logConfiguration"]["options"]["awslogs-group"] == logs.outputs["name"]
    assert logs.inputs["retentionInDays"] == 30
    assert logs.inputs["kmsKeyId"] == default_stack.one("aws:kms/key:Key").outputs["arn"]


def test_the_readmes_log_group_is_the_one_the_program_creates(default_stack: Synthesis) -> None:
    """README, The AWS workflow, shows `make train`'s output with long names cut to `…`."""
    import re

    (shown,) = re.findall(r"^\s*logs\s+(\S+) trainer/trainer/", (REPO / "README.md").read_text(), flags=re.M)
    created = default_stack.one("aws:cloudwatch/logGroup:LogGroup", "training-logs").inputs["name"]
    assert re.fullmatch(re.escape(shown).replace("…", "[^/]+"), created), (shown, created)


def test_task_role_is_not_the_execution_role_and_each_is_scoped(default_stack: Synthesis) -> None:
    task = default_stack.one(TASK).inputs
    roles = {r.name: r.outputs["arn"] for r in default_stack.of_type("aws:iam/role:Role")}
    assert task["taskRoleArn"] == roles["training-task"]
    assert task["executionRoleArn"] == roles["training-execution"]
    data = default_stack.one(BUCKET, "store-data").outputs["arn"]
    artifacts = default_stack.one(BUCKET, "store-artifacts").outputs["arn"]
    code = statements(default_stack, "training-task")
    assert code["ReadData"]["Action"] == ["s3:GetObject"]
    assert code["ReadData"]["Resource"] == [f"{data}/*"]
    assert "s3:PutObject" in code["ReadWriteArtifacts"]["Action"]
    assert code["ReadWriteArtifacts"]["Resource"] == [f"{artifacts}/{p}*" for p in ("models/", "checkpoints/", "runs/")]
    assert not any(data in str(s["Resource"]) for s in code.values() if "s3:PutObject" in s["Action"])
    trainer_repo = default_stack.one("aws:ecr/repository:Repository", "trainer").outputs["arn"]
    execution = statements(default_stack, "training-execution")
    assert execution["EcrPull"]["Resource"] == [trainer_repo]
    trust = policy_json(default_stack.one("aws:iam/role:Role", "training-task").inputs["assumeRolePolicy"])
    assert trust["Statement"][0]["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
    assert trust["Statement"][0]["Condition"] == {"StringEquals": {"aws:SourceAccount": "123456789012"}}


def test_sagemaker_training_role_has_the_task_role_data_access(default_stack: Synthesis) -> None:
    """ops' BACKEND=sagemaker runs the trainer image as a training job under this role."""
    code = statements(default_stack, "training-task")
    job = statements(default_stack, "training-sagemaker")
    assert {sid: job[sid] for sid in code} == code
    assert job["WriteLogs"]["Resource"][0].endswith(":log-group:/aws/sagemaker/TrainingJobs")
    assert job["EcrPull"] == statements(default_stack, "training-execution")["EcrPull"]
    assert job["VpcInterfaces"]["Resource"][0].endswith(":network-interface/*")
    trust = policy_json(default_stack.one("aws:iam/role:Role", "training-sagemaker").inputs["assumeRolePolicy"])
    assert trust["Statement"][0]["Principal"] == {"Service": "sagemaker.amazonaws.com"}


# --- InferenceEndpoint ---------------------------------------------------------------------------------------
def test_no_endpoint_without_a_model(default_stack: Synthesis, existing_vpc_stack: Synthesis) -> None:
    for stack in (default_stack, existing_vpc_stack):
        assert not [r for r in stack.resources if r.type.startswith("aws:sagemaker/")]


def test_model_and_endpoint_config_are_auto_named_and_isolated(model_stack: Synthesis) -> None:
    model = model_stack.one("aws:sagemaker/model:Model")
    config = model_stack.one("aws:sagemaker/endpointConfiguration:EndpointConfiguration")
    assert "name" not in model.inputs, "an explicit name blocks create-before-delete"
    assert "name" not in config.inputs, "an explicit name blocks create-before-delete"
    assert model.inputs["enableNetworkIsolation"] is True
    assert model.inputs["vpcConfig"] == {
        "subnets": model_stack.outputs["subnet_ids"],
        "securityGroupIds": [model_stack.outputs["security_group_id"]],
    }
    artifacts = model_stack.outputs["artifacts_bucket"]
    assert model.inputs["primaryContainer"]["modelDataUrl"] == f"s3://{artifacts}/{MODEL_KEY}"
    assert model.inputs["primaryContainer"]["image"] == f"{model_stack.outputs['serving_repository_url']}:0.1.0"
    assert model_stack.one(ROLE_POLICY, "serving-sagemaker").urn in model.dependencies
    assert config.inputs["kmsKeyArn"] == model_stack.outputs["kms_key_arn"]
    assert config.inputs["productionVariants"] == [
        {
            "variantName": "AllTraffic",
            "modelName": model.outputs["name"],
            "instanceType": "ml.m5.large",
            "initialInstanceCount": 2,
        }
    ]
    assert model_stack.outputs["model_data_url"] == f"s3://{artifacts}/{MODEL_KEY}"
    assert model_stack.outputs["endpoint_name"] == "deepcloud-prod"
    assert model_stack.outputs["endpoint_config_name"] == config.outputs["name"], (
        "what ops checks DescribeEndpoint.EndpointConfigName against after a rollout"
    )


def test_endpoint_rolls_out_blue_green_with_alarm_rollback(model_stack: Synthesis) -> None:
    endpoint = model_stack.one("aws:sagemaker/endpoint:Endpoint")
    assert endpoint.inputs["name"] == "deepcloud-prod" == model_stack.outputs["endpoint_name"]
    assert (
        endpoint.inputs["endpointConfigName"]
        == model_stack.one("aws:sagemaker/endpointConfiguration:EndpointConfiguration").outputs["name"]
    )
    policy = endpoint.inputs["deploymentConfig"]["blueGreenUpdatePolicy"]
    assert policy["trafficRoutingConfiguration"] == {
        "type": "CANARY",
        "waitIntervalInSeconds": 600,
        "canarySize": {"type": "INSTANCE_COUNT", "value": 1},
    }
    alarms = {a.outputs["name"]: a.inputs for a in model_stack.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")}
    rollback = endpoint.inputs["deploymentConfig"]["autoRollbackConfiguration"]["alarms"]
    assert sorted(a["alarmName"] for a in rollback) == sorted(alarms)
    assert {a["metricName"] for a in alarms.values()} == {"Invocation5XXErrors", "ModelLatency"}
    for alarm in alarms.values():
        assert alarm["dimensions"] == {"EndpointName": "deepcloud-prod", "VariantName": "AllTraffic"}
    latency = next(a for a in alarms.values() if a["metricName"] == "ModelLatency")
    assert latency["threshold"] == 1_000_000  # 1000 ms in ModelLatency's microseconds


def test_endpoint_scales_on_invocations_per_instance(model_stack: Synthesis) -> None:
    target = model_stack.one("aws:appautoscaling/target:Target").inputs
    assert target["resourceId"] == "endpoint/deepcloud-prod/variant/AllTraffic"
    assert (target["minCapacity"], target["maxCapacity"]) == (2, 4)
    scaling = model_stack.one("aws:appautoscaling/policy:Policy").inputs
    tracking = scaling["targetTrackingScalingPolicyConfiguration"]
    assert tracking["targetValue"] == 100
    assert tracking["predefinedMetricSpecification"]["predefinedMetricType"] == "SageMakerVariantInvocationsPerInstance"


def test_sagemaker_role_reads_only_trained_models_and_its_image(model_stack: Synthesis) -> None:
    """models/ rather than the one run's folder: a replaced model is retained, and one a rollback put back into
    service must stay downloadable when an instance is launched for it (tests/infra/test_rollout.py)."""
    allowed = statements(model_stack, "serving-sagemaker")
    artifacts = model_stack.one(BUCKET, "store-artifacts").outputs["arn"]
    assert allowed["ReadModels"]["Resource"] == [f"{artifacts}/models/*"]
    assert allowed["ListModels"]["Condition"] == {"StringLike": {"s3:prefix": ["models/*"]}}
    data = model_stack.one(BUCKET, "store-data").outputs["arn"]
    s3 = [s for s in allowed.values() if any(a.startswith("s3:") for a in s["Action"])]
    assert [s["Sid"] for s in s3] == ["ReadModels", "ListModels"], "no other S3 access"
    assert not any(data in str(s["Resource"]) for s in allowed.values()), "no access to the training data"
    assert not any(a.startswith("s3:Put") or a.startswith("s3:Delete") for s in s3 for a in s["Action"])
    serving_repo = model_stack.one("aws:ecr/repository:Repository", "serving").outputs["arn"]
    assert allowed["EcrPull"]["Resource"] == [serving_repo]
    assert allowed["WriteLogs"]["Resource"][0].endswith(":log-group:/aws/sagemaker/Endpoints/deepcloud-prod")
    alarm_arns = sorted(a.outputs["arn"] for a in model_stack.of_type("aws:cloudwatch/metricAlarm:MetricAlarm"))
    assert sorted(allowed["ReadRollbackAlarms"]["Resource"]) == alarm_arns
    trust = policy_json(model_stack.one("aws:iam/role:Role", "serving-sagemaker").inputs["assumeRolePolicy"])
    assert trust["Statement"][0]["Principal"] == {"Service": "sagemaker.amazonaws.com"}


def test_instance_storage_endpoints_leave_out_the_kms_key() -> None:
    """SageMaker rejects KmsKeyId for instance types with NVMe instance storage (ml.g5 among them)."""
    stack = synthesize({"modelArtifact": MODEL_KEY, "endpointInstanceType": "ml.g5.xlarge"}, stack="gpu")
    config = stack.one("aws:sagemaker/endpointConfiguration:EndpointConfiguration").inputs
    assert "kmsKeyArn" not in config
    assert config["productionVariants"][0]["instanceType"] == "ml.g5.xlarge"


def test_linear_and_all_at_once_rollouts() -> None:
    linear = synthesize({"modelArtifact": MODEL_KEY, "rollout": "LINEAR"}, stack="linear")
    routing = linear.one("aws:sagemaker/endpoint:Endpoint").inputs["deploymentConfig"]["blueGreenUpdatePolicy"]
    assert routing["trafficRoutingConfiguration"]["linearStepSize"] == {"type": "INSTANCE_COUNT", "value": 1}
    at_once = synthesize(
        {
            "modelArtifact": MODEL_KEY,
            "rollout": "ALL_AT_ONCE",
            "endpointMinInstances": "1",
            "endpointInstanceCount": "1",
        },
        stack="once",
    )
    endpoint = at_once.one("aws:sagemaker/endpoint:Endpoint").inputs["deploymentConfig"]
    assert endpoint["blueGreenUpdatePolicy"]["trafficRoutingConfiguration"]["type"] == "ALL_AT_ONCE"
    assert len(endpoint["autoRollbackConfiguration"]["alarms"]) == 2


def test_infra_imports_only_pulumi_and_its_own_package() -> None:
    """The room's rule (GUIDE.md): infra/ may import pulumi and pulumi_aws (and pulumi_policy for the pack); the
    Lambda code under infra/functions/ runs in AWS Lambda's Python runtime, which provides boto3 and nothing else."""
    functions = REPO / "infra" / "functions"
    for path in (REPO / "infra").rglob("*.py"):
        lambda_code = functions in path.parents
        allowed = {"boto3", "botocore"} if lambda_code else {"pulumi", "pulumi_aws", "pulumi_policy", "infra"}
        if path == REPO / "infra" / "cli.py":
            allowed = allowed | {"yaml"}  # Pulumi.<stack>.yaml, read by `cost`; PyYAML is a dependency of pulumi
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
            )
            for name in names:
                top = name.split(".")[0]
                assert top in allowed or top in _stdlib(), f"{path.relative_to(REPO)} imports {name}"


def _stdlib() -> frozenset[str]:
    import sys

    return frozenset(sys.stdlib_module_names)


def test_pulumi_yaml_runs_infra_in_the_project_venv() -> None:
    import yaml

    project = yaml.safe_load((REPO / "Pulumi.yaml").read_text())
    assert project["name"] == "deepcloud"
    assert project["main"] == "infra/"
    assert project["runtime"] == {"name": "python", "options": {"toolchain": "pip", "virtualenv": ".venv"}}
    assert Path(REPO / project["main"] / "__main__.py").is_file()


# --- endpoint modes (deepcloud:endpointMode) -----------------------------------------------------------------------
CONFIG = "aws:sagemaker/endpointConfiguration:EndpointConfiguration"


def test_serverless_endpoint_bills_per_request_outside_the_vpc(serverless_stack: Synthesis) -> None:
    """ServerlessConfig (memory, concurrency) and nothing SageMaker refuses for serverless: no instance type or count,
    no VPC or network isolation, no deployment guardrails (SageMaker guide, "Serverless Inference";
    docs/aws-behaviours.md S13)."""
    model = serverless_stack.one("aws:sagemaker/model:Model")
    assert model.name == "serving-serverless-model"
    assert "vpcConfig" not in model.inputs
    assert model.inputs["enableNetworkIsolation"] is False
    (variant,) = serverless_stack.one(CONFIG).inputs["productionVariants"]
    assert variant["serverlessConfig"] == {"memorySizeInMb": 3072, "maxConcurrency": 8}
    assert "instanceType" not in variant
    assert "initialInstanceCount" not in variant
    assert "kmsKeyArn" not in serverless_stack.one(CONFIG).inputs
    endpoint = serverless_stack.one("aws:sagemaker/endpoint:Endpoint")
    assert endpoint.inputs["name"] == "deepcloud-lean-serverless" == serverless_stack.outputs["endpoint_name"]
    assert "deploymentConfig" not in endpoint.inputs
    for kind in ("aws:cloudwatch/metricAlarm:MetricAlarm", "aws:appautoscaling/target:Target"):
        assert not serverless_stack.of_type(kind), f"a serverless endpoint has no {kind}: nothing bills while idle"
    allowed = statements(serverless_stack, "serving-serverless-sagemaker")
    assert "VpcInterfaces" not in allowed
    assert "EncryptVolumes" not in allowed
    assert allowed["ReadModels"]["Resource"][0].endswith("/models/*")
    assert serverless_stack.outputs["endpoint_mode"] == "serverless"


def test_async_endpoint_writes_results_with_the_key_and_scales_to_zero(async_stack: Synthesis) -> None:
    """AsyncInferenceConfig output and failure paths under async/ of the artifacts bucket, encrypted with the stack's
    key; auto scaling between 0 and endpointMaxInstances (SageMaker guide, "Autoscale an asynchronous endpoint")."""
    artifacts, key = async_stack.outputs["artifacts_bucket"], async_stack.outputs["kms_key_arn"]
    config = async_stack.one(CONFIG).inputs
    assert config["asyncInferenceConfig"]["outputConfig"] == {
        "s3OutputPath": f"s3://{artifacts}/async/output/",
        "s3FailurePath": f"s3://{artifacts}/async/failures/",
        "kmsKeyId": key,
    }
    assert config["productionVariants"][0]["initialInstanceCount"] == 1, "SageMaker's minimum; scaling takes it to 0"
    assert config["kmsKeyArn"] == key
    model = async_stack.one("aws:sagemaker/model:Model").inputs
    assert model["enableNetworkIsolation"] is True
    assert model["vpcConfig"]["subnets"]
    endpoint = async_stack.one("aws:sagemaker/endpoint:Endpoint").inputs
    assert endpoint["name"] == "deepcloud-queue-async"
    routing = endpoint["deploymentConfig"]["blueGreenUpdatePolicy"]["trafficRoutingConfiguration"]
    assert routing["type"] == "ALL_AT_ONCE", "a canary needs instances to shift traffic to; async may have none"
    target = async_stack.one("aws:appautoscaling/target:Target").inputs
    assert (target["minCapacity"], target["maxCapacity"]) == (0, 3)
    assert target["resourceId"] == "endpoint/deepcloud-queue-async/variant/AllTraffic"
    assert async_stack.outputs["async_prefix"] == f"s3://{artifacts}/async/"
    allowed = statements(async_stack, "serving-async-sagemaker")
    assert allowed["ReadAsyncRequests"]["Resource"] == [f"arn:aws:s3:::{artifacts}/async/input/*"]
    assert sorted(allowed["WriteAsyncResults"]["Resource"]) == [
        f"arn:aws:s3:::{artifacts}/async/failures/*",
        f"arn:aws:s3:::{artifacts}/async/output/*",
    ]
    (lifecycle,) = settings_of(async_stack, "BucketLifecycleConfiguration", "store-artifacts")
    expiry = {r["id"]: r for r in lifecycle.inputs["rules"]}["expire-async"]
    assert (expiry["filter"], expiry["expiration"]) == ({"prefix": "async/"}, {"days": 7})


def test_async_endpoint_scales_on_its_backlog_and_out_from_zero(async_stack: Synthesis) -> None:
    """Target tracking on ApproximateBacklogSizePerInstance, and a step policy fired by a HasBacklogWithoutCapacity
    alarm: with zero instances there is no backlog per instance, so target tracking alone never adds the first one."""
    policies = {p.name: p for p in async_stack.of_type("aws:appautoscaling/policy:Policy")}
    tracking = policies["serving-async-scaling"].inputs["targetTrackingScalingPolicyConfiguration"]
    assert tracking["targetValue"] == 5
    assert tracking["customizedMetricSpecification"] == {
        "metricName": "ApproximateBacklogSizePerInstance",
        "namespace": "AWS/SageMaker",
        "dimensions": [{"name": "EndpointName", "value": "deepcloud-queue-async"}],
        "statistic": "Average",
    }
    assert (tracking["scaleInCooldown"], tracking["scaleOutCooldown"]) == (600, 300)
    step = policies["serving-async-from-zero"]
    assert step.inputs["policyType"] == "StepScaling"
    assert step.inputs["stepScalingPolicyConfiguration"]["stepAdjustments"] == [
        {"metricIntervalLowerBound": "0", "scalingAdjustment": 1}
    ]
    alarm = async_stack.one("aws:cloudwatch/metricAlarm:MetricAlarm", "backlog-without-capacity")
    assert alarm.inputs["metricName"] == "HasBacklogWithoutCapacity"
    assert alarm.inputs["dimensions"] == {"EndpointName": "deepcloud-queue-async"}
    assert alarm.inputs["alarmActions"] == [step.outputs["arn"]]
    assert (alarm.inputs["threshold"], alarm.inputs["comparisonOperator"]) == (1, "GreaterThanOrEqualToThreshold")


def test_changing_the_mode_creates_a_new_endpoint_beside_the_old(
    model_stack: Synthesis, serverless_stack: Synthesis
) -> None:
    """Different logical names and endpoint names: Pulumi creates the new endpoint, then deletes the old one."""
    realtime = {r.name for r in model_stack.resources if r.type.startswith("aws:sagemaker/")}
    serverless = {r.name for r in serverless_stack.resources if r.type.startswith("aws:sagemaker/")}
    assert not realtime & serverless
    assert realtime == {"serving-model", "serving-config", "serving-endpoint"}, "realtime keeps its URNs"


def test_multi_model_endpoint_serves_a_prefix_and_reads_only_it(multi_model_stack: Synthesis) -> None:
    """CreateModel's ContainerDefinition: Mode MultiModel, ModelDataUrl an S3 prefix ending in /, MultiModelConfig's
    ModelCacheSetting (docs/aws-behaviours.md S19); otherwise a real-time endpoint: in the VPC, isolated, blue/green
    with rollback alarms, scaling on invocations. The role reads only the prefix, not the trained runs under models/."""
    stack = multi_model_stack
    artifacts = stack.outputs["artifacts_bucket"]
    prefix = f"s3://{artifacts}/multi-model/models/"
    model = stack.one("aws:sagemaker/model:Model")
    assert model.name == "serving-multi-model-model"
    assert model.inputs["primaryContainer"] == {
        "image": f"{stack.outputs['serving_repository_url']}:0.1.0",
        "mode": "MultiModel",
        "modelDataUrl": prefix,
        "multiModelConfig": {"modelCacheSetting": "Disabled"},
    }
    assert model.inputs["enableNetworkIsolation"] is True
    assert model.inputs["vpcConfig"]["subnets"]
    assert (stack.outputs["models_prefix"], stack.outputs["model_data_url"]) == (prefix, prefix)
    assert stack.outputs["endpoint_mode"] == "multi-model"
    assert stack.outputs["endpoint_name"] == "deepcloud-many-multi-model"
    endpoint = stack.one("aws:sagemaker/endpoint:Endpoint").inputs
    assert endpoint["deploymentConfig"]["blueGreenUpdatePolicy"]["trafficRoutingConfiguration"]["type"] == "CANARY"
    assert len(endpoint["deploymentConfig"]["autoRollbackConfiguration"]["alarms"]) == 2
    target = stack.one("aws:appautoscaling/target:Target").inputs
    assert (target["minCapacity"], target["maxCapacity"]) == (2, 4)
    allowed = statements(stack, "serving-multi-model-sagemaker")
    bucket_arn = stack.one(BUCKET, "store-artifacts").outputs["arn"]
    assert allowed["ReadModels"]["Resource"] == [f"{bucket_arn}/multi-model/models/*"]
    assert allowed["ListModels"]["Condition"] == {"StringLike": {"s3:prefix": ["multi-model/models/*"]}}
    s3 = [s for s in allowed.values() if any(a.startswith("s3:") for a in s["Action"])]
    assert [s["Sid"] for s in s3] == ["ReadModels", "ListModels"], "no other S3 access"


def test_single_model_endpoints_export_no_models_prefix(model_stack: Synthesis, default_stack: Synthesis) -> None:
    assert model_stack.one("aws:sagemaker/model:Model").inputs["primaryContainer"]["mode"] == "SingleModel"
    assert "multiModelConfig" not in model_stack.one("aws:sagemaker/model:Model").inputs["primaryContainer"]
    assert model_stack.outputs["models_prefix"] is None
    assert default_stack.outputs["models_prefix"] is None


# --- network profiles ----------------------------------------------------------------------------------------------
def test_on_demand_network_has_only_the_gateway_endpoint_while_idle(serverless_stack: Synthesis) -> None:
    (gateway,) = serverless_stack.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")
    assert gateway.inputs["vpcEndpointType"] == "Gateway"
    assert serverless_stack.outputs["network_profile"] == "on-demand"
    assert serverless_stack.outputs["interface_endpoints_up"] is False
    assert [g.name for g in serverless_stack.of_type(SG)] == ["network-workload"]
    up = synthesize({"networkProfile": "on-demand", "interfaceEndpointsUp": "true"}, stack="up")
    assert len(up.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")) == 8
    assert up.outputs["interface_endpoints_up"] is True


def test_whatever_the_profile_nothing_is_public(serverless_stack: Synthesis, existing_vpc_stack: Synthesis) -> None:
    """No inbound from anywhere, IMDSv2, encrypted disks, no public IPs: the same in every profile."""
    for stack in (serverless_stack, existing_vpc_stack):
        for group in stack.of_type(SG):
            assert not any("0.0.0.0/0" in r.get("cidrBlocks", []) for r in group.inputs.get("ingress", []))
        template = stack.one("aws:ec2/launchTemplate:LaunchTemplate").inputs
        assert template["metadataOptions"]["httpTokens"] == "required"
        assert template["blockDeviceMappings"][0]["ebs"]["encrypted"] == "true"
        assert template["networkInterfaces"][0]["associatePublicIpAddress"] == "false"
    assert existing_vpc_stack.outputs["network_profile"] == "existing-vpc"


# --- MonthlyBudget -------------------------------------------------------------------------------------------------
def test_monthly_budget_on_the_stack_tag_alerts_at_80_and_100_percent(async_stack: Synthesis) -> None:
    budget = async_stack.one("aws:budgets/budget:Budget").inputs
    assert budget["name"] == "deepcloud-queue-monthly" == async_stack.outputs["budget_name"]
    assert (budget["budgetType"], budget["timeUnit"], budget["limitAmount"], budget["limitUnit"]) == (
        "COST",
        "MONTHLY",
        "40.00",
        "USD",
    )
    assert budget["costFilters"] == [{"name": "TagKeyValue", "values": ["user:deepcloud:stack$deepcloud/queue"]}]
    alerts = sorted((n["notificationType"], n["threshold"]) for n in budget["notifications"])
    assert alerts == [("ACTUAL", 80), ("ACTUAL", 100), ("FORECASTED", 80), ("FORECASTED", 100)]
    assert all(
        n["subscriberEmailAddresses"] == ["ops@example.com"] and n["thresholdType"] == "PERCENTAGE"
        for n in budget["notifications"]
    )
    assert async_stack.outputs["monthly_budget"] == 40


def test_budget_alerts_to_sns_and_none_without_a_limit(default_stack: Synthesis) -> None:
    assert not default_stack.of_type("aws:budgets/budget:Budget")
    assert default_stack.outputs["budget_name"] is None
    topic = "arn:aws:sns:us-east-1:123456789012:alerts"
    stack = synthesize({"monthlyBudget": "10", "budgetSnsTopicArn": topic}, stack="sns")
    notes = stack.one("aws:budgets/budget:Budget").inputs["notifications"]
    assert all(n["subscriberSnsTopicArns"] == [topic] and "subscriberEmailAddresses" not in n for n in notes)
