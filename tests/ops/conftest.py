"""Fixtures for the aws target: moto_server for AWS (real boto3 over HTTP), recording stand-ins for the pulumi
and docker CLIs, and a fake stack: the resources infra/ would create, made in moto, and its outputs."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tarfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from ops.aws import context as aws_context
from ops.aws.clients import Aws
from ops.aws.context import Context
from ops.aws.pulumi import Pulumi
from ops.aws.stack import Stack
from ops.container import build as container_build
from ops.paths import Paths
from tests.conftest import REPO
from tests.ops.standins import StandIns

REGION = "us-east-1"
SETTINGS = (
    "TARGET",
    "STACK",
    "BACKEND",
    "MAX_COST",
    "MAX_HOURS",
    "INSTANCE_TYPE",
    "INSTANCE_COUNT",
    "RESUME",
    "MODEL",
    "RUN",
    "ENDPOINT",
    "AWS_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_REGION",
)


@pytest.fixture
def aws_env(moto_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """Everything AWS pointed at moto_server, no machine profile leaking in, no waiting between polls."""
    env = {
        "DEEPCLOUD_AWS_ENDPOINT_URL": moto_server,  # what ops reads
        "AWS_ENDPOINT_URL": moto_server,  # what the docker/pulumi stand-ins' boto3 reads
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "DEEPCLOUD_POLL_SECONDS": "0",
        "DEEPCLOUD_HOME": str(tmp_path / "home"),
    }
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture(scope="session")
def system_tools(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of links to the programs in /usr/bin and /bin but any docker or pulumi CLI: where `make images` and
    CI run, /usr/bin has Debian's docker, and a test that removes the docker stand-in must find none."""
    folder = tmp_path_factory.mktemp("system-tools")
    for system in (Path("/bin"), Path("/usr/bin")):
        for program in system.iterdir():
            link = folder / program.name
            if program.name not in ("docker", "pulumi") and not link.exists():
                link.symlink_to(program)
    return folder


@pytest.fixture
def standins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aws_env: dict[str, str], system_tools: Path) -> StandIns:
    """`pulumi` and `docker` stand-ins first on a PATH that has nothing else but the system's tools, and the `pip`
    stand-in as what fills the images' wheelhouses (in a wheelhouse folder of the test's own)."""
    fakes = StandIns(tmp_path / "standins")
    monkeypatch.setenv("STANDIN_STATE", str(fakes.state_path))
    monkeypatch.setenv("PATH", f"{fakes.bin}:{system_tools}")
    monkeypatch.setattr(container_build, "PIP", (str(fakes.bin / "pip"),))
    monkeypatch.setattr(container_build, "WHEELHOUSE", str(tmp_path / "wheelhouse"))
    return fakes


def session() -> boto3.session.Session:
    return boto3.session.Session(region_name=REGION)


_CLIENTS: dict[tuple[str, str], Any] = {}


def client(service: str) -> Any:
    """A test-side client of moto_server (made once: a botocore client takes ~0.1 s to build)."""
    url = os.environ["DEEPCLOUD_AWS_ENDPOINT_URL"]
    if (service, url) not in _CLIENTS:
        _CLIENTS[service, url] = session().client(service, endpoint_url=url)
    return _CLIENTS[service, url]


def stubbed(service: str) -> tuple[Any, Stubber]:
    """A real client of ``service`` with botocore's Stubber on it: every request is checked against the service
    model and answered from the queue the test fills (for what moto_server cannot answer)."""
    real = session().client(service, endpoint_url=os.environ["DEEPCLOUD_AWS_ENDPOINT_URL"])
    stub = Stubber(real)
    stub.activate()
    return real, stub


