from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from trainer.artifact import export_program, write_manifest
from trainer.model.build import build_model


def write_tiny_artifact(model_dir: Path, seed: int = 0) -> Path:
    """An untrained 10-class digits-shaped model, written by the trainer's own artifact writer."""
    torch.manual_seed(seed)
    model = build_model("cnn", in_channels=1, num_classes=10, width=4, dropout=0.0, mean=[0.3], std=[0.4])
    model_dir.mkdir(parents=True, exist_ok=True)
    export_program(model, torch.rand(2, 1, 8, 8) * 255, model_dir / "model.pt2")
    write_manifest(
        model_dir,
        input_shape=[1, 8, 8],
        classes=tuple(str(d) for d in range(10)),
        metrics={},
        config={},
        normalization={"mean": [0.3], "std": [0.4]},
    )
    return model_dir


@pytest.fixture(scope="session")
def tiny_artifact_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_artifact(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def tiny_artifact(tiny_artifact_template: Path, tmp_path: Path) -> Path:
    """A private copy, safe to corrupt."""
    import shutil

    return Path(shutil.copytree(tiny_artifact_template, tmp_path / "model"))


@contextlib.contextmanager
def app_client(models, policy=None, **state_kwargs) -> Iterator[tuple]:
    """An in-process app (Starlette TestClient, lifespan running) serving ``models`` once loaded.

    ``models``: an Artifact (served as ``model`` version ``1``) or a list of (name, version, artifact).
    """
    from starlette.testclient import TestClient

    from serving.app import build_app
    from serving.batching import BatchPolicy
    from serving.runner import NativeRunner
    from serving.state import LoadedModel, ServerState

    if not isinstance(models, list):
        models = [("model", "1", models)]
    policy = policy or BatchPolicy()
    state = ServerState(**state_kwargs)
    app = build_app(
        state,
        load=lambda: [
            LoadedModel(n, v, a if not hasattr(a, "manifest") else NativeRunner(a), policy) for n, v, a in models
        ],
    )
    with TestClient(app) as client:
        deadline = time.monotonic() + 30
        while not state.ready:
            assert time.monotonic() < deadline, "the app did not become ready"
            time.sleep(0.01)
        yield client, state
