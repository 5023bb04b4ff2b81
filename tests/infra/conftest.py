"""The infra/ program synthesized under Pulumi's mocks, once per configuration for the whole session.

Three configurations every stack test runs on (`any_stack`): the defaults (no model), a model configured, and an
existing VPC; the others exercise one endpoint mode each.
"""

from __future__ import annotations

import pytest

from tests.infra.harness import Synthesis, synthesize

MODEL_KEY = "models/job-1/model.tar.gz"
EXISTING_VPC = {
    "vpcId": "vpc-0abc1234def567890",
    "subnetIds": '["subnet-0aaa1111bbbb22223", "subnet-0ccc3333dddd44445"]',
}


@pytest.fixture(scope="session")
def default_stack() -> Synthesis:
    return synthesize({}, stack="dev")


@pytest.fixture(scope="session")
def model_stack() -> Synthesis:
    return synthesize({"modelArtifact": MODEL_KEY}, stack="prod")


@pytest.fixture(scope="session")
def existing_vpc_stack() -> Synthesis:
    return synthesize(EXISTING_VPC, stack="shared")


@pytest.fixture(scope="session")
def serverless_stack() -> Synthesis:
    """A model served serverless, the managed VPC with its interface endpoints only on demand (none now)."""
    return synthesize(
        {
            "modelArtifact": MODEL_KEY,
            "endpointMode": "serverless",
            "networkProfile": "on-demand",
            "serverlessMemoryMb": "3072",
            "serverlessMaxConcurrency": "8",
        },
        stack="lean",
    )


@pytest.fixture(scope="session")
def async_stack() -> Synthesis:
    """A model behind an async endpoint that scales to zero, and a monthly budget."""
    return synthesize(
        {
            "modelArtifact": MODEL_KEY,
            "endpointMode": "async",
            "endpointMaxInstances": "3",
            "monthlyBudget": "40",
            "budgetEmails": "ops@example.com",
        },
        stack="queue",
    )


@pytest.fixture(scope="session")
def multi_model_stack() -> Synthesis:
    """A multi-model endpoint: no model artifact, its models under an S3 prefix, the model cache off."""
    return synthesize({"endpointMode": "multi-model", "multiModelCache": "Disabled"}, stack="many")


@pytest.fixture(scope="session", params=["default", "model", "existing-vpc"])
def any_stack(request: pytest.FixtureRequest) -> Synthesis:
    """Each of the three configurations in turn."""
    return request.getfixturevalue(
        {"default": "default_stack", "model": "model_stack", "existing-vpc": "existing_vpc_stack"}[request.param]
    )