@dataclass
class FakeStack:
    """The stack infra/ would make, built in moto: names, and the outputs the pulumi stand-in reports."""

    name: str
    sfx: str
    outputs: dict
    standins: StandIns
    log_group: str
    asg_name: str

    @property
    def tag(self) -> str:
        return f"deepcloud/{self.name}"

    @property
    def tags(self) -> list[dict[str, str]]:
        return [{"Key": "deepcloud:stack", "Value": self.tag}]

    def __getattr__(self, key: str) -> Any:
        outputs = self.__dict__.get("outputs", {})
        if key in outputs:
            return outputs[key]
        raise AttributeError(key)

    def put_model(self, run_id: str, shape: tuple[int, ...] = (1, 8, 8), key: str | None = None) -> str:
        """A model.tar.gz in the artifacts bucket, files at the root as the trainer packs it."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for name, data in (
                (
                    "manifest.json",
                    json.dumps(
                        {"format_version": 1, "input": {"shape": list(shape)}, "labels": [str(i) for i in range(10)]}
                    ).encode(),
                ),
                ("model.pt2", b"weights"),
            ):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        key = key or f"models/{run_id}/model.tar.gz"
        client("s3").put_object(Bucket=self.artifacts_bucket, Key=key, Body=buffer.getvalue())
        return key

    def put_dataset(self) -> None:
        s3 = client("s3")
        for channel in ("train", "validation", "test"):
            s3.put_object(Bucket=self.data_bucket, Key=f"digits/{channel}/manifest.csv", Body=b"file,label\n")

    def start_task(self) -> str:
        """A running task in the stack's cluster, on a registered container instance (moto's RunTask needs one;
        bridge networking, as moto 5.2.5's RunTask fails for awsvpc)."""
        ec2, ecs = client("ec2"), client("ecs")
        instance = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="g5.xlarge")[
            "Instances"
        ][0]["InstanceId"]
        document = json.dumps({"instanceId": instance, "instanceType": "g5.xlarge", "region": REGION})
        ecs.register_container_instance(cluster=self.cluster_name, instanceIdentityDocument=document)
        ecs.register_task_definition(
            family=f"bridge-{self.sfx}",
            networkMode="bridge",
            containerDefinitions=[{"name": "trainer", "image": "trainer:1", "memory": 512}],
        )
        task = ecs.run_task(
            cluster=self.cluster_name,
            taskDefinition=f"bridge-{self.sfx}",
            startedBy="train-1",
            tags=[{"key": "deepcloud:stack", "value": self.tag}],
        )["tasks"][0]
        return task["taskArn"]

    def context(
        self,
        home: Path,
        clients: dict[str, Any] | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> Context:
        aws = Aws(REGION)
        aws.clients.update(clients or {})
        ctx = Context(repo=REPO, paths=Paths(home), stack=Stack.load(Pulumi(REPO)), aws=aws, poll_s=0)
        if clock:
            ctx.clock = clock
        if sleep:
            ctx.sleep = sleep
        return ctx


def make_stack(
    standins: StandIns,
    instance_types: tuple[str, ...] = ("g5.xlarge", "g4dn.xlarge"),
    max_size: int = 2,
    desired: int = 0,
    on_demand_percent: int = 0,
) -> FakeStack:
    sfx = uuid.uuid4().hex[:8]
    name = f"t{sfx}"
    tag = f"deepcloud/{name}"
    tags = [{"Key": "deepcloud:stack", "Value": tag}]
    s3, ecr, ec2, kms = client("s3"), client("ecr"), client("ec2"), client("kms")
    data, artifacts, access_logs = f"deepcloud-data-{sfx}", f"deepcloud-artifacts-{sfx}", f"deepcloud-logs-{sfx}"
    for bucket in (data, artifacts, access_logs):
        s3.create_bucket(Bucket=bucket)
        s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": tags})
    key = kms.create_key(Tags=[{"TagKey": "deepcloud:stack", "TagValue": tag}])["KeyMetadata"]["Arn"]
    repos = {}
    for room in ("trainer", "serving"):
        repos[room] = ecr.create_repository(repositoryName=f"deepcloud-{sfx}/{room}", imageTagMutability="IMMUTABLE")[
            "repository"
        ]["repositoryUri"]
    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.42.{i}.0/24")["Subnet"]["SubnetId"] for i in (1, 2)]
    sg = ec2.create_security_group(GroupName=f"train-{sfx}", Description="training", VpcId=vpc)["GroupId"]
    template = ec2.create_launch_template(
        LaunchTemplateName=f"gpu-{sfx}",
        LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": instance_types[0]},
    )["LaunchTemplate"]["LaunchTemplateId"]
    asg_name = f"gpu-{sfx}"
    autoscaling = client("autoscaling")
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName=asg_name,
        MinSize=0,
        MaxSize=max_size,
        DesiredCapacity=desired,
        VPCZoneIdentifier=",".join(subnets),
        MixedInstancesPolicy={
            "LaunchTemplate": {
                "LaunchTemplateSpecification": {"LaunchTemplateId": template, "Version": "$Latest"},
                "Overrides": [{"InstanceType": t} for t in instance_types],
            },
            "InstancesDistribution": {
                "OnDemandBaseCapacity": 0,
                "OnDemandPercentageAboveBaseCapacity": on_demand_percent,
                "SpotAllocationStrategy": "capacity-optimized",
            },
        },
    )
    asg_arn = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[asg_name])["AutoScalingGroups"][0][
        "AutoScalingGroupARN"
    ]
    ecs = client("ecs")
    cluster = f"deepcloud-{sfx}"
    ecs.create_cluster(clusterName=cluster, tags=[{"key": "deepcloud:stack", "value": tag}])
    ecs.create_capacity_provider(
        name=f"gpu-{sfx}",
        autoScalingGroupProvider={
            "autoScalingGroupArn": asg_arn,
            "managedScaling": {"status": "ENABLED", "targetCapacity": 100},
            "managedTerminationProtection": "DISABLED",
        },
    )
    log_group = f"/deepcloud/deepcloud-{name}/trainer"  # infra's StackConfig.log_group("trainer")
    client("logs").create_log_group(logGroupName=log_group, tags={"deepcloud:stack": tag})
    task_definition = ecs.register_task_definition(
        family=f"trainer-{sfx}",
        networkMode="awsvpc",
        requiresCompatibilities=["EC2"],
        containerDefinitions=[
            {
                "name": "trainer",
                "image": f"{repos['trainer']}:0.1.0",
                "memory": 14336,
                "command": ["train"],
                "logConfiguration": {
                    "logDriver": "awslogs",
                    "options": {
                        "awslogs-group": log_group,
                        "awslogs-stream-prefix": "trainer",
                        "awslogs-region": REGION,
                    },
                },
            }
        ],
        tags=[{"key": "deepcloud:stack", "value": tag}],
    )["taskDefinition"]["taskDefinitionArn"]
    outputs = {  # the keys and kinds of value infra/__main__.py exports
        "stack_tag": tag,
        "task_definition_arn": task_definition,
        "region": REGION,
        "data_bucket": data,
        "artifacts_bucket": artifacts,
        "kms_key_arn": key,
        "trainer_repository_url": repos["trainer"],
        "serving_repository_url": repos["serving"],
        "cluster_name": cluster,
        "capacity_provider_name": f"gpu-{sfx}",
        "task_definition_family": f"trainer-{sfx}",
        "subnet_ids": subnets,
        "security_group_id": sg,
        "training_role_arn": f"arn:aws:iam::123456789012:role/deepcloud-{sfx}-training",
        "endpoint_instance_type": "ml.m5.large",
        "endpoint_max_instances": 4,
        "access_logs_bucket": access_logs,
        "force_destroy": False,
        "protect_data_bucket": True,  # infra's defaults
    }
    standins.update(stack=name, outputs=outputs, config={"aws:region": REGION})
    return FakeStack(name=name, sfx=sfx, outputs=outputs, standins=standins, log_group=log_group, asg_name=asg_name)


