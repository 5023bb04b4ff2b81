"""Today's peer servers in `make bench-serve`: their virtual environments, start functions and answer adapters.

Each peer lives in its own virtual environment, ``.venv-peers/<name>/`` (git-ignored), so none of them can
change the project's torch. When one is missing (or its requirements file changed since it was made) the
bench creates it and prints every step: ``python -m venv``, then ``pip install torch==2.13.0`` first (the CPU
wheel this machine keeps on disk), then ``pip install -r requirements/peers/<name>.txt -c
requirements/peers/torch.txt`` (the peer and everything it pulls in, pinned; the torch pin repeated as a
constraint so pip cannot replace torch), then a check that the venv's ``torch.__version__`` is still 2.13.0
and CPU-only (``torch.version.cuda`` None). ``--no-install`` stops with one line instead.

Every peer app is a small file, bench/serve_support/peer_<name>.py, run by that venv's python with
peer_common.py beside it: the same ``model.pt2`` through ``torch.export.load``, the same checks, forward and
JSON as the TorchServe handler, the same torch thread count; bound to 127.0.0.1 only. Batching is each
peer's own: for the cnn at the workload's batch size and delay, for the mlp at the peer's defaults (as
TorchServe's row runs at its default batch 1). Each is started in its own session by ``_spawn`` like every
other server, and every process it starts (LitServe's inference worker and API server, Triton's server
binary and Python stub) stays in that session, so the peak RSS column sums the whole tree.

- **litserve**: ``LitServer(LitAPI(max_batch_size, batch_timeout), accelerator="cpu", devices=1,
  workers_per_device=1)``, ``run(host="127.0.0.1")``, on ``POST /predict`` with the workload's body.
- **pytriton**: ``nvidia-pytriton``'s ``Triton``/``bind``/``serve`` with ``ModelConfig(max_batch_size,
  DynamicBatcher(max_queue_delay_microseconds))``; clients speak Triton's KServe v2 protocol, so its body is
  the same instance as a v2 JSON tensor (``POST /v2/models/NAME/infer``) and its answer (three output
  tensors) is turned back into ``{"predictions": [...]}`` before the check. The bench reads the batch
  settings back from Triton's ``/v2/models/NAME/config``.
- **mlserver**: ``mlserver start DIR`` with a settings.json (HTTP and gRPC on 127.0.0.1, metrics server off)
  and a model-settings.json naming the custom runtime peer_mlserver.BenchModel, its adaptive batching
  ``max_batch_size``/``max_batch_time`` for the cnn; the same v2 body and answer as Triton.
- **bentoml**: ``bentoml serve peer_bentoml:BenchService --host 127.0.0.1`` (BentoML's CLI, run in-process by
  peer_bentoml.py so that its workers stay in the server's session: circus calls ``os.setsid()`` in each),
  a ``@bentoml.service`` (one worker, metrics off) with ``@bentoml.api(batchable=True, max_batch_size,
  max_latency_ms)`` for the cnn, its defaults for the mlp, on ``POST /predict`` with the workload's body.
  BentoML has no batch-wait knob (its wait is learnt); ``max_latency_ms`` is a deadline past which it answers
  503, so the bench passes wrk's 30 s timeout. It answers the list of predictions, which
  ``bentoml_predictions`` wraps. ``BENTOML_HOME`` is a folder of the work dir.
- **rayserve**: peer_rayserve.py: ``ray.init(include_dashboard=False, _temp_dir=SCRATCH)``,
  ``serve.start(http_options={"host": "127.0.0.1"})``, ``serve.run`` of one replica of a
  ``@serve.deployment`` with ``@serve.batch(max_batch_size, batch_wait_timeout_s)`` for the cnn, defaults for
  the mlp, on ``POST /predict``. Ray's session dir and sockets go to a short /tmp/dc-ray-* that the bench
  removes (``TMPDIR`` too, so nothing lands in /tmp/ray); every Ray process stays in the session.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SUPPORT = Path(__file__).resolve().parent / "serve_support"
VENVS = REPO / ".venv-peers"
REQUIREMENTS = REPO / "requirements" / "peers"
TORCH = "torch==2.13.0"
"""Installed first in every peer venv, then repeated as a constraint (requirements/peers/torch.txt): the CPU wheel."""
PEERS = ("litserve", "pytriton", "mlserver", "bentoml", "rayserve")
"""In the bench's order; each has requirements/peers/<name>.txt and serve_support/peer_<name>.py."""
PACKAGE = {
    "litserve": "litserve",
    "pytriton": "nvidia-pytriton",
    "mlserver": "mlserver",
    "bentoml": "bentoml",
    "rayserve": "ray",
}
MARKER = ".deepcloud-requirements"
"""In each venv: the sha256 of the requirements file it was installed from (a change reinstalls)."""


