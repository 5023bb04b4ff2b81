"""BACKEND=sagemaker: the same trainer image as a SageMaker training job.

Managed spot (``EnableManagedSpotTraining``), with ``MaxWaitTimeInSeconds`` above ``MaxRuntimeInSeconds`` so
the job may wait for spot capacity and resume after an interruption; ``CheckpointConfig`` syncs
/opt/ml/checkpoints with ``s3://<artifacts>/checkpoints/<run-id>/``; the stack's KMS key encrypts the output, and
the volume on EBS-backed instance types (SageMaker refuses a volume key for types with local NVMe storage, such as
the default ml.g5.xlarge, which their hardware encrypts: infra/instance_storage.py); network isolation and the
stack's subnets and security group (the container reaches nothing, SageMaker moves the data). SageMaker writes
``models/<run-id>/output/model.tar.gz``; ops copies it to ``models/<run-id>/model.tar.gz`` so both backends leave the
model in the same place.

``INSTANCE_COUNT=N`` makes it one job on N instances (``ResourceConfig.InstanceCount``). Every channel stays
``FullyReplicated``: each host gets the whole channel and the trainer shards it by rank. Network isolation still
lets the instances of one job talk to each other, and the stack's security group admits itself
(docs/aws-behaviours.md S20). The job also names ``MetricDefinitions`` (regexes over the trainer's ``key=value``
log lines, for SageMaker's charts and CloudWatch) and a ``TensorBoardOutputConfig`` that syncs
/opt/ml/output/tensorboard to ``models/<run-id>/tensorboard/``. SageMaker writes one log stream per host,
``<run-id>/algo-<n>-<epoch>``; with more than one host each line shown is labelled with its host. No
``MlflowConfig``: a network-isolated container cannot reach an MLflow tracking server (docs/aws-behaviours.md S25).
"""

from __future__ import annotations

from datetime import UTC, datetime

from botocore.exceptions import ClientError

from infra.engine import STACK_TAG
from infra.instance_storage import has_instance_storage
from ops.aws import runs
from ops.aws.console import Phases, say
from ops.aws.context import Context
from ops.aws.images import Image
from ops.aws.logs import GroupTail
from ops.aws.prices import usd
from ops.aws.stack import StackOutputs
from ops.aws.training.base import RUN_ID_TAG, Outcome, RunRecord
from ops.errors import OpsError

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
SPOT_WAIT_S = 3600
"""How much longer than the maximum runtime a job may wait for spot capacity (MaxWaitTimeInSeconds)."""
VOLUME_GIB = 50
PHASES = {
    "Starting": "waiting for capacity",
    "LaunchingMLInstances": "waiting for capacity",
    "Interrupted": "spot interruption: waiting for capacity",
    "PreparingTrainingStack": "preparing",
    "Downloading": "downloading data",
    "DownloadingTrainingImage": "pulling",
    "Training": "running",
    "Restarting": "restarting",
    "Uploading": "uploading the model",
    "Stopping": "stopping",
}
TERMINAL = ("Completed", "Failed", "Stopped")
TENSORBOARD_LOCAL = "/opt/ml/output/tensorboard"
"""Where the trainer writes TensorBoard event files; SageMaker's default TensorBoardOutputConfig.LocalPath (botocore's
model), named anyway so the request says what the trainer relies on."""
TENSORBOARD_PREFIX = "tensorboard/"
"""Under models/<run-id>/: the training role may write there (infra/components/training_task.py, models/ prefix)."""

_NUMBER = r"([-+]?[0-9]*[.]?[0-9]+(?:[eE][-+]?[0-9]+)?)"
"""One number as the trainer prints it (``f"{v:.6g}"`` or ``f"{v:.4f}"``: 0.375949, 1e-05, 0); nan and inf do not
match, so no point is published for them."""
METRIC_DEFINITIONS = (
    # SageMaker searches each line of the job's stdout and stderr with each Regex and publishes the first group as
    # a value of the metric Name ("Define training metrics" in the SageMaker guide; botocore's MetricDefinition:
    # Name up to 255 characters, Regex up to 500, at most 40 definitions). Only character classes, `*`, `+`, `?`
    # and groups are used, which every regex engine reads alike. The lines come from trainer/metrics_log.py MetricsLog
    # (`step=...` every log_every_steps, `epoch=...` after each epoch) and the end of trainer/__main__.py run()
    # (the shipped model's `validation_...` and `test_...`); tests/ops/test_aws_metrics.py runs the real trainer
    # and checks every regex against what it printed.
    {"Name": "train:batch_loss", "Regex": rf"step=[0-9]+ epoch=[0-9]+ loss={_NUMBER}"},
    {"Name": "train:learning_rate", "Regex": rf"step=[0-9]+ epoch=[0-9]+ loss=[^ ]+ lr={_NUMBER}"},
    {"Name": "train:loss", "Regex": rf"train_loss={_NUMBER}"},
    {"Name": "train:accuracy", "Regex": rf"train_accuracy={_NUMBER}"},
    # Per epoch, then once more for the exported model the job ships (its last point).
    {"Name": "validation:loss", "Regex": rf"validation_loss={_NUMBER}"},
    {"Name": "validation:accuracy", "Regex": rf"validation_accuracy={_NUMBER}"},
    {"Name": "test:loss", "Regex": rf"test_loss={_NUMBER}"},
    {"Name": "test:accuracy", "Regex": rf"test_accuracy={_NUMBER}"},
)


