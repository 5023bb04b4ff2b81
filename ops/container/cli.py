"""TARGET=container's commands: the local target's (ops/local/cli.py), with the trainer and the server in their
images under Docker, run the way SageMaker runs them (session.py); jobs live in .deepcloud/container/.
`images` builds both images here without network (`make images`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ops.container import session
from ops.container.images import LocalImage
from ops.local.cli import LocalTarget, Served, header
from ops.local.train import TrainResult, latest_model
from ops.paths import Paths


class ContainerTarget(LocalTarget):
    """The local target's commands on one :class:`~ops.container.session.Session` (its engine and images)."""

    name = "container"

    def __init__(self, paths: Paths, repo: Path) -> None:
        super().__init__(paths, repo)
        self.session = session.Session(paths, repo)

    def run(self, command: str, args: argparse.Namespace) -> object:
        try:
            return super().run(command, args)
        finally:
            self.session.close()

    def _train(self, hyperparameters: dict[str, str]) -> TrainResult:
        result = session.train(self.session, self.paths.dataset, hyperparameters)
        print(f"artifact {result.model_dir}", flush=True)
        print(f"report {result.report}", flush=True)
        return result

    def latest_model(self) -> Path:
        return latest_model(self.session.paths, self.name)

    def _deploy(self, model: Path, port: int) -> Served:
        deployment = session.deploy(self.session, model, port=port)
        print(
            f"serving {deployment.url}/invocations  container {deployment.container}  image {deployment.image}",
            flush=True,
        )
        return deployment

    def read_deployment(self) -> Served | None:
        return session.read_deployment(self.paths)

    def _destroy(self) -> list[str]:
        return session.destroy(self.session)

    def images(self, args: argparse.Namespace) -> dict[str, LocalImage]:
        header("images: trainer and serving, built here without network")
        return session.build_images(self.session)

    def summary_lines(self) -> list[str]:
        return [
            "images                      "
            + "  ".join(
                f"{image.ref} ({f'built in {image.seconds:.0f} s' if image.built else 'up to date'})"
                for image in self.session.images.values()
            )
        ]
