"""`make bench-serve` against today's servers (bench/peers.py): the peer goals of report(), Triton's v2 adapters,
and one real peer end to end.

The unit tests start nothing. The slow test runs the bench on the mlp with ours and LitServe, the cheapest
peer, for 1 s each, and checks LitServe's row and the ours/peer goals. When .venv-peers/litserve is missing
the bench makes it (``python -m venv``, ``torch==2.13.0`` from the local wheel, then
requirements/peers/litserve.txt): about 1 minute here (15 s for the venv and torch, 45 s for LitServe and its
30 pinned packages), then about 40 s for the run itself (LitServe takes ~20 s to start its workers).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, processes_mentioning
from tests.test_bench_serve import _table

PEER_GOALS = (
    "mlp requests/s ours/best peer",
    "mlp p99 ours/lowest peer",
    "mlp peak RSS ours/leanest peer",
    "cnn requests/s ours/best peer",
    "cnn p99 ours/lowest peer",
    "cnn peak RSS ours/leanest peer",
)


def _row(model: str, server: str, rps: float, p99: float, rss: float):
    from bench.serve import Result

    return Result(model, server, "", rps=rps, p50_ms=p99 / 2, p99_ms=p99, rss_mib=rss, others=0.0)


def _goals(text: str) -> dict[str, list[str]]:
    return {g[0]: g for g in _table(text.splitlines(), "goal  ")[1]}


def test_peer_goals_take_the_best_peer_that_ran() -> None:
    from bench.serve import report

    text, missed = report(
        [
            _row("mlp", "ours", 3000, 4, 200),
            _row("mlp", "litserve", 700, 20, 900),
            _row("mlp", "pytriton", 720, 3, 400),
            _row("cnn", "ours", 200, 90, 300),
            _row("cnn", "pytriton", 150, 80, 450),
        ]
    )
    goals = _goals(text)
    assert tuple(name for name in goals if "peer" in name) == PEER_GOALS
    # the fastest peer for requests/s, the lowest p99, the leanest memory: here pytriton each time
    assert goals["mlp requests/s ours/best peer"] == [
        "mlp requests/s ours/best peer",
        "4.167",
        ">= 4 (vs pytriton)",
        "PASS",
    ]
    assert goals["mlp p99 ours/lowest peer"][1:] == ["1.333", "< 1 (vs pytriton)", "MISS"]
    assert goals["mlp peak RSS ours/leanest peer"][1:] == ["0.500", "<= 0.6 (vs pytriton)", "PASS"]
    assert goals["cnn requests/s ours/best peer"][1:] == ["1.333", ">= 1.5 (vs pytriton)", "MISS"]
    assert goals["cnn p99 ours/lowest peer"][1:] == ["1.125", "< 1 (vs pytriton)", "MISS"]
    assert goals["cnn peak RSS ours/leanest peer"][1:] == ["0.667", "<= 0.6 (vs pytriton)", "MISS"]
    assert missed == [
        "mlp p99 ours/lowest peer",
        "cnn requests/s ours/best peer",
        "cnn p99 ours/lowest peer",
        "cnn peak RSS ours/leanest peer",
    ]


def test_peer_goals_are_na_without_peers_and_skip_failed_ones() -> None:
    from bench.serve import Result, report

    text, missed = report([_row("mlp", "ours", 3000, 4, 200), _row("mlp", "bare", 3000, 4, 100)])
    goals = _goals(text)
    for name in PEER_GOALS:
        assert goals[name][1:] == ["-", goals[name][2], "n/a"], goals[name]
        assert "vs" not in goals[name][2]
    assert missed == []
    # a peer that failed is not a peer that ran: the ratio is over the others
    failed = Result("mlp", "pytriton", "", error="no answer")
    goals = _goals(report([_row("mlp", "ours", 4000, 4, 200), failed, _row("mlp", "litserve", 900, 20, 900)])[0])
    assert goals["mlp requests/s ours/best peer"][1:] == ["4.444", ">= 4 (vs litserve)", "PASS"]
    assert goals["mlp peak RSS ours/leanest peer"][1:] == ["0.222", "<= 0.6 (vs litserve)", "PASS"]
    # and without ours there is nothing to divide
    goals = _goals(report([_row("mlp", "litserve", 900, 20, 900)])[0])
    assert goals["mlp requests/s ours/best peer"][1] == "-"
    assert goals["mlp requests/s ours/best peer"][3] == "n/a"


def test_triton_bodies_carry_the_same_instance_and_answers_come_back_as_predictions(tmp_path: Path) -> None:
    from bench import peers

    instance = [[[0, 12, 255], [3, 4, 5]]]
    (tmp_path / "body.json").write_text(json.dumps({"instances": [instance]}))
    body = json.loads(peers.v2_body(tmp_path / "body.json", tmp_path / "v2.json").read_text())
    assert body == {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1, 2, 3], "data": [0.0, 12.0, 255.0, 3.0, 4.0, 5.0]}]
    }
    answer = {
        "model_name": "m",
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [2, 2], "data": [0.25, 0.75, 0.9, 0.1]},
            {"name": "index", "datatype": "INT64", "shape": [2, 1], "data": [1, 0]},
            {"name": "label", "datatype": "BYTES", "shape": [2, 1], "data": ["b", "a"]},
        ],
    }
    assert json.loads(peers.v2_predictions(json.dumps(answer).encode())) == {
        "predictions": [
            {"label": "b", "index": 1, "probabilities": [0.25, 0.75]},
            {"label": "a", "index": 0, "probabilities": [0.9, 0.1]},
        ]
    }


def test_bentoml_answers_come_back_as_predictions() -> None:
    from bench import peers

    answer = [{"label": "b", "index": 1, "probabilities": [0.25, 0.75]}]
    assert json.loads(peers.bentoml_predictions(json.dumps(answer).encode())) == {"predictions": answer}
    with pytest.raises(ValueError, match="expected a JSON list"):
        peers.bentoml_predictions(b'{"error": "overloaded"}')  # not a list: the bench reports it, never checks it


def test_bentoml_serves_on_loopback_with_its_batching_only_for_the_cnn(tmp_path: Path) -> None:
    from bench import peers

    defaults = peers.bentoml_args(tmp_path, 2, 8123, None)
    assert defaults == ["--host", "127.0.0.1", "--port", "8123", "--arg", f"model_dir={tmp_path}", "--arg", "threads=2"]
    batched = peers.bentoml_args(tmp_path, 2, 8123, 16)
    assert batched[: len(defaults)] == defaults
    # max_latency_ms is BentoML's deadline (503 past it), not a batch window: wrk's 30 s timeout
    assert batched[len(defaults) :] == ["--arg", "max_batch_size=16", "--arg", "max_latency_ms=30000"]


def test_rayserve_gets_its_batch_settings_and_a_temp_dir(tmp_path: Path) -> None:
    from bench import peers

    base = ["--model-dir", str(tmp_path / "m"), "--port", "8124", "--threads", "2", "--temp-dir", str(tmp_path)]
    assert peers.rayserve_args(tmp_path / "m", 2, 8124, tmp_path, None, 10) == base
    assert peers.rayserve_args(tmp_path / "m", 2, 8124, tmp_path, 16, 10) == [
        *base,
        "--max-batch-size",
        "16",
        "--batch-wait-ms",
        "10",
    ]


def test_new_peers_are_registered_with_their_own_environment() -> None:
    from bench import peers, serve

    for name in ("bentoml", "rayserve"):
        assert name in peers.PEERS
        assert name in serve.SERVERS
        assert name in serve.STARTERS
        assert (peers.REQUIREMENTS / f"{name}.txt").exists()
        assert (peers.SUPPORT / f"peer_{name}.py").exists()
        pins = (peers.REQUIREMENTS / f"{name}.txt").read_text().splitlines()
        assert not any(line.lower().startswith("torch==") for line in pins)  # torch comes first, then a constraint
    env = {"PATH": "/usr/bin", "PYTHONPATH": "/repo/.venv"}
    ray_env = peers.peer_env("rayserve", env)
    assert ray_env["PYTHONPATH"] == str(peers.SUPPORT)  # Ray's replica workers import peer_common
    assert ray_env["RAY_USAGE_STATS_ENABLED"] == "0"
    assert ray_env["PATH"].startswith(str(peers.VENVS / "rayserve" / "bin"))
    bento_env = peers.peer_env("bentoml", env)
    assert "PYTHONPATH" not in bento_env  # bentoml serve --working-dir finds peer_bentoml and peer_common
    assert bento_env["BENTOML_DO_NOT_TRACK"] == "True"


def test_no_install_stops_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench import peers

    monkeypatch.setattr(peers, "VENVS", tmp_path / "none")
    with pytest.raises(peers.PeerError) as caught:
        peers.ensure("litserve", install=False)
    assert "\n" not in str(caught.value)
    assert "not installed in .venv-peers/litserve" in str(caught.value)


@pytest.mark.slow
def test_bench_runs_litserve_beside_ours(tmp_path: Path) -> None:
    if not shutil.which("wrk") and not (shutil.which("apt-get") and os.geteuid() == 0):
        pytest.skip("wrk is not installed and apt-get cannot install it here")
    work = tmp_path / "tmp"
    work.mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.serve",
            "--models",
            "mlp",
            "--servers",
            "ours,litserve",
            "--duration",
            "1",
            "--warmup",
            "1",
            "--threads",
            "1",
            "--connections-mlp",
            "4",
            "--startup-timeout",
            "120",
            "--retries",
            "0",
            "--rounds",
            "1",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "TMPDIR": str(work)},
        timeout=600,
        check=False,
    )
    out, err = proc.stdout, proc.stderr
    goals = _goals(out) if "goal  " in out else {}
    missed = [name for name, g in goals.items() if g[3] == "MISS"]
    assert proc.returncode == (3 if missed else 0), f"bench failed:\n{out[-4000:]}\n{err[-4000:]}"
    peer_line = r"^peer      litserve 0\.2\.19 in \.venv-peers/litserve, torch 2\.13\.0\+cpu$"
    assert re.search(peer_line, out, flags=re.M), out
    rows = {(r[0], r[1]): r for r in _table(out.splitlines(), "model  ")[1]}
    assert list(rows) == [("mlp", "ours"), ("mlp", "litserve")]
    litserve = rows[("mlp", "litserve")]
    assert litserve[2] == "defaults: batch 1"
    assert float(litserve[3]) > 0
    assert 0 < float(litserve[4]) <= float(litserve[5])
    assert float(litserve[6]) > 0
    # LitServe runs an API server process and an inference worker beside its launcher: all of them are counted
    assert float(litserve[6]) > float(rows[("mlp", "ours")][6])
    for name in PEER_GOALS[:3]:
        assert goals[name][3] in ("PASS", "MISS")
        assert float(goals[name][1]) > 0
        assert goals[name][2].endswith("(vs litserve)")
    for name in PEER_GOALS[3:]:
        assert goals[name][3] == "n/a"
    assert processes_mentioning(str(work)) == []  # every server process is gone
    assert list(work.iterdir()) == []