def job_request(
    out: StackOutputs,
    record: RunRecord,
    image: Image,
    channels: dict[str, str],
    instance_type: str,
    max_runtime: int,
    stack_tag: str,
    instance_count: int = 1,
) -> dict:
    """The CreateTrainingJob request (kept apart so tests can read it whole)."""
    run_id = record.run_id
    return {
        "TrainingJobName": run_id,
        "AlgorithmSpecification": {
            "TrainingImage": image.uri,
            "TrainingInputMode": "File",
            "MetricDefinitions": [dict(d) for d in METRIC_DEFINITIONS],
        },
        "RoleArn": out.training_role_arn,
        "HyperParameters": dict(record.hyperparameters),
        "InputDataConfig": [
            {
                "ChannelName": name,
                "InputMode": "File",
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": uri,
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
            }
            for name, uri in channels.items()
        ],
        "OutputDataConfig": {"S3OutputPath": f"s3://{out.artifacts_bucket}/{runs.MODELS}", "KmsKeyId": out.kms_key_arn},
        "ResourceConfig": resource_config(instance_type, out.kms_key_arn, instance_count),
        "StoppingCondition": {"MaxRuntimeInSeconds": max_runtime, "MaxWaitTimeInSeconds": max_runtime + SPOT_WAIT_S},
        "EnableManagedSpotTraining": True,
        "CheckpointConfig": {"S3Uri": record.checkpoint_uri, "LocalPath": "/opt/ml/checkpoints"},
        "TensorBoardOutputConfig": {"LocalPath": TENSORBOARD_LOCAL, "S3OutputPath": tensorboard_uri(out, run_id)},
        "VpcConfig": {"SecurityGroupIds": [out.security_group_id], "Subnets": list(out.subnet_ids)},
        "EnableNetworkIsolation": True,
        "EnableInterContainerTrafficEncryption": True,
        "Environment": {"DEEPCLOUD_GIT_REVISION": image.tag.split("-", 1)[0]},
        "Tags": [{"Key": STACK_TAG, "Value": stack_tag}, {"Key": RUN_ID_TAG, "Value": run_id}],
    }


def tensorboard_uri(out: StackOutputs, run_id: str) -> str:
    """Beside the run's model: s3://<artifacts>/models/<run-id>/tensorboard/."""
    return f"s3://{out.artifacts_bucket}/{runs.MODELS}{run_id}/{TENSORBOARD_PREFIX}"


def resource_config(instance_type: str, kms_key_arn: str, instance_count: int = 1) -> dict:
    """``instance_count`` instances; the stack's key for their volumes unless the type has local NVMe storage, where
    SageMaker refuses a VolumeKmsKeyId ("You can't request a VolumeKmsKeyId when using an instance type with local
    storage", botocore's CreateTrainingJob model) because that storage is encrypted by the instance's hardware."""
    config = {"InstanceType": instance_type, "InstanceCount": instance_count, "VolumeSizeInGB": VOLUME_GIB}
    if not has_instance_storage(instance_type):
        config["VolumeKmsKeyId"] = kms_key_arn
    return config


