"""What every training backend shares: the options of a run, the backend protocol, its outcome, and the run record
``run.json`` the run keeps beside its model (runs.py says where). The backends (ecs.py, sagemaker.py) import this
module and nothing else of the package; run.py drives them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ops.errors import OpsError

if TYPE_CHECKING:
    from ops.aws.console import Phases
    from ops.aws.images import Image

BACKENDS = ("ecs", "sagemaker")
DEFAULT_BACKEND = "ecs"
DEFAULT_INSTANCE_TYPE = "ml.g5.xlarge"
"""``INSTANCE_TYPE`` unless given: BACKEND=sagemaker's training instance (ECS uses the stack's GPU capacity)."""
DEFAULT_MAX_HOURS = 24.0
RUN_ID_TAG = "deepcloud:run-id"
"""Tag on a run's ECS task or SageMaker job, beside the stack tag (infra.engine.STACK_TAG): which run it is."""
EXIT_STOPPED = 143
"""The trainer's exit code after SIGTERM and a checkpoint (trainer/__main__.py)."""


def check_backend(backend: str) -> str:
    """``backend`` when it is one of :data:`BACKENDS`, else an OpsError naming them."""
    if backend not in BACKENDS:
        raise OpsError(f"BACKEND={backend} is not a training backend: use ecs (default) or sagemaker")
    return backend


def instance_count(text: str | None, backend: str) -> int:
    """``INSTANCE_COUNT`` as given (default 1), checked once for every command that reads it: a positive whole
    number, and 1 unless the backend is SageMaker."""
    if text is None or text.strip() == "":
        return 1
    try:
        count = int(text.strip())
    except ValueError:
        count = 0
    if count < 1:
        raise OpsError(f"INSTANCE_COUNT={text!r} is not a positive whole number: write e.g. INSTANCE_COUNT=2")
    if count > 1 and backend != "sagemaker":
        raise OpsError(
            f"INSTANCE_COUNT={count} needs BACKEND=sagemaker: BACKEND={backend} runs one instance per "
            f"run; use `make train TARGET=aws BACKEND=sagemaker INSTANCE_COUNT={count}`"
        )
    return count


@dataclass(frozen=True, slots=True)
class TrainOptions:
    hyperparameters: dict[str, str]
    dataset: str = "digits"
    """``DATASET``: its channels are read from ``s3://<data>/<dataset>/`` (`make data TARGET=aws` puts them there)."""
    backend: str = DEFAULT_BACKEND
    max_hours: float = DEFAULT_MAX_HOURS
    max_cost: float | None = None
    instance_type: str = DEFAULT_INSTANCE_TYPE
    """SageMaker only: the training instance type (ECS uses the stack's GPU capacity)."""
    resume: str | None = None
    """Run id whose checkpoints this run starts from."""
    instance_count: int = 1
    """SageMaker only: instances of the one training job (``ResourceConfig.InstanceCount``); from
    ``instance_count()``, which refuses more than one on ECS."""

    def __post_init__(self) -> None:
        check_backend(self.backend)


@dataclass
class Outcome:
    status: str
    """Completed, Failed, Stopped or Interrupted (a spot reclaim stopped it; resumable)."""
    exit_code: int | None
    reason: str
    billed_s: float | None = None
    log_lines: list[str] = field(default_factory=list)


@dataclass(kw_only=True, slots=True)
class RunRecord:
    """``models/<run-id>/run.json``: written when the run starts, again when it ends. `make status` and `make logs`
    read it back as JSON, so a field that is None is left out (`make logs` asks whether ``log_stream`` is there),
    except those that say "none" on purpose: ``max_cost_usd``, and ``exit_code`` once the run has stopped."""

    run_id: str
    backend: str
    stack: str
    created_at: str
    image: str
    image_digest: str
    hyperparameters: dict[str, str]
    channels: dict[str, str]
    model_uri: str
    checkpoint_uri: str
    max_runtime_s: int
    max_cost_usd: float | None
    usd_per_hour_max: float
    """All the run's instances together, at on-demand prices (spot costs less)."""
    instance_count: int
    priced_instance_type: str
    prices: str
    """Where the prices came from and their date."""
    status: str = "Starting"
    """Starting, Running, then the outcome's: Completed, Failed, Stopped or Interrupted."""

    # What the backend's launch fills in.
    task_arn: str | None = None
    """ECS: the task."""
    task_definition: str | None = None
    """ECS: the task definition revision it runs."""
    job_name: str | None = None
    """SageMaker: the training job (named after the run)."""
    instance_type: str | None = None
    """SageMaker: the job's instance type."""
    log_group: str | None = None
    log_stream: str | None = None
    """ECS: the task's one stream."""
    log_stream_prefix: str | None = None
    """SageMaker: one stream per host under it."""
    model_output_uri: str | None = None
    """SageMaker: where the job wrote its model.tar.gz (collect copies it beside the record)."""

    # What the end of the run fills in.
    exit_code: int | None = None
    reason: str | None = None
    stopped_at: str | None = None
    billed_s: int | None = None
    cost_usd_max: float | None = None

    @property
    def launched_as(self) -> str:
        """The task or job, as the messages name it."""
        return self.task_arn or self.job_name or self.run_id

    def to_json(self) -> dict[str, Any]:
        said_none = {"max_cost_usd", *(("exit_code",) if self.stopped_at else ())}
        return {key: value for key, value in asdict(self).items() if value is not None or key in said_none}


class Backend(Protocol):
    name: str

    def price(self) -> tuple[str, float, str]:
        """(instance type priced, worst-case USD per hour of one instance, how the capacity is bought)."""

    def prepare(self, image: Image) -> None:
        """Make the image runnable (ECS: the task definition must name it)."""

    def launch(self, record: RunRecord, image: Image, channels: dict[str, str], max_runtime: int) -> None:
        """Start the run; fill in what identifies it (task ARN, job name, logs) in ``record``."""

    def watch(self, record: RunRecord, max_runtime: int, phases: Phases) -> Outcome:
        """Follow the run until it ends, printing phases and log lines; enforce ``max_runtime``."""

    def stop(self, record: RunRecord, reason: str) -> None:
        """Ask the platform to stop the run (the trainer gets SIGTERM and checkpoints)."""

    def collect(self, record: RunRecord, outcome: Outcome) -> None:
        """After a completed run: make sure the model is at models/<run-id>/model.tar.gz."""

    def idle_note(self, record: RunRecord) -> str | None:
        """What the capacity goes on costing after the run ends, if anything."""
