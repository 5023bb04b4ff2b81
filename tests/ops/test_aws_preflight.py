"""`make preflight TARGET=aws`: the pass, and each missing prerequisite as one line and exit code 1.

STS, the stack's resources and ECR are moto_server's. Service Quotas is stubbed with botocore's Stubber:
moto's Service Quotas knows only the `vpc` service, not EC2's or SageMaker's quotas.
"""

from __future__ import annotations

import pytest

from tests.ops.conftest import make_stack, one_line_error, stubbed

SPOT_G = ("L-3819A6DF", "All G and VT Spot Instance Requests")
ON_DEMAND_G = ("L-DB2E81BA", "Running On-Demand G and VT instances")


def quota_response(code: str, name: str, value: float, service: str = "ec2") -> dict:
    return {
        "Quota": {
            "ServiceCode": service,
            "QuotaCode": code,
            "QuotaName": name,
            "Value": value,
            "Unit": "None",
            "Adjustable": True,
            "GlobalQuota": False,
        }
    }


def quotas_stub(*values: tuple[tuple[str, str], float]):
    quotas, stub = stubbed("service-quotas")
    for (code, name), value in values:
        stub.add_response(
            "get_service_quota", quota_response(code, name, value), {"ServiceCode": "ec2", "QuotaCode": code}
        )
    return quotas, stub


def test_preflight_passes_and_says_what_it_checked(stack, use_clients, ops_aws) -> None:
    quotas, stub = quotas_stub((SPOT_G, 8.0))
    use_clients(service_quotas=quotas)
    code, out, err = ops_aws("preflight")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "==> preflight (aws)"
    assert lines[1].startswith("ok    AWS credentials  arn:aws:")
    assert "(account 123456789012)" in lines[1]
    assert lines[2] == (
        f"ok    Pulumi stack     {stack.name} ({stack.tag}), pulumi v3.140.0, 19/28 outputs, region us-east-1"
    )
    assert lines[3] == "ok    Docker engine    27.3.1"
    assert lines[4] == (
        "ok    EC2 quota        'All G and VT Spot Instance Requests' (L-3819A6DF) in us-east-1 is 8 "
        "vCPUs; the group's 2 x g5.xlarge need 8"
    )
    stub.assert_no_pending_responses()
    assert ["stack", "--show-name", "--non-interactive"] in stack.standins.calls("pulumi")
    assert stack.standins.calls("docker") == [["info", "--format", "{{.ServerVersion}}"]]


