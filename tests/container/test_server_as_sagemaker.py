"""The serving image as SageMaker hosting runs it: `docker run <image> serve` with the model unpacked read-only at
/opt/ml/model, GET /ping answered within 2 s and 200 within 4 minutes of the start, POST /invocations on port 8080,
SIGTERM on an update or delete and SIGKILL 30 s later (`docker stop -t 30`). Sources: AWS, "Use Your Own Inference
Code with Hosting Services" (How Containers Serve Requests; How SageMaker Runs Your Inference Image). The model is
the one the trainer image trained in tests/container/conftest.py, and every answer is compared with the same
artifact evaluated in this process.

The container shares the host's network (--network=host) and the server binds 127.0.0.1 (DEEPCLOUD_BIND_HOST), so
nothing listens beyond loopback; the image itself binds 0.0.0.0, as SageMaker's network reaches it from outside.
"""

from __future__ import annotations

import csv
import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import free_port, http_request, port_is_free
from tests.container.conftest import Docker

pytestmark = [pytest.mark.container, pytest.mark.slow, pytest.mark.timeout(900)]

SAGEMAKER_PORT = 8080
PING_TIMEOUT_S = 2.0
"""SageMaker's timeout for one GET /ping."""
HEALTHY_WITHIN_S = 240.0
"""SageMaker's limit for a new container to answer /ping with 200."""
STOP_GRACE_S = 30
"""SageMaker's SIGTERM-to-SIGKILL grace period for hosting containers."""


