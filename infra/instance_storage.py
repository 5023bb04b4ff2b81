"""Which SageMaker instance families have local NVMe instance storage, and so take no KMS key for their volume.

SageMaker refuses a KMS key for the storage of instance types with local NVMe storage (hardware-encrypted on the
instance): botocore's model of `ResourceConfig.VolumeKmsKeyId` for training jobs says "You can't request a
VolumeKmsKeyId when using an instance type with local storage", and the same holds for `KmsKeyId` of endpoint
configurations. One table serves the three places that decide it: the endpoint configuration (infra/components/
inference_endpoint.py), its policy rule (infra/policy/sagemaker.py) and the training job request
(ops/aws/training/sagemaker.py). Standard library only, so ops can import it without Pulumi.

Sources, per family, in the table below:
- SageMaker Developer Guide, "Managing storage paths for different types of instance local storage"
  (model-train-storage-tips-considerations.html), also botocore's `ResourceConfig.VolumeSizeInGB` text:
  "ML instance families with the NVMe-type instance storage include ml.p4d, ml.g4dn, and ml.g5 ... ML instance
  families that use EBS volumes include ml.c5 and ml.p2".
- Amazon EC2 User Guide, "Instance store volumes" (InstanceStorage.html#instance-store-volumes), linked from that
  botocore text: the instance store of each EC2 type the ML type runs on.
- aws/sagemaker-python-sdk `volume_size_supported` (PR #3870): "Any instance type with a 'd' in the instance family
  (i.e. c5d, p4d, etc) + g5 does not support attaching an EBS volume".

A family in neither list (a new one in botocore) is treated as EBS-only, so the key is sent: if that is wrong,
SageMaker rejects the request with its reason, where leaving the key out would silently encrypt with a SageMaker key
instead of the stack's. tests/infra/test_instance_storage.py fails when botocore lists a family this table does not
classify, so each new one is decided from the documentation above.
"""

from __future__ import annotations

NVME_FAMILIES = frozenset(
    {
        # "d" families: the EC2 user guide lists NVMe instance store for each (c5d, m5d, r5d, ...; SDK rule above).
        "c5d",
        "m5d",
        "r5d",
        "c6gd",
        "m6gd",
        "r6gd",
        "r7gd",
        # GPU families: g4dn, g5 and p4d are named by the SageMaker guide; the others are NVMe in the EC2 guide.
        "g4dn",
        "g5",
        "g6",
        "g6e",
        "p3dn",
        "p4d",
        "p4de",
        "p5",
        "p5e",
        "p5en",
        "p6-b200",
        # Accelerators: Trainium (trn1, trn1n, trn2) and Gaudi (dl1) types carry NVMe instance store (EC2 guide).
        "trn1",
        "trn1n",
        "trn2",
        "dl1",
    }
)
"""ML instance families with local NVMe storage: no KMS key for their volume."""

EBS_FAMILIES = frozenset(
    {
        "t2",
        "t3",
        "m4",
        "m5",
        "m6i",
        "m6g",
        "m7i",
        "m7i-flex",
        "m8g",
        "m8i",
        "m8i-flex",
        "c4",
        "c5",
        "c5n",
        "c6g",
        "c6gn",
        "c6i",
        "c6in",
        "c7g",
        "c7i",
        "c7i-flex",
        "c8g",
        "c8i",
        "c8i-flex",
        "r5",
        "r6g",
        "r6i",
        "r7i",
        "r8g",
        "r8i",
        "r8i-flex",
        "p2",
        "p3",
        "inf1",
        "inf2",
    }
)
"""ML instance families that are EBS-only in the EC2 guide (ml.c5 and ml.p2 named by the SageMaker guide)."""

UNVERIFIED_FAMILIES = frozenset({"g7", "g7e", "p6-b300", "p6e-gb200"})
"""In botocore's enums, but their instance storage is not in the sources above as of this table: treated as
EBS-only (the key is sent; a rejection would name the reason)."""


def family(instance_type: str) -> str:
    """`ml.g5.xlarge` -> `g5` (the part between `ml.` and the size)."""
    parts = instance_type.split(".")
    return parts[1] if len(parts) == 3 and parts[0] == "ml" else ""


def has_instance_storage(instance_type: str) -> bool:
    """True for an ML instance type whose family has local NVMe storage (SageMaker refuses a volume KMS key)."""
    return family(instance_type) in NVME_FAMILIES