@pytest.fixture
def stack(standins: StandIns) -> FakeStack:
    return make_stack(standins)


@pytest.fixture
def use_clients(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Make every Aws session ops opens hand out these clients (stubbed ones) for their services; each call adds to
    (or replaces, per service) what earlier calls installed."""
    installed: dict[str, Any] = {}

    def connect(region: str) -> Aws:
        aws = Aws(region)
        aws.clients.update(installed)
        return aws

    def install(**clients: Any) -> None:
        installed.update({name.replace("_", "-"): c for name, c in clients.items()})
        monkeypatch.setattr(aws_context, "connect", connect)

    return install


@pytest.fixture
def ops_aws(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """Run `python -m ops --target aws ARGS` in this process: (exit code, stdout, stderr)."""
    from ops.__main__ import main

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(["--target", "aws", *args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


POLICY_PACK = str(REPO / "infra" / "policy")


def pulumi_ups(stack: FakeStack) -> list[list[str]]:
    """Every `pulumi up` the stand-in ran, each checked to be gated by the policy pack (README: the stack is gated
    by it): `--policy-pack infra/policy`, and the preview, where the pack's rules run before any change, not skipped."""
    ups = [argv for argv in stack.standins.calls("pulumi") if argv[:1] == ["up"]]
    for argv in ups:
        assert "--skip-preview" not in argv, f"`pulumi {' '.join(argv)}` skips the preview the policy pack runs in"
        assert "--policy-pack" in argv, f"`pulumi {' '.join(argv)}` is not gated by the policy pack"
        assert argv[argv.index("--policy-pack") + 1] == POLICY_PACK, f"`pulumi {' '.join(argv)}` names another pack"
    return ups


def one_line_error(code: int, err: str, starts: str) -> str:
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith(f"error: {starts}"), lines[0]
    assert "Traceback" not in err
    return lines[0]


def endpoint_quotas_stub(value: float, calls: int, quota: str = "ml.m5.large for endpoint usage"):
    """Service Quotas, stubbed (moto has no SageMaker quotas): ListServiceQuotas for SageMaker, `calls` times, answering
    the endpoint-usage quota `quota` with `value`."""
    quotas, stub = stubbed("service-quotas")
    for _ in range(calls):
        stub.add_response(
            "list_service_quotas",
            {"Quotas": [{"ServiceCode": "sagemaker", "QuotaCode": "L-22222222", "QuotaName": quota, "Value": value}]},
            {"ServiceCode": "sagemaker"},
        )
    return quotas, stub


SAGEMAKER_LOGS = "/aws/sagemaker/TrainingJobs"


def put_host_logs(run_id: str, lines_by_host: dict[int, list[str]], group: str = SAGEMAKER_LOGS) -> None:
    """One stream per host, named as SageMaker names them: `<job>/algo-<n>-<epoch seconds>` (SageMaker guide, "Log
    Amazon SageMaker AI events with Amazon CloudWatch", table Logs). moto 5.2.5's FilterLogEvents ignores
    logStreamNamePrefix (moto/logs/responses.py reads only logStreamNames), so every stream of `group` is read back:
    only one test of a session may write SageMaker's own group; others pass a group of their own."""
    logs = client("logs")
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_group(logGroupName=group)
    start = int(datetime.now(UTC).timestamp() * 1000)  # CloudWatch refuses events over 14 days old
    for host, lines in lines_by_host.items():
        stream = f"{run_id}/algo-{host}-1767268800"
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
        logs.put_log_events(
            logGroupName=group,
            logStreamName=stream,
            logEvents=[{"timestamp": start + i, "message": line} for i, line in enumerate(lines)],
        )