def test_no_credentials(stack, ops_aws, monkeypatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    code, _, err = ops_aws("preflight")
    one_line_error(code, err, "no AWS credentials found: run `aws configure` (or `aws sso login`), or set AWS_PROFILE")


def test_rejected_credentials(stack, use_clients, ops_aws) -> None:
    sts, stub = stubbed("sts")
    stub.add_client_error(
        "get_caller_identity", "InvalidClientTokenId", "The security token included in the request is invalid.", 403
    )
    use_clients(sts=sts)
    code, _, err = ops_aws("preflight")
    one_line_error(
        code,
        err,
        "AWS rejected the credentials (InvalidClientTokenId: The security token included in "
        "the request is invalid.): run `aws configure`",
    )


def test_no_pulumi_cli(stack, ops_aws) -> None:
    stack.standins.remove("pulumi")
    code, _, err = ops_aws("preflight")
    one_line_error(
        code,
        err,
        "the pulumi CLI is not installed (no `pulumi` on PATH): install it: curl -fsSL https://get.pulumi.com | sh",
    )


def test_no_stack_selected(stack, ops_aws) -> None:
    stack.standins.update(stack=None)
    code, _, err = ops_aws("preflight")
    one_line_error(
        code,
        err,
        "no Pulumi stack is selected (pulumi: no stack selected; please use `pulumi stack "
        "select` to choose one): run `pulumi login`, then `pulumi stack init dev`",
    )


def test_a_stack_named_that_does_not_exist(stack, ops_aws) -> None:
    code, _, err = ops_aws("preflight", "--stack", "prod")
    one_line_error(code, err, "no Pulumi stack is selected (pulumi: no stack named 'prod' found)")


def test_stack_without_outputs(stack, ops_aws) -> None:
    stack.standins.update(outputs={})
    code, _, err = ops_aws("preflight")
    one_line_error(code, err, f"stack '{stack.name}' has no outputs: run `pulumi up` first")


def test_stack_missing_an_output(stack, ops_aws) -> None:
    outputs = dict(stack.outputs)
    del outputs["cluster_name"], outputs["security_group_id"]
    stack.standins.update(outputs=outputs)
    code, _, err = ops_aws("preflight")
    one_line_error(code, err, f"stack '{stack.name}' has no output cluster_name, security_group_id: run `pulumi up`")


def test_no_docker_cli(stack, ops_aws) -> None:
    stack.standins.remove("docker")
    code, _, err = ops_aws("preflight")
    one_line_error(code, err, "the docker CLI is not installed (no `docker` on PATH): install Docker Engine")


def test_no_docker_engine(stack, ops_aws) -> None:
    stack.standins.update(
        fail={
            "docker_info": "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
            "Is the docker daemon running?"
        }
    )
    code, _, err = ops_aws("preflight")
    one_line_error(
        code,
        err,
        "no Docker engine answers (docker info: Cannot connect to the Docker daemon at "
        "unix:///var/run/docker.sock. Is the docker daemon running?): start Docker",
    )


def test_zero_quota_stops_with_its_name_value_and_the_request(stack, use_clients, ops_aws) -> None:
    quotas, _ = quotas_stub((SPOT_G, 0.0))
    use_clients(service_quotas=quotas)
    code, out, err = ops_aws("preflight")
    one_line_error(
        code,
        err,
        "quota 'All G and VT Spot Instance Requests' (L-3819A6DF) in us-east-1 is 0 vCPUs, "
        "below the 4 one g5.xlarge needs: request 8 with `aws service-quotas "
        "request-service-quota-increase --service-code ec2 --quota-code L-3819A6DF "
        "--desired-value 8 --region us-east-1` (or the Service Quotas console)",
    )
    assert "ok    Docker engine" in out, "the cheap checks ran first"


def test_quota_for_one_instance_but_not_the_group_warns(stack, use_clients, ops_aws) -> None:
    quotas, _ = quotas_stub((SPOT_G, 4.0))
    use_clients(service_quotas=quotas)
    code, out, err = ops_aws("preflight")
    assert code == 0, err
    assert (
        "warn  EC2 quota        'All G and VT Spot Instance Requests' (L-3819A6DF) in us-east-1 is 4 vCPUs: enough "
        "for one g5.xlarge (4), not for the group's 2 instances (8)"
    ) in out


def test_on_demand_and_spot_both_checked_and_an_unset_quota_reads_the_default(standins, use_clients, ops_aws) -> None:
    make_stack(standins, instance_types=("g5.2xlarge", "p3.2xlarge"), max_size=1, on_demand_percent=50)
    quotas, stub = stubbed("service-quotas")
    stub.add_response("get_service_quota", quota_response(*SPOT_G, 8.0), {"ServiceCode": "ec2", "QuotaCode": SPOT_G[0]})
    stub.add_client_error(
        "get_service_quota",
        "NoSuchResourceException",
        "not set",
        expected_params={"ServiceCode": "ec2", "QuotaCode": "L-7212CCBC"},
    )
    stub.add_response(
        "get_aws_default_service_quota",
        quota_response("L-7212CCBC", "All P4, P3 and P2 Spot Instance Requests", 64.0),
        {"ServiceCode": "ec2", "QuotaCode": "L-7212CCBC"},
    )
    stub.add_response(
        "get_service_quota", quota_response(*ON_DEMAND_G, 8.0), {"ServiceCode": "ec2", "QuotaCode": ON_DEMAND_G[0]}
    )
    stub.add_response(
        "get_service_quota",
        quota_response("L-417A185B", "Running On-Demand P instances", 0.0),
        {"ServiceCode": "ec2", "QuotaCode": "L-417A185B"},
    )
    use_clients(service_quotas=quotas)
    code, out, err = ops_aws("preflight")
    one_line_error(
        code,
        err,
        "quota 'Running On-Demand P instances' (L-417A185B) in us-east-1 is 0 vCPUs, below the 8 one p3.2xlarge needs",
    )
    assert "(L-7212CCBC) in us-east-1 is 64 vCPUs" in out
    assert "(L-DB2E81BA) in us-east-1 is 8 vCPUs" in out
    stub.assert_no_pending_responses()


@pytest.mark.parametrize(("value", "passes"), [(1.0, True), (0.0, False)])
def test_sagemaker_backend_checks_the_training_quota(stack, use_clients, ops_aws, value, passes) -> None:
    quotas, _ = stubbed("service-quotas")
    name = "ml.g5.xlarge for spot training job usage"
    quotas_list = [
        {
            "ServiceCode": "sagemaker",
            "QuotaCode": "L-11111111",
            "QuotaName": "ml.g5.xlarge for training job usage",
            "Value": 4.0,
        },
        {"ServiceCode": "sagemaker", "QuotaCode": "L-22222222", "QuotaName": name, "Value": value},
    ]
    _.add_response("list_service_quotas", {"Quotas": quotas_list}, {"ServiceCode": "sagemaker"})
    use_clients(service_quotas=quotas)
    code, out, err = ops_aws("preflight", "--backend", "sagemaker")
    if passes:
        assert code == 0, err
        assert f"ok    SageMaker quota  '{name}' (L-22222222) in us-east-1 is 1 instances" in out
    else:
        one_line_error(code, err, f"quota '{name}' (L-22222222) in us-east-1 is 0 instances, below the 1 a job needs")


def spot_training_quotas(per_type: float, per_job: float | None, across_jobs: float | None) -> list[dict]:
    """What ListServiceQuotas answers for sagemaker: per instance type and use, and the account's spot training
    limits (the names docs/aws-behaviours.md Q1 gives); the on-demand quota of the type is not the one a spot job
    counts against."""
    listed = [
        ("L-11111111", "ml.g5.xlarge for training job usage", 8.0),
        ("L-22222222", "ml.g5.xlarge for spot training job usage", per_type),
        ("L-33333333", "Maximum number of instances per spot training job", per_job),
        ("L-44444444", "Number of instances across all spot training jobs", across_jobs),
    ]
    return [
        {"ServiceCode": "sagemaker", "QuotaCode": code, "QuotaName": name, "Value": value}
        for code, name, value in listed
        if value is not None
    ]


@pytest.mark.parametrize(
    ("per_type", "per_job", "across_jobs", "fails"),
    [
        (4.0, 20.0, 4.0, None),
        (4.0, None, None, None),
        (
            1.0,
            20.0,
            4.0,
            "'ml.g5.xlarge for spot training job usage' (L-22222222) in us-east-1 is 1 instances, below "
            "the 2 a job of 2 x ml.g5.xlarge needs: request 2 with `aws service-quotas "
            "request-service-quota-increase --service-code sagemaker --quota-code L-22222222 --desired-value "
            "2 --region us-east-1` (or the Service Quotas console) or lower INSTANCE_COUNT",
        ),
        (
            4.0,
            20.0,
            1.0,
            "'Number of instances across all spot training jobs' (L-44444444) in us-east-1 is 1 instances, "
            "below the 2 a job of 2 x ml.g5.xlarge needs",
        ),
    ],
)
def test_a_job_of_several_instances_needs_that_many_in_each_spot_training_quota(
    stack, use_clients, ops_aws, monkeypatch, per_type, per_job, across_jobs, fails
) -> None:
    quotas, stub = stubbed("service-quotas")
    stub.add_response(
        "list_service_quotas",
        {"Quotas": spot_training_quotas(per_type, per_job, across_jobs)},
        {"ServiceCode": "sagemaker"},
    )
    use_clients(service_quotas=quotas)
    monkeypatch.setenv("INSTANCE_COUNT", "2")
    code, out, err = ops_aws("preflight", "--backend", "sagemaker")
    stub.assert_no_pending_responses()
    if fails:
        one_line_error(code, err, f"quota {fails}")
        return
    assert code == 0, err
    assert (
        "ok    SageMaker quota  'ml.g5.xlarge for spot training job usage' (L-22222222) in us-east-1 is 4 "
        "instances; a job of 2 x ml.g5.xlarge needs 2"
    ) in out
    limits = [line for line in out.splitlines() if "spot training job" in line and "ml.g5" not in line.split("'")[1]]
    assert len(limits) == (2 if per_job else 0), out
    assert "for training job usage" not in out, "a spot job does not count against the on-demand quota"
