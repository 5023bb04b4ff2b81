"""infra/instance_storage.py: the one table of ML instance families with local NVMe storage, against botocore.

SageMaker refuses a KMS key for the volume of such instance types (botocore's ResourceConfig.VolumeKmsKeyId text);
the endpoint configuration, its policy rule and the training job request all decide from this table.
"""

from __future__ import annotations

import botocore.session
import pytest

from infra.instance_storage import EBS_FAMILIES, NVME_FAMILIES, UNVERIFIED_FAMILIES, family, has_instance_storage

SHAPES = ("TrainingInstanceType", "ProductionVariantInstanceType")


def _families(shape: str) -> set[str]:
    model = botocore.session.get_session().get_service_model("sagemaker")
    return {family(value) for value in model.shape_for(shape).enum}


def test_the_rule_is_the_one_botocore_states() -> None:
    doc = (
        botocore.session.get_session()
        .get_service_model("sagemaker")
        .shape_for("ResourceConfig")
        .members["VolumeKmsKeyId"]
        .documentation
    )
    assert "You can't request a <code>VolumeKmsKeyId</code> when using an instance type with local storage" in doc


@pytest.mark.parametrize("shape", SHAPES)
def test_every_family_botocore_lists_is_classified(shape: str) -> None:
    """A family botocore adds fails here until it is put in one of the lists, from the documentation cited there."""
    unclassified = _families(shape) - NVME_FAMILIES - EBS_FAMILIES - UNVERIFIED_FAMILIES
    assert not unclassified, f"classify these {shape} families in infra/instance_storage.py: {sorted(unclassified)}"


def test_the_lists_do_not_overlap_and_name_only_real_families() -> None:
    assert not NVME_FAMILIES & EBS_FAMILIES
    assert not (NVME_FAMILIES | EBS_FAMILIES) & UNVERIFIED_FAMILIES
    known = _families(SHAPES[0]) | _families(SHAPES[1])
    assert not (NVME_FAMILIES | EBS_FAMILIES | UNVERIFIED_FAMILIES) - known, "a family SageMaker does not offer"


@pytest.mark.parametrize(
    ("instance_type", "nvme"),
    [
        ("ml.g5.xlarge", True),
        ("ml.g4dn.xlarge", True),
        ("ml.p4d.24xlarge", True),  # named by the SageMaker guide
        ("ml.c5.xlarge", False),
        ("ml.p2.xlarge", False),  # named there as EBS
        ("ml.m5.large", False),
        ("ml.c5d.2xlarge", True),
        ("ml.g6e.xlarge", True),
        ("ml.p3.2xlarge", False),
        ("ml.g7e.2xlarge", False),  # unverified: the key is sent
        ("g5.xlarge", False),
        ("", False),  # not an ML instance type
    ],
)
def test_classification(instance_type: str, nvme: bool) -> None:
    assert has_instance_storage(instance_type) is nvme