class SageMakerBackend:
    name = "sagemaker"

    def __init__(self, ctx: Context, instance_type: str, instance_count: int = 1) -> None:
        if not ctx.outputs.training_role_arn:
            raise OpsError(
                f"stack '{ctx.stack.name}' has no output training_role_arn (the role SageMaker training "
                "jobs run as): BACKEND=sagemaker needs it; use BACKEND=ecs or update infra/"
            )
        self.ctx = ctx
        self.instance_type = instance_type
        self.instance_count = instance_count
        self.sagemaker = ctx.aws.client("sagemaker")
        self.tail: GroupTail | None = None
        self.transitions = 0

    def price(self) -> tuple[str, float, str]:
        price = self.ctx.prices.get("sagemaker_training", self.instance_type)
        hosts = f"{self.instance_count} x " if self.instance_count > 1 else ""
        return self.instance_type, price.usd_per_hour, f"{hosts}{self.instance_type} (SageMaker managed spot)"

    def prepare(self, image: Image) -> None:
        """Nothing to do: a training job names its image itself."""

    def launch(self, record: RunRecord, image: Image, channels: dict[str, str], max_runtime: int) -> None:
        request = job_request(
            self.ctx.outputs,
            record,
            image,
            channels,
            self.instance_type,
            max_runtime,
            self.ctx.stack.tag,
            self.instance_count,
        )
        self.sagemaker.create_training_job(**request)
        record.job_name = record.run_id
        record.instance_type = self.instance_type
        record.log_group = LOG_GROUP
        record.log_stream_prefix = f"{record.run_id}/"
        since_ms = int(datetime.now(UTC).timestamp() * 1000) - 60_000
        self.tail = GroupTail(
            self.ctx.aws.client("logs"),
            LOG_GROUP,
            since_ms,
            prefix=record.log_stream_prefix,
            label_hosts=self.instance_count > 1,
        )
        hosts = f"{self.instance_count} x " if self.instance_count > 1 else ""
        say(f"job          {record.job_name} ({hosts}{self.instance_type})")
        say(
            f"logs         {LOG_GROUP} {record.log_stream_prefix}*"
            + (f" (one stream per host, algo-1 to algo-{self.instance_count})" if self.instance_count > 1 else "")
        )
        say(f"tensorboard  {request['TensorBoardOutputConfig']['S3OutputPath']}")

    def watch(self, record: RunRecord, max_runtime: int, phases: Phases) -> Outcome:
        hourly = record.usd_per_hour_max
        while True:
            job = self.sagemaker.describe_training_job(TrainingJobName=record.job_name)
            for transition in job.get("SecondaryStatusTransitions", [])[self.transitions :]:
                self.transitions += 1
                secondary = transition.get("Status", "")
                phases.enter(PHASES.get(secondary, secondary.lower()), transition.get("StatusMessage", ""))
            if self.tail is not None:
                for line in self.tail.poll():
                    say(f"  | {line}")
            status = job.get("TrainingJobStatus", "")
            if status in TERMINAL:
                phases.enter("stopped", f"{status} ({job.get('SecondaryStatus', '')})")
                billed = job.get("BillableTimeInSeconds")
                lines = self.tail.lines if self.tail else []
                if status == "Completed":
                    record.model_output_uri = job.get("ModelArtifacts", {}).get("S3ModelArtifacts", "")
                    return Outcome("Completed", 0, "the training job completed", billed, lines)
                reason = job.get("FailureReason") or job.get("SecondaryStatus", "") or status
                return Outcome("Stopped" if status == "Stopped" else "Failed", None, reason, billed, lines)
            billed = job.get("BillableTimeInSeconds") or job.get("TrainingTimeInSeconds")
            if billed:
                phases.status(f"at most {usd(hourly * billed / 3600)} so far")
            self.ctx.wait()

    def stop(self, record: RunRecord, reason: str) -> None:
        self.sagemaker.stop_training_job(TrainingJobName=record.job_name)

    def idle_note(self, record: RunRecord) -> str | None:
        """Nothing: SageMaker bills a training job until it ends, and releases its instance itself."""
        return None

    def collect(self, record: RunRecord, outcome: Outcome) -> None:
        """Copy SageMaker's output/model.tar.gz to models/<run-id>/model.tar.gz (a server-side copy)."""
        bucket = self.ctx.outputs.artifacts_bucket
        source = record.model_output_uri or f"s3://{bucket}/{runs.MODELS}{record.run_id}/output/{runs.ARCHIVE}"
        if not source.startswith(f"s3://{bucket}/"):
            raise OpsError(f"the training job wrote its model to {source}, outside s3://{bucket}/")
        key = source[len(f"s3://{bucket}/") :]
        s3 = self.ctx.aws.client("s3")
        try:
            s3.copy({"Bucket": bucket, "Key": key}, bucket, runs.model_key(record.run_id))
        except ClientError as exc:
            raise OpsError(f"cannot copy {source} to {record.model_uri}: {exc}") from None
