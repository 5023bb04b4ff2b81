"""TorchServe's config.properties for a local comparison run: every API on 127.0.0.1, nothing extra on.

Shared by ``make bench-serve`` and tests/serving/test_torchserve_compat.py, so both run TorchServe the same way.
"""

from __future__ import annotations

from pathlib import Path


def write_config(path: Path, store: Path, ports: tuple[int, int, int, int, int]) -> None:
    """``ports``: inference, management, metrics, gRPC inference, gRPC management (all free, on 127.0.0.1)."""
    inference, management, metrics, grpc_inference, grpc_management = ports
    path.write_text(
        "\n".join(
            [
                f"inference_address=http://127.0.0.1:{inference}",
                f"management_address=http://127.0.0.1:{management}",
                f"metrics_address=http://127.0.0.1:{metrics}",
                "grpc_inference_address=127.0.0.1",
                f"grpc_inference_port={grpc_inference}",
                "grpc_management_address=127.0.0.1",
                f"grpc_management_port={grpc_management}",
                "disable_token_authorization=true",  # a local comparison; the management API is on 127.0.0.1 only
                "enable_metrics_api=false",
                "disable_system_metrics=true",
                "default_workers_per_model=1",
                "install_py_dep_per_model=false",  # never pip-install an archive's requirements
                f"model_store={store}",
                "",
            ]
        )
    )
