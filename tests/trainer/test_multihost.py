"""One training job on two hosts that talk over a network: two network namespaces on this machine
(tests/trainer/netns.py), each with its own SageMaker layout and a resourceconfig.json naming both, running the
real ``python -m trainer train``.

Needs root (``ip netns``) and iproute2: skips without them, except in CI (the CI variable is set, as .ci/run sets
it), where it fails, since CI must run it.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.conftest import PYTHON, REPO, make_job
from tests.trainer.netns import Host, Network, missing_requirement
from tests.trainer.test_distributed import torchrun
from trainer.artifact import load_program
from trainer.signals import EXIT_STOPPED

pytestmark = [pytest.mark.slow, pytest.mark.root, pytest.mark.timeout(600)]

HOSTS = ["algo-1", "algo-2"]
HP = {
    "epochs": "2",
    "width": "8",
    "seed": "1",
    "dropout": "0",
    "batch_size": "32",
    "checkpoint_every_steps": "5",
    "log_every_steps": "1",
}
"""Tiny on purpose: 2 epochs of 20 steps a rank on the 8x8 digits, so a run takes seconds."""
LONG_HP = {**HP, "epochs": "6", "batch_size": "16", "checkpoint_every_steps": "10"}
"""240 steps, long enough to kill a host between its first checkpoint and the end."""
CHANNELS = ("train", "validation")
RUN_TIMEOUT = 240
LOST_HOST_BOUND = 60
"""Seconds within which the surviving host must have exited once the other is killed."""
HOST_WAIT = 3
COLLECTIVE_TIMEOUT = 10
"""DEEPCLOUD_COLLECTIVE_TIMEOUT_S of the silent-host test: short, yet above how far apart the two hosts reach
their first collective on a loaded machine."""
_serial = itertools.count()


@pytest.fixture
def network() -> Iterator[Network]:
    problem = missing_requirement()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"the multi-host tests must run in CI, but {problem}")
        pytest.skip(problem)
    net = Network(HOSTS, tag=f"dc{os.getpid()}{next(_serial)}")
    try:
        net.up(publish_all=False)
        yield net
    finally:
        net.down()


def _layout(base: Path, dataset: Path, host: Host, hp: dict[str, str]) -> Path:
    make_job(base, dataset, hp, channels=CHANNELS)
    # What SageMaker writes on each instance (docs: "How Amazon SageMaker Provides Training Information",
    # Distributed Training Configuration); network_interface_name is the veth end's name inside the namespace.
    (base / "input" / "config" / "resourceconfig.json").write_text(
        json.dumps({"current_host": host.name, "hosts": HOSTS, "network_interface_name": "eth0"})
    )
    return base


class Job:
    """``python -m trainer train`` inside one host's namespace, its output in files (two hosts would fill pipes)."""

    def __init__(self, host: Host, base: Path, env: dict[str, str] | None = None) -> None:
        self.host, self.base = host, base
        self.out, self.err = base.parent / f"{host.name}.out", base.parent / f"{host.name}.err"
        clean = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("SM_", "GLOO_", "NCCL_", "DEEPCLOUD_")) and k not in ("WORLD_SIZE", "RANK")
        }
        full = {**clean, "SAGEMAKER_BASE_DIR": str(base), "OMP_NUM_THREADS": "1", **(env or {})}
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen(
                host.command([PYTHON, "-m", "trainer", "train"]),
                cwd=REPO,
                env=full,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        self.started = time.monotonic()

    def wait(self, timeout: float = RUN_TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.host.kill()
            raise AssertionError(f"{self.host.name} did not end within {timeout}s:\n{self.log()}") from None

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def log(self) -> str:
        return f"--- stdout\n{self.stdout()[-3000:]}\n--- stderr\n{self.stderr()[-5000:]}"


def _weights(base: Path) -> dict[str, torch.Tensor]:
    return torch.export.load(base / "model" / "model.pt2").state_dict


def _started_past_a_checkpoint(
    network: Network, dataset: Path, tmp_path: Path, env: dict[str, str] | None = None
) -> tuple[Path, Path, list[Job]]:
    """Both hosts, knowing each other's names, running LONG_HP, once the first host has written a checkpoint:
    (first host's base, second host's base, their jobs)."""
    first, second = network.hosts
    first.publish({second.name: second.address})
    second.publish({first.name: first.address})
    main, other = (_layout(tmp_path / host.name / "job", dataset, host, LONG_HP) for host in network.hosts)
    jobs = [Job(first, main, env), Job(second, other, env)]
    deadline = time.monotonic() + RUN_TIMEOUT
    while not list((main / "checkpoints").glob("step-*/manifest.json")):
        assert all(job.proc.poll() is None for job in jobs), "\n".join(job.log() for job in jobs)
        assert time.monotonic() < deadline, "no checkpoint within the run timeout"
        time.sleep(0.05)
    return main, other, jobs


def _newest_checkpoint(base: Path) -> int:
    return max(
        int(p.name.split("-")[1]) for p in (base / "checkpoints").glob("step-*") if (p / "manifest.json").exists()
    )


def test_two_hosts_train_the_same_model_as_two_processes_on_one_host(
    network: Network, dataset: Path, tmp_path: Path
) -> None:
    first, second = network.hosts
    bases = [_layout(tmp_path / host.name / "job", dataset, host, HP) for host in network.hosts]
    # Each host knows only its own name at the start; the other's appears two seconds after both began waiting
    # for it, as SageMaker's may.
    jobs = [Job(host, base) for host, base in zip(network.hosts, bases, strict=True)]
    deadline = time.monotonic() + RUN_TIMEOUT
    while not all("waiting up to" in job.stdout() for job in jobs):
        assert all(job.proc.poll() is None for job in jobs), "\n".join(job.log() for job in jobs)
        assert time.monotonic() < deadline, "the hosts never started waiting for each other"
        time.sleep(0.05)
    time.sleep(2)
    first.publish({second.name: second.address})
    second.publish({first.name: first.address})
    codes = [job.wait() for job in jobs]
    assert codes == [0, 0], "\n".join(job.log() for job in jobs)
    for job, other in ((jobs[0], second), (jobs[1], first)):
        assert f"waiting up to 900s for hosts {other.name} to resolve" in job.stdout()
        assert f"hosts {other.name}={other.address} resolved in " in job.stdout()
    assert "world_size=2" in jobs[0].stdout()

    # Only the first host (global rank 0) writes the model, output/, the report and the checkpoints.
    main, other = bases
    assert sorted(p.name for p in (main / "model").iterdir()) == ["manifest.json", "model.pt2"]
    assert (main / "output" / "data" / "report.png").is_file()
    assert (main / "output" / "data" / "metrics.json").is_file()
    assert list((main / "checkpoints").glob("step-*"))
    for made in ("model", "output", "checkpoints"):
        found = sorted(str(p.relative_to(other)) for p in (other / made).rglob("*")) if (other / made).exists() else []
        assert found == [], f"{second.name} wrote {found}"

    # The same job as two processes on one host, over loopback: same seed, data, global batch and thread count.
    reference = make_job(tmp_path / "one-host", dataset, HP, channels=CHANNELS)
    result = torchrun(reference, 2, env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    # Exactly equal, not close: gloo sums the two ranks' gradients the same way whatever carries them, and
    # a + b == b + a in floating point, so the network changes no bit of the run.
    a, b = _weights(main), _weights(reference)
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    images = torch.stack([torch.from_numpy(x) for x in _validation_images(dataset)])
    assert torch.equal(
        load_program(main / "model" / "model.pt2")(images), load_program(reference / "model" / "model.pt2")(images)
    )
    history = [
        json.loads((base / "output" / "data" / "metrics.json").read_text())["history"] for base in (main, reference)
    ]
    assert history[0]["validation_loss"] == history[1]["validation_loss"]


def _validation_images(dataset: Path):
    from trainer.data.channels import discover_classes, load_split

    classes = discover_classes(dataset / "train")
    return list(load_split(dataset / "validation", classes).images.numpy())


def test_a_dead_host_fails_the_other_within_a_bound_and_a_restart_resumes(
    network: Network, dataset: Path, tmp_path: Path
) -> None:
    first, second = network.hosts
    main, other, jobs = _started_past_a_checkpoint(network, dataset, tmp_path)
    first.kill()  # the first host dies: its trainer, torchrun's agent and rendezvous store, and its workers
    killed = time.monotonic()
    code = jobs[1].wait(timeout=LOST_HOST_BOUND + 30)
    took = time.monotonic() - killed
    print(f"{second.name} exited {took:.1f}s after {first.name} was killed")  # docs/trainer.md quotes it (-s)
    assert code == 1, jobs[1].log()
    assert took < LOST_HOST_BOUND, f"the surviving host took {took:.1f}s to give up"
    failure = (other / "output" / "failure").read_text()
    assert failure.count("\n") == 1, failure
    assert failure.startswith("lost contact with another host of the job ("), failure
    assert failure.rstrip().endswith("restart the job to resume from the newest checkpoint"), failure
    assert jobs[1].stderr().rstrip().splitlines()[-1] == f"error: {failure.strip()}", "the log ends on that line"
    assert "ChildFailedError" in jobs[1].stderr(), "torchrun's own report stays in the log"
    assert not (main / "model" / "manifest.json").exists()

    # Restart both: the first host resumes from its newest checkpoint, and the second, whose checkpoint folder is
    # empty, receives that same one from it.
    newest = _newest_checkpoint(main)
    assert not (other / "checkpoints").exists() or not list((other / "checkpoints").iterdir())
    again = [Job(first, main), Job(second, other)]
    codes = [job.wait() for job in again]
    assert codes == [0, 0], "\n".join(job.log() for job in again)
    resumed = [line for line in again[0].stdout().splitlines() if line.startswith("resumed ")]
    assert len(resumed) == 1, again[0].stdout()
    newest_path = main / "checkpoints" / f"step-{newest}"
    assert resumed[0].startswith(f"resumed path={newest_path} step={newest} epoch="), resumed
    summary = json.loads((main / "output" / "data" / "metrics.json").read_text())
    assert len(summary["history"]["validation_loss"]) == int(LONG_HP["epochs"]), "training ran to the end"


def test_a_host_whose_network_goes_silent_fails_the_other_within_the_collective_timeout(
    network: Network, dataset: Path, tmp_path: Path
) -> None:
    first, second = network.hosts
    env = {"DEEPCLOUD_COLLECTIVE_TIMEOUT_S": str(COLLECTIVE_TIMEOUT)}
    _, other, jobs = _started_past_a_checkpoint(network, dataset, tmp_path, env)
    # The first host's link goes down: nothing closes the second host's connections, its packets just go nowhere,
    # as when a host loses power or its network. Only the collective timeout can end the wait.
    subprocess.run(["ip", "-n", first.namespace, "link", "set", "eth0", "down"], check=True, timeout=30)
    silent = time.monotonic()
    code = jobs[1].wait(timeout=COLLECTIVE_TIMEOUT + LOST_HOST_BOUND)
    took = time.monotonic() - silent
    print(f"{second.name} exited {took:.1f}s after {first.name}'s link went down")  # docs/trainer.md quotes it (-s)
    assert code == 1, jobs[1].log()
    assert took < COLLECTIVE_TIMEOUT + LOST_HOST_BOUND, f"took {took:.1f}s"
    failure = (other / "output" / "failure").read_text()
    assert failure.startswith("lost contact with another host of the job ("), failure
    assert "Timed out" in failure, failure
    assert jobs[0].wait() != 0, "the first host cannot go on alone either"


def test_sigterm_to_one_host_stops_every_host_at_one_checkpoint_without_a_failure(
    network: Network, dataset: Path, tmp_path: Path
) -> None:
    main, other, jobs = _started_past_a_checkpoint(network, dataset, tmp_path)
    # SageMaker's StopTrainingJob signals each container's first process: here only the second host's, the harder
    # case, since the first host then learns of the stop from the ranks' vote alone.
    jobs[1].proc.send_signal(signal.SIGTERM)
    codes = [job.wait() for job in jobs]
    assert codes == [EXIT_STOPPED, EXIT_STOPPED], "\n".join(job.log() for job in jobs)
    for job, base in zip(jobs, (main, other), strict=True):
        assert not (base / "output" / "failure").exists(), job.log()
        assert job.stderr().rstrip().splitlines()[-1] == (
            "stopped on SIGTERM: restart the job to resume from the newest checkpoint"
        )
    events = [json.loads(line) for line in (main / "output" / "data" / "metrics.jsonl").read_text().splitlines()]
    assert [e["reason"] for e in events if e["type"] == "checkpoint"][-1] == "sigterm"


def test_a_host_name_that_never_resolves_fails_with_one_line_within_the_wait(
    network: Network, dataset: Path, tmp_path: Path
) -> None:
    first, second = network.hosts
    base = _layout(tmp_path / first.name / "job", dataset, first, HP)
    job = Job(first, base, env={"DEEPCLOUD_HOST_WAIT_S": str(HOST_WAIT)})
    code = job.wait(timeout=120)
    took = time.monotonic() - job.started
    assert code == 1, job.log()
    failure = (base / "output" / "failure").read_text()
    assert failure.startswith(f"host '{second.name}' of this job did not resolve within {HOST_WAIT}s ("), failure
    assert failure.count("\n") == 1
    assert job.stderr().strip().splitlines() == [f"error: {failure.strip()}"], "one line, no traceback"
    assert "launching" not in job.stdout(), "torchrun never started"
    # The wait itself is bounded by HOST_WAIT; the rest is starting Python and importing torch on a loaded machine.
    assert took < HOST_WAIT + 30, f"took {took:.1f}s"
