"""The stack's building blocks, one ComponentResource each (type tokens deepcloud:index:<Name>)."""

from infra.components.artifact_store import ArtifactStore, ArtifactStoreArgs
from infra.components.gpu_capacity import GpuCapacity, GpuCapacityArgs
from infra.components.image_repos import ImageRepos, ImageReposArgs
from infra.components.inference_endpoint import InferenceEndpoint, InferenceEndpointArgs
from infra.components.monthly_budget import MonthlyBudget, MonthlyBudgetArgs
from infra.components.network import Network, NetworkArgs
from infra.components.spot_interruption import SpotInterruption, SpotInterruptionArgs
from infra.components.training_task import TrainingTask, TrainingTaskArgs

__all__ = [
    "ArtifactStore",
    "ArtifactStoreArgs",
    "GpuCapacity",
    "GpuCapacityArgs",
    "ImageRepos",
    "ImageReposArgs",
    "InferenceEndpoint",
    "InferenceEndpointArgs",
    "MonthlyBudget",
    "MonthlyBudgetArgs",
    "Network",
    "NetworkArgs",
    "SpotInterruption",
    "SpotInterruptionArgs",
    "TrainingTask",
    "TrainingTaskArgs",
]