def _test_set(dataset: Path) -> tuple[np.ndarray, list[str], list[bytes]]:
    channel = dataset / "test"
    with (channel / "manifest.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    images = np.stack([np.asarray(Image.open(channel / r["file"]), dtype=np.uint8) for r in rows])
    return images, [r["label"] for r in rows], [(channel / r["file"]).read_bytes() for r in rows]


def _in_process(model: Path, images: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Labels and probabilities of the artifact run by torch in this process, not through serving/."""
    manifest = json.loads((model / "manifest.json").read_text())
    module = torch.export.load(model / "model.pt2").module()
    with torch.no_grad():
        logits = module(torch.from_numpy(images[:, None].astype(np.float32)))
    return [manifest["labels"][i] for i in logits.argmax(dim=1).tolist()], torch.softmax(logits, dim=1).numpy()


def _start_server(docker: Docker, image: str, model: Path, port: int, *args: str) -> str:
    name = docker.name("serve")
    port_env = [] if port == SAGEMAKER_PORT else ["--env", f"SAGEMAKER_BIND_TO_PORT={port}"]
    docker(
        "run",
        "--detach",
        "--name",
        name,
        "--network=host",
        "--volume",
        f"{model}:/opt/ml/model:ro",
        "--env",
        "DEEPCLOUD_BIND_HOST=127.0.0.1",
        *port_env,
        *args,
        image,
        "serve",
    )
    return name


def _wait_until_healthy_ping(docker: Docker, name: str, port: int) -> float:
    """Seconds from now until GET /ping is 200, probed as SageMaker probes: a refused connection or an answer later
    than 2 s is a failed probe, a 503 means loading; then /ping must stay 200 and quick."""
    started = time.monotonic()
    while time.monotonic() - started < HEALTHY_WITHIN_S:
        assert docker.state(name)["Running"], f"the server exited:\n{docker.logs(name)[-3000:]}"
        try:
            status, _, _ = http_request(port, "GET", "/ping", timeout=PING_TIMEOUT_S)
        except (ConnectionRefusedError, TimeoutError):
            time.sleep(0.1)
            continue
        if status == 200:
            ready_in = time.monotonic() - started
            for _ in range(20):
                probed = time.monotonic()
                assert http_request(port, "GET", "/ping", timeout=PING_TIMEOUT_S)[0] == 200
                assert time.monotonic() - probed < PING_TIMEOUT_S
            return ready_in
        assert status == 503, f"/ping answered {status} while loading; 503 until ready, then 200"
        time.sleep(0.1)
    raise AssertionError(f"/ping not 200 within SageMaker's {HEALTHY_WITHIN_S:.0f} s:\n{docker.logs(name)[-3000:]}")


def _invoke(port: int, body: bytes, content_type: str) -> dict:
    status, _, raw = http_request(
        port, "POST", "/invocations", body, {"Content-Type": content_type, "Accept": "application/json"}, timeout=60
    )
    assert status == 200, raw[:500]
    return json.loads(raw)


def _stop(docker: Docker, name: str) -> float:
    started = time.monotonic()
    docker("stop", "--time", str(STOP_GRACE_S), name, timeout=STOP_GRACE_S + 60)
    return time.monotonic() - started


@pytest.mark.parametrize("user", [None, "10001:10001"], ids=["as-root", "as-uid-10001"])
def test_serves_the_trained_model_as_sagemaker_runs_it(
    docker: Docker, images: dict[str, str], sagemaker_job: Path, dataset: Path, user: str | None
) -> None:
    """As root (what SageMaker does) on SageMaker's port 8080, and as the image's unprivileged user, where the
    platform lets one choose it."""
    port = SAGEMAKER_PORT if user is None else free_port()
    assert port_is_free(port), f"port {port} is taken on this machine; the root case serves on SageMaker's 8080"
    model = sagemaker_job / "model"
    test_images, labels, pngs = _test_set(dataset)
    expected, probabilities = _in_process(model, test_images)
    assert np.mean([a == b for a, b in zip(expected, labels, strict=True)]) >= 0.95

    name = _start_server(docker, images["serving"], model, port, *(["--user", user] if user else []))
    ready_in = _wait_until_healthy_ping(docker, name, port)

    over_http = [
        _invoke(port, json.dumps({"instances": [image.tolist()]}).encode(), "application/json")["predictions"][0]
        for image in test_images
    ]
    assert [p["label"] for p in over_http] == expected, "JSON answers differ from the in-process model"
    np.testing.assert_allclose([p["probabilities"] for p in over_http], probabilities, atol=1e-5)
    as_png = [_invoke(port, png, "image/png")["predictions"][0]["label"] for png in pngs]
    assert as_png == expected, "PNG answers differ from the in-process model"

    deadline = time.monotonic() + 120  # the image's HEALTHCHECK probes every 30 s
    while (health := docker.state(name)["Health"]["Status"]) != "healthy":
        assert health == "starting", f"HEALTHCHECK says {health}: {docker.state(name)['Health']['Log'][-1:]}"
        assert time.monotonic() < deadline, "the HEALTHCHECK never reported healthy"
        time.sleep(1)

    stopped_in = _stop(docker, name)
    state = docker.state(name)
    assert state["ExitCode"] == 0, f"{state}\n{docker.logs(name)[-3000:]}"
    assert stopped_in < STOP_GRACE_S, f"docker stop took {stopped_in:.1f} s: SageMaker would have killed it"
    assert "Traceback" not in docker.logs(name)
    assert port_is_free(port), "the port is still taken after the container stopped"
    print(f"ready in {ready_in:.1f} s, stopped in {stopped_in:.1f} s")


def _queued(port: int) -> float:
    _, _, text = http_request(port, "GET", "/metrics")
    return sum(float(v) for v in re.findall(r"^deepcloud_queue_depth\{[^}]*\} (\S+)$", text.decode(), re.M))


def test_docker_stop_drains_the_requests_in_flight_and_exits_0(
    docker: Docker, images: dict[str, str], sagemaker_job: Path, dataset: Path
) -> None:
    """Requests held in the batcher on purpose (a 3 s batch delay, a batch of 64 that never fills) are in flight
    when SIGTERM arrives: each is still answered, right, and the server then exits 0 within the grace period."""
    port = free_port()
    model = sagemaker_job / "model"
    test_images, _, _ = _test_set(dataset)
    batches = [test_images[i * 3 : i * 3 + 1 + i % 3] for i in range(8)]  # 16 instances in 8 requests
    expected, _ = _in_process(model, np.concatenate(batches))
    name = _start_server(
        docker,
        images["serving"],
        model,
        port,
        "--env",
        "DEEPCLOUD_MAX_BATCH_DELAY_MS=3000",
        "--env",
        "DEEPCLOUD_MAX_BATCH_SIZE=64",
    )
    _wait_until_healthy_ping(docker, name, port)

    with ThreadPoolExecutor(len(batches)) as pool:
        answers = [
            pool.submit(_invoke, port, json.dumps({"instances": b.tolist()}).encode(), "application/json")
            for b in batches
        ]
        deadline = time.monotonic() + 10
        while _queued(port) < len(batches):
            assert time.monotonic() < deadline, "the requests never all waited in the batcher"
            time.sleep(0.02)
        stopping = threading.Thread(
            target=lambda: docker("stop", "--time", str(STOP_GRACE_S), name, timeout=STOP_GRACE_S + 60)
        )
        signalled = time.monotonic()
        stopping.start()
        assert not any(a.done() for a in answers), "answered before SIGTERM: no drain shown"
        labels = [p["label"] for a in answers for p in a.result(timeout=STOP_GRACE_S)["predictions"]]
        stopping.join(timeout=STOP_GRACE_S + 60)
        exited_in = time.monotonic() - signalled
    assert labels == expected
    state = docker.state(name)
    assert state["ExitCode"] == 0, f"{state}\n{docker.logs(name)[-3000:]}"
    assert exited_in < STOP_GRACE_S
    assert "Traceback" not in docker.logs(name)
