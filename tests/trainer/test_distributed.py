"""DDP on CPU with gloo: two processes train like one with the same global batch."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import PYTHON, REPO, free_port, make_job, run_trainer
from trainer.distributed import (
    LaunchConfig,
    launcher_failure,
    peer_lost,
    torchrun_command,
    visible_gpus,
    wait_for_hosts,
    worker_environ,
    workers_stopped,
)
from trainer.errors import ConfigError, TrainerError
from trainer.sagemaker_env import Cluster

HP = {"epochs": "4", "dropout": "0", "seed": "1", "checkpoint_every_steps": "7"}
LOSS_TOLERANCE = 0.10
"""Relative difference allowed between the final validation losses: the processes normalise with
per-process BatchNorm statistics (half the batch each), so the runs are close, not identical."""


def torchrun(base: Path, nproc: int, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node=nproc -m trainer train`` on this host (loopback), for the job at ``base``."""
    command = [
        PYTHON,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        f"--master_port={free_port()}",
        "-m",
        "trainer",
        "train",
    ]
    # Its own process group, so a hang cannot leave orphaned workers behind: the whole group is killed.
    proc = subprocess.Popen(
        command,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "SAGEMAKER_BASE_DIR": str(base), **(env or {})},
    )
    try:
        out, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"torchrun hung:\n{err[-3000:]}") from None
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def _final(base: Path) -> dict:
    return json.loads((base / "output" / "data" / "metrics.json").read_text())


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path: Path, dataset: Path) -> None:
    one = make_job(tmp_path / "one", dataset, {**HP, "batch_size": "64"})
    result = run_trainer(one, env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    two = make_job(tmp_path / "two", dataset, {**HP, "batch_size": "32"})
    result = torchrun(two, 2)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "world_size=2" in result.stdout
    assert [line for line in result.stdout.splitlines() if line.startswith("epoch=1 ")] != []
    assert len([line for line in result.stdout.splitlines() if line.startswith("epoch=1 ")]) == 1, "rank 0 logs"
    single = _final(one)["history"]["validation_loss"][-1]
    double = _final(two)["history"]["validation_loss"][-1]
    assert abs(single - double) / single < LOSS_TOLERANCE, (single, double)
    assert sorted(p.name for p in (two / "model").iterdir()) == ["manifest.json", "model.pt2"]

    # Resume under DDP: every rank restores the same checkpoint and the run completes again.
    first_history = _final(two)["history"]
    (two / "model" / "manifest.json").unlink()
    newest = max(int(p.name.split("-")[1]) for p in (two / "checkpoints").glob("step-*"))
    again = torchrun(two, 2)
    assert again.returncode == 0, again.stderr[-3000:]
    events = [json.loads(x) for x in (two / "output" / "data" / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["type"] == "resumed"] == [newest]
    resumed_history = _final(two)["history"]
    assert len(resumed_history["validation_loss"]) == 4, "the curves of the epochs before the resume survive"
    assert resumed_history["validation_loss"][:3] == first_history["validation_loss"][:3]


def test_sagemaker_multi_host_relaunches_under_torchrun() -> None:
    command = torchrun_command(("algo-1", "algo-2"), "algo-2", gpus=4, environ={})
    assert command[1:] == [
        "-m",
        "torch.distributed.run",
        "--nnodes=2",
        "--node_rank=1",
        "--nproc_per_node=4",
        "--master_addr=algo-1",
        "--master_port=29500",
        "--rdzv-backend=static",
        "--rdzv-conf=timeout=600",
        "--max-restarts=0",
        "-m",
        "trainer",
        "train",
    ]
    bounded = torchrun_command(("algo-1", "algo-2"), "algo-1", gpus=1, environ={}, rendezvous_timeout_s=7.5)
    assert bounded[4:6] == ["--node_rank=0", "--nproc_per_node=1"]
    assert "--rdzv-conf=timeout=8" in bounded, "a fractional timeout rounds up, never down to 0"
    assert torchrun_command(("algo-1",), "algo-1", gpus=1, environ={}) is None
    assert torchrun_command(("algo-1", "algo-2"), "algo-1", gpus=8, environ={"WORLD_SIZE": "16"}) is None
    assert visible_gpus({"SM_NUM_GPUS": "8"}) == 8


def test_the_cluster_comes_from_sm_hosts_or_resourceconfig_and_bad_ones_fail_naming_the_field(tmp_path: Path) -> None:
    path = tmp_path / "resourceconfig.json"
    assert Cluster.read(path, {}) == Cluster(hosts=("algo-1",), current_host="algo-1")
    path.write_text(
        json.dumps({"current_host": "algo-2", "hosts": ["algo-1", "algo-2"], "network_interface_name": "eth0"})
    )
    cluster = Cluster.read(path, {})
    assert (cluster.node_rank, cluster.others, cluster.network_interface_name) == (1, ("algo-1",), "eth0")
    assert Cluster.read(path, {"SM_HOSTS": '["a", "b", "c"]', "SM_CURRENT_HOST": "c"}).node_rank == 2
    with pytest.raises(ConfigError, match=r"^SM_CURRENT_HOST 'algo-9' is not one of the job's hosts"):
        Cluster.read(path, {"SM_CURRENT_HOST": "algo-9"})
    with pytest.raises(ConfigError, match=r"^SM_HOSTS must be a JSON list of distinct host names"):
        Cluster.read(path, {"SM_HOSTS": "algo-1,algo-2"})
    path.write_text(json.dumps({"current_host": "algo-1", "hosts": ["algo-1", "algo-1"]}))
    with pytest.raises(ConfigError, match=r"^resourceconfig.json 'hosts' must be a JSON list of distinct"):
        Cluster.read(path, {})
    path.write_text("{not json")
    with pytest.raises(ConfigError, match=r"resourceconfig.json is not valid JSON"):
        Cluster.read(path, {})


def test_launch_timeouts_come_from_the_environment_and_bad_values_name_the_variable() -> None:
    assert LaunchConfig.from_environ({}) == LaunchConfig(
        host_wait_s=900, rendezvous_timeout_s=600, collective_timeout_s=600
    )
    assert LaunchConfig.from_environ({"DEEPCLOUD_HOST_WAIT_S": "2.5"}).host_wait_s == 2.5
    for bad in ("0", "-1", "soon", "nan", "inf"):
        with pytest.raises(
            ConfigError,
            match=rf"^DEEPCLOUD_COLLECTIVE_TIMEOUT_S must be a number of seconds > 0, "
            rf"not '{bad}'",
        ):
            LaunchConfig.from_environ({"DEEPCLOUD_COLLECTIVE_TIMEOUT_S": bad})


def test_the_network_interface_of_resourceconfig_reaches_gloo_and_nccl_unless_set() -> None:
    assert worker_environ("eth0", {}) == {"GLOO_SOCKET_IFNAME": "eth0", "NCCL_SOCKET_IFNAME": "eth0"}
    assert worker_environ("eth0", {"NCCL_SOCKET_IFNAME": "ens5"}) == {"GLOO_SOCKET_IFNAME": "eth0"}
    assert worker_environ(None, {}) == {}


def test_wait_for_hosts_returns_once_names_resolve_and_fails_with_one_line_at_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lines: list[str] = []
    assert wait_for_hosts(("localhost",), 5, say=lines.append)["localhost"] in ("127.0.0.1", "::1")
    assert lines[0].startswith("hosts localhost=")

    # A resolver that knows the name only from its third lookup on (as SageMaker's names appear late); a fake,
    # since a real unknown name would be asked of this machine's DNS (tests/trainer/test_multihost.py has real ones).
    calls = []

    def late(name, *args, **kwargs):
        calls.append(name)
        if len(calls) < 3:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.2", 0))]

    monkeypatch.setattr(socket, "getaddrinfo", late)
    lines.clear()
    assert wait_for_hosts(("algo-2",), 30, say=lines.append) == {"algo-2": "10.0.0.2"}
    assert lines[0] == "waiting up to 30s for hosts algo-2 to resolve"
    calls.clear()
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        lambda *a, **k: (_ for _ in ()).throw(socket.gaierror(socket.EAI_NONAME, "Name or service not known")),
    )
    started = time.monotonic()
    with pytest.raises(
        TrainerError,
        match=r"^host 'algo-2' of this job did not resolve within 0.3s "
        r"\(Name or service not known\): ",
    ):
        wait_for_hosts(("algo-2",), 0.3, say=lines.append)
    assert time.monotonic() - started < 2


# Lines as torch 2.13's torchrun and gloo print them (captured from runs on two network namespaces).
GLOO_RESET = (
    "[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error [10.231.0.1]:64386: "
    "Connection reset by peer. This is typically caused by a remote worker hanging or bugs in the "
    "application. Check the logs of the remote worker before reporting an error. GLHF!"
)


def test_a_lost_peer_becomes_one_line_and_other_errors_are_left_alone() -> None:
    line = peer_lost(RuntimeError(GLOO_RESET))
    assert line == (
        "lost contact with another host of the job (Read error [10.231.0.1]:64386: Connection reset by "
        "peer): it stopped or its network went away, and its own log says why; restart the job to "
        "resume from the newest checkpoint"
    )
    assert peer_lost(RuntimeError("mat1 and mat2 shapes cannot be multiplied")) is None
    assert peer_lost(torch.distributed.DistNetworkError("Connection closed by peer")).startswith(
        "lost contact with another host of the job (Connection closed by peer): "
    )
    assert peer_lost(torch.distributed.DistBackendError("NCCL error: unhandled cuda error")) is None
    assert peer_lost(ValueError("gloo")) is None


def test_torchrun_failures_without_a_worker_line_are_summed_up_in_one_line() -> None:
    launch = LaunchConfig(rendezvous_timeout_s=5)
    store = [
        "Traceback (most recent call last):",
        '  File "static_tcp_rendezvous.py", line 67, in next_rendezvous',
        "torch.distributed.DistStoreError: Timed out after 6 seconds waiting for clients. 1/2 clients joined.",
    ]
    assert launcher_failure(1, store, "algo-1", launch) == (
        "the hosts did not all meet at torchrun's rendezvous on algo-1:29500 within 5s (Timed out after 6 seconds "
        "waiting for clients. 1/2 clients joined.): every host must start and reach algo-1 on TCP port 29500 "
        "(the wait is DEEPCLOUD_RENDEZVOUS_TIMEOUT_S)"
    )
    client = [
        "torch.distributed.DistNetworkError: The client socket has timed out after 5000ms while trying to "
        "connect to (algo-1, 29500)."
    ]
    assert launcher_failure(1, client, "algo-1", launch).startswith("the hosts did not all meet at torchrun's")
    killed = ["  exitcode  : -9 (pid: 26302)", "  traceback : Signal 9 (SIGKILL) received by PID 26302"]
    assert launcher_failure(1, killed, "algo-1", launch) == (
        "a training process on this host was killed by SIGKILL (the kernel's out-of-memory killer does this): "
        "its log above says how far it got"
    )
    assert launcher_failure(2, ["usage: torchrun ..."], "algo-1", launch) == (
        "torchrun exited with status 2: its log above says why"
    )
    # Every worker exited 143 (stopped at a checkpoint because another host got SIGTERM): a stop, not a failure.
    assert workers_stopped(["  rank      : 0 (local_rank: 0)", "  exitcode  : 143 (pid: 81)"], 143)
    assert not workers_stopped(["  exitcode  : 143 (pid: 81)", "  exitcode  : 1 (pid: 82)"], 143)
    assert not workers_stopped(["torch.distributed.DistStoreError: Timed out"], 143)
