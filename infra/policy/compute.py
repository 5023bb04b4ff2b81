"""EC2, Auto Scaling, ECS, ECR, CloudWatch Logs and Lambda: hardened instances, private networking, safe containers,
logs that expire and are encrypted."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from pulumi_policy import PolicyResource

from infra.policy._core import (
    as_list,
    document,
    get,
    is_list,
    is_true,
    linked,
    of_type,
    parse_json,
    resource_rule,
    stack_rule,
)

LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
INSTANCE = "aws:ec2/instance:Instance"
SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
SG_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
SG_INGRESS_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
SUBNET = "aws:ec2/subnet:Subnet"
VPC = "aws:ec2/vpc:Vpc"
DEFAULT_SG = "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup"
ASG = "aws:autoscaling/group:Group"
TASK_DEFINITION = "aws:ecs/taskDefinition:TaskDefinition"
REPOSITORY = "aws:ecr/repository:Repository"
ANYWHERE = ("0.0.0.0/0", "::/0")


# --- EC2 ----------------------------------------------------------------------------------------------------
@resource_rule(
    "ec2-imdsv2",
    "Instances and launch templates require IMDSv2 (session tokens)",
    [LAUNCH_TEMPLATE, INSTANCE],
    ["Checkov CKV_AWS_79", "AWS FSBP EC2.8, EC2.170"],
)
def imdsv2(resource) -> Iterator[str]:
    if get(resource.props, "metadataOptions", "httpTokens") != "required":
        yield "needs metadataOptions.httpTokens required"


@resource_rule(
    "ec2-no-public-ip",
    "Launch templates, instances and subnets assign no public IP addresses",
    [LAUNCH_TEMPLATE, INSTANCE, SUBNET],
    ["Checkov CKV_AWS_88, CKV_AWS_130", "AWS FSBP EC2.15, EC2.25"],
)
def no_public_ip(resource) -> Iterator[str]:
    if resource.resource_type == SUBNET:
        if is_true(get(resource.props, "mapPublicIpOnLaunch")):
            yield "maps public IPs on launch"
    elif resource.resource_type == INSTANCE:
        if is_true(get(resource.props, "associatePublicIpAddress")):
            yield "associates a public IP address"
    else:
        for interface in as_list(get(resource.props, "networkInterfaces")):
            if is_true(get(interface, "associatePublicIpAddress")):
                yield "a network interface associates a public IP address"


@resource_rule(
    "ec2-ebs-encrypted",
    "Launch templates encrypt every EBS volume they map",
    [LAUNCH_TEMPLATE],
    ["Checkov CKV_AWS_8", "AWS FSBP EC2.3"],
)
def ebs_encrypted(resource) -> Iterator[str]:
    mappings = [m for m in as_list(get(resource.props, "blockDeviceMappings")) if get(m, "ebs") is not None]
    if not mappings:
        yield "maps no root EBS volume explicitly, so its encryption is left to the AMI"
    for mapping in mappings:
        if not is_true(get(mapping, "ebs", "encrypted")):
            yield f"EBS volume {get(mapping, 'deviceName', default='?')} is not encrypted"


def _open_to_world(rule) -> bool:
    return any(c in ANYWHERE for c in as_list(get(rule, "cidrBlocks")) + as_list(get(rule, "ipv6CidrBlocks")))


@resource_rule(
    "ec2-no-public-ingress",
    "Security groups accept no ingress from 0.0.0.0/0 or ::/0",
    [SECURITY_GROUP, SG_RULE, SG_INGRESS_RULE],
    ["Checkov CKV_AWS_24, CKV_AWS_25, CKV_AWS_260, CKV_AWS_277", "AWS FSBP EC2.18, EC2.19"],
)
def no_public_ingress(resource) -> Iterator[str]:
    if resource.resource_type == SECURITY_GROUP:
        for rule in as_list(get(resource.props, "ingress")):
            if _open_to_world(rule):
                yield f"ingress {get(rule, 'fromPort')}-{get(rule, 'toPort')} is open to the internet"
    elif resource.resource_type == SG_RULE:
        if get(resource.props, "type") == "ingress" and _open_to_world(resource.props):
            yield "ingress rule is open to the internet"
    elif get(resource.props, "cidrIpv4") in ANYWHERE or get(resource.props, "cidrIpv6") in ANYWHERE:
        yield "ingress rule is open to the internet"


@stack_rule(
    "ec2-default-sg-closed",
    "Every VPC the stack creates has its default security group stripped of rules",
    ["Checkov CKV2_AWS_12", "AWS FSBP EC2.2"],
)
def default_sg_closed(resources: Sequence[PolicyResource]) -> Iterator[tuple[PolicyResource, str]]:
    for vpc in of_type(resources, VPC):
        groups = list(linked(resources, vpc, DEFAULT_SG, "vpcId"))
        if not groups:
            yield vpc, "needs a DefaultSecurityGroup resource with no rules"
        for group in groups:
            if as_list(get(group.props, "ingress")) or as_list(get(group.props, "egress")):
                yield vpc, "default security group still has rules"


# --- Auto Scaling -------------------------------------------------------------------------------------------
@stack_rule(
    "asg-launch-template-multi-az",
    "Auto Scaling groups launch from a launch template across two or more availability zones",
    ["Checkov CKV_AWS_315", "AWS FSBP AutoScaling.2, AutoScaling.9"],
)
def launch_template_multi_az(resources: Sequence[PolicyResource]) -> Iterator[tuple[PolicyResource, str]]:
    for group in of_type(resources, ASG):
        props = group.props
        if get(props, "launchConfiguration") or not (
            get(props, "launchTemplate") or get(props, "mixedInstancesPolicy", "launchTemplate")
        ):
            yield group, "must launch from a launch template (not a launch configuration)"
        subnets = [r for r in group.property_dependencies.get("vpcZoneIdentifiers", []) if r.resource_type == SUBNET]
        if subnets:  # subnets created by the stack: count their zones
            zones = {get(s.props, "availabilityZone") or get(s.props, "availabilityZoneId") for s in subnets}
            if len(zones) < 2:
                yield group, f"its subnets span {len(zones)} availability zone(s); needs two or more"
        elif len(as_list(get(props, "vpcZoneIdentifiers"))) + len(as_list(get(props, "availabilityZones"))) < 2:
            yield group, "needs subnets in two or more availability zones"


# --- ECS ----------------------------------------------------------------------------------------------------
@resource_rule(
    "ecs-container-insights",
    "ECS clusters have Container Insights on",
    ["aws:ecs/cluster:Cluster"],
    ["Checkov CKV_AWS_65", "AWS FSBP ECS.12"],
)
def container_insights(resource) -> Iterator[str]:
    settings = as_list(get(resource.props, "settings"))
    values = [get(s, "value") for s in settings if get(s, "name") == "containerInsights"]
    if not any(v in ("enabled", "enhanced") for v in values):
        yield "needs the containerInsights setting enabled (or enhanced)"


def _containers(resource) -> list:
    containers = parse_json(get(resource.props, "containerDefinitions"))
    return list(containers) if is_list(containers) else []


@resource_rule(
    "ecs-not-privileged",
    "ECS containers are not privileged",
    [TASK_DEFINITION],
    ["Checkov CKV_AWS_334", "AWS FSBP ECS.4"],
)
def not_privileged(resource) -> Iterator[str]:
    for c in _containers(resource):
        if is_true(get(c, "privileged")):
            yield f"container {get(c, 'name')} is privileged"


@resource_rule(
    "ecs-read-only-root",
    "ECS containers have a read-only root filesystem",
    [TASK_DEFINITION],
    ["Checkov CKV_AWS_336", "AWS FSBP ECS.5"],
)
def read_only_root(resource) -> Iterator[str]:
    containers = _containers(resource)
    if not containers:
        yield "has no container definitions"
    for c in containers:
        if not is_true(get(c, "readonlyRootFilesystem")):
            yield f"container {get(c, 'name')} needs readonlyRootFilesystem true"


@resource_rule("ecs-logging", "ECS containers send their output to a log driver", [TASK_DEFINITION], ["AWS FSBP ECS.9"])
def logging(resource) -> Iterator[str]:
    for c in _containers(resource):
        if not get(c, "logConfiguration", "logDriver"):
            yield f"container {get(c, 'name')} has no logConfiguration"


@resource_rule(
    "ecs-no-host-namespaces",
    "ECS tasks share neither the host's network, process nor IPC namespace",
    [TASK_DEFINITION],
    ["Checkov CKV_AWS_335", "AWS FSBP ECS.1, ECS.3"],
)
def no_host_namespaces(resource) -> Iterator[str]:
    for prop in ("networkMode", "pidMode", "ipcMode"):
        if get(resource.props, prop) == "host":
            yield f"{prop} is host"


# --- ECR ----------------------------------------------------------------------------------------------------
@resource_rule(
    "ecr-scan-on-push", "ECR repositories scan images on push", [REPOSITORY], ["Checkov CKV_AWS_163", "AWS FSBP ECR.1"]
)
def scan_on_push(resource) -> Iterator[str]:
    if not is_true(get(resource.props, "imageScanningConfiguration", "scanOnPush")):
        yield "needs imageScanningConfiguration.scanOnPush true"


@resource_rule(
    "ecr-immutable-tags",
    "ECR repositories make image tags immutable",
    [REPOSITORY],
    ["Checkov CKV_AWS_51", "AWS FSBP ECR.2"],
)
def immutable_tags(resource) -> Iterator[str]:
    if get(resource.props, "imageTagMutability") != "IMMUTABLE":
        yield "needs imageTagMutability IMMUTABLE"


@resource_rule(
    "ecr-kms-encryption", "ECR repositories encrypt images with a KMS key", [REPOSITORY], ["Checkov CKV_AWS_136"]
)
def ecr_kms(resource) -> Iterator[str]:
    configs = as_list(get(resource.props, "encryptionConfigurations"))
    if not any(get(c, "encryptionType") in ("KMS", "KMS_DSSE") and get(c, "kmsKey") for c in configs):
        yield "needs encryptionConfigurations with encryptionType KMS and a kmsKey"


@stack_rule("ecr-lifecycle-policy", "ECR repositories have a lifecycle policy", ["AWS FSBP ECR.3"])
def ecr_lifecycle(resources: Sequence[PolicyResource]) -> Iterator[tuple[PolicyResource, str]]:
    for repo in of_type(resources, REPOSITORY):
        policies = [
            document(get(p.props, "policy"))
            for p in linked(resources, repo, "aws:ecr/lifecyclePolicy:LifecyclePolicy", "repository")
        ]
        if not any(as_list(get(p, "rules")) for p in policies):
            yield repo, "needs an ECR LifecyclePolicy with at least one rule"


# --- CloudWatch Logs ----------------------------------------------------------------------------------------
@resource_rule(
    "logs-retention", "Log groups expire their events", ["aws:cloudwatch/logGroup:LogGroup"], ["Checkov CKV_AWS_66"]
)
def logs_retention(resource) -> Iterator[str]:
    if not get(resource.props, "retentionInDays"):
        yield "needs retentionInDays (logs are otherwise kept, and paid for, forever)"


@resource_rule(
    "logs-kms", "Log groups are encrypted with a KMS key", ["aws:cloudwatch/logGroup:LogGroup"], ["Checkov CKV_AWS_158"]
)
def logs_kms(resource) -> Iterator[str]:
    if not get(resource.props, "kmsKeyId"):
        yield "needs kmsKeyId"


# --- Lambda -------------------------------------------------------------------------------------------------
@stack_rule(
    "lambda-managed-log-group",
    "Lambda functions log to a log group of the stack, so its retention and key rules apply",
    [
        "AWS Lambda LoggingConfig.LogGroup (advanced logging controls)",
        "logs-retention and logs-kms, for the function's logs",
    ],
)
def lambda_managed_log_group(resources: Sequence[PolicyResource]) -> Iterator[tuple[PolicyResource, str]]:
    """Without loggingConfig.logGroup, Lambda writes to /aws/lambda/<name>, a group it creates itself with no
    retention (kept, and billed, forever) and no KMS key."""
    groups = {group.urn for group in of_type(resources, "aws:cloudwatch/logGroup:LogGroup")}
    for function in of_type(resources, "aws:lambda/function:Function"):
        sources = {dep.urn for dep in function.property_dependencies.get("loggingConfig", [])}
        if not get(function.props, "loggingConfig", "logGroup") or not sources & groups:
            yield function, "needs loggingConfig.logGroup naming a log group the stack creates"