class PeerError(Exception):
    """A peer venv could not be made or is wrong; the message is one line."""


def venv_python(name: str) -> Path:
    return VENVS / name / "bin" / "python"


def _digest(name: str) -> str:
    text = (REQUIREMENTS / f"{name}.txt").read_bytes() + (REQUIREMENTS / "torch.txt").read_bytes()
    return hashlib.sha256(text).hexdigest()


def installed(name: str) -> bool:
    marker = VENVS / name / MARKER
    return venv_python(name).exists() and marker.exists() and marker.read_text().strip() == _digest(name)


def torch_build(python: Path) -> tuple[str, str | None]:
    """``torch.__version__`` and ``torch.version.cuda`` as that interpreter imports them."""
    code = "import json, torch; print(json.dumps([torch.__version__, torch.version.cuda]))"
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise PeerError(f"{python} cannot import torch: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    version, cuda = json.loads(done.stdout.strip().splitlines()[-1])
    return version, cuda


def check_torch(name: str) -> str:
    version, cuda = torch_build(venv_python(name))
    if version.split("+")[0] != TORCH.split("==")[1] or cuda is not None:
        raise PeerError(
            f"{name}: .venv-peers/{name} has torch {version} (CUDA {cuda}), not the CPU build of "
            f"{TORCH}: remove .venv-peers/{name} and re-run"
        )
    return version


def _run_loud(cmd: list[str]) -> None:
    print(f"install   {' '.join(cmd)}", flush=True)
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    done = subprocess.run(cmd, check=False, stdout=sys.stderr, stderr=sys.stderr, env=env)
    if done.returncode != 0:
        raise PeerError(f"exit {done.returncode}: {' '.join(cmd)}")


def ensure(name: str, install: bool) -> str:
    """The peer's venv, made when missing; returns its torch version. PeerError (one line) when it cannot be."""
    if installed(name):
        return check_torch(name)
    venv = VENVS / name
    if not install:
        raise PeerError(
            f"{name} is not installed in .venv-peers/{name} (run without --no-install, or leave it out of --servers)"
        )
    if venv.exists():
        shutil.rmtree(venv)
    _run_loud([sys.executable, "-m", "venv", str(venv)])
    pip = [str(venv_python(name)), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    _run_loud([*pip, TORCH])
    _run_loud([*pip, "-r", str(REQUIREMENTS / f"{name}.txt"), "-c", str(REQUIREMENTS / "torch.txt")])
    version = check_torch(name)
    (venv / MARKER).write_text(_digest(name) + "\n")
    return version


def package_version(name: str) -> str:
    code = f"from importlib.metadata import version; print(version({PACKAGE[name]!r}))"
    done = subprocess.run(
        [str(venv_python(name)), "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    return done.stdout.strip() or "?"


def peer_env(name: str, env: dict[str, str]) -> dict[str, str]:
    """The bench's environment for a peer: its own venv first on PATH, and no PYTHONPATH into this repo's venv."""
    out = {**env, "VIRTUAL_ENV": str(VENVS / name), "PATH": f"{VENVS / name / 'bin'}{os.pathsep}{env.get('PATH', '')}"}
    out.pop("PYTHONPATH", None)
    if name in ("mlserver", "rayserve"):  # MLServer's runtime and Ray's replica workers import peer_common
        out["PYTHONPATH"] = str(SUPPORT)
    if name == "bentoml":  # no usage reports; its home (model store, Prometheus dir) is set by the bench
        out["BENTOML_DO_NOT_TRACK"] = "True"
    if name == "rayserve":
        out["RAY_USAGE_STATS_ENABLED"] = "0"
    if name == "pytriton":
        # Triton's Python stub links libpython3.X.so.1.0 and takes the first on the loader's path; it must be
        # the one of the interpreter the venv was made from, whose standard library the stub then imports.
        libdir = sysconfig.get_config_var("LIBDIR")
        if libdir and (Path(libdir) / sysconfig.get_config_var("INSTSONAME")).exists():
            out["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, (libdir, env.get("LD_LIBRARY_PATH"))))
    return out


# ----------------------------------------------------------------------------------------- Triton's v2 protocol


def v2_body(instances_body: Path, out: Path) -> Path:
    """The workload's ``{"instances": [x]}`` as a KServe v2 JSON request: input ``x``, FP32, batch first."""
    import numpy as np

    array = np.asarray(json.loads(instances_body.read_text())["instances"], dtype=np.float32)
    body = {
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": list(array.shape), "data": [float(v) for v in array.ravel()]}
        ]
    }
    out.write_text(json.dumps(body, separators=(",", ":")))
    return out


def v2_predictions(answer: bytes) -> bytes:
    """A v2 response (``probabilities``, ``index``, ``label`` tensors) as ``{"predictions": [...]}``."""
    outputs = {o["name"]: o for o in json.loads(answer)["outputs"]}
    probs, index, label = outputs["probabilities"], outputs["index"], outputs["label"]
    rows, width = probs["shape"][0], probs["shape"][1]
    predictions: list[dict[str, Any]] = []
    for i in range(rows):
        predictions.append(
            {
                "label": label["data"][i],
                "index": index["data"][i],
                "probabilities": probs["data"][i * width : (i + 1) * width],
            }
        )
    return json.dumps({"predictions": predictions}).encode()


def bentoml_predictions(answer: bytes) -> bytes:
    """BentoML's answer, the JSON list ``predict`` returned (a prediction per instance), as ``{"predictions": ...}``."""
    predictions = json.loads(answer)
    if not isinstance(predictions, list):
        raise ValueError(f"expected a JSON list, got {type(predictions).__name__}")
    return json.dumps({"predictions": predictions}).encode()


BENTOML_MAX_LATENCY_MS = 30_000
"""BentoML's ``max_latency_ms`` for the cnn: wrk's ``--timeout 30s``, so BentoML never sheds (503) a request the
client still waits for. It is a deadline, not a batch window: BentoML learns how long to wait for a batch."""


def bentoml_args(model_dir: Path, threads: int, port: int, batch: int | None) -> list[str]:
    """peer_bentoml.py's arguments (``bentoml serve``'s): loopback and its Bento arguments; ``batch`` None: defaults."""
    args = [
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--arg",
        f"model_dir={model_dir}",
        "--arg",
        f"threads={threads}",
    ]
    if batch is not None:
        args += ["--arg", f"max_batch_size={batch}", "--arg", f"max_latency_ms={BENTOML_MAX_LATENCY_MS}"]
    return args


def rayserve_args(
    model_dir: Path, threads: int, port: int, temp_dir: Path, batch: int | None, delay_ms: int
) -> list[str]:
    """peer_rayserve.py's arguments; ``batch`` None: the deployment's defaults, no ``@serve.batch``."""
    args = ["--model-dir", str(model_dir), "--port", str(port), "--threads", str(threads), "--temp-dir", str(temp_dir)]
    if batch is not None:
        args += ["--max-batch-size", str(batch), "--batch-wait-ms", str(delay_ms)]
    return args


def write_mlserver_settings(
    home: Path, name: str, model_dir: Path, threads: int, ports: list[int], batch: int | None, delay_ms: int
) -> Path:
    """settings.json and NAME/model-settings.json for ``mlserver start HOME``; ``batch`` None: MLServer's defaults."""
    (home / name).mkdir(parents=True)
    settings = {
        "host": "127.0.0.1",
        "http_port": ports[0],
        "grpc_port": ports[1],
        "metrics_port": ports[2],
        "metrics_endpoint": None,
        "debug": False,
        "load_models_at_startup": True,
    }
    (home / "settings.json").write_text(json.dumps(settings, indent=2))
    model: dict[str, Any] = {
        "name": name,
        "implementation": "peer_mlserver.BenchModel",
        "parameters": {"uri": str(model_dir), "extra": {"threads": threads}},
    }
    if batch is not None:
        model.update(max_batch_size=batch, max_batch_time=delay_ms / 1000)
    (home / name / "model-settings.json").write_text(json.dumps(model, indent=2))
    return home


def short_dir(prefix: str) -> Path:
    """A directory with a short path (Unix socket paths hold 108 bytes), for the caller to remove."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
