"""`make bench-train` runs end to end and prints its table. A smoke test: it asserts no speed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

ROWS = (
    "samples/s",
    "checkpoint overhead %",
    "checkpoints written",
    "peak RSS MiB, training loop",
    "peak RSS MiB, whole process",
)


def _cells(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


def _one_round(dataset: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """One 1-epoch round of the bench on one thread; fails the test unless the bench exits 0."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.train",
            *("--epochs", "1", "--repeats", "1", "--max-runs", "1", "--threads", "1"),
            "--data",
            str(dataset),
            *extra,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert result.returncode == 0, f"bench failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.mark.slow
def test_bench_train_prints_the_table(dataset: Path) -> None:
    result = _one_round(dataset)
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("metric (median)"))
    table = {_cells(line)[0]: _cells(line) for line in lines[header + 1 : header + 1 + len(ROWS)]}
    assert tuple(table) == ROWS

    _, trainer_rate, bare_rate, ratio, goal, verdict = table["samples/s"]
    assert float(trainer_rate) > 0
    assert float(bare_rate) > 0
    assert float(ratio) > 0
    assert goal == ">= 0.95"
    assert verdict in ("PASS", "MISS")
    assert int(table["checkpoints written"][1]) >= 1  # the automatic cadence checkpoints a short run at its end
    assert float(table["checkpoint overhead %"][1]) >= 0
    for row in ("peak RSS MiB, training loop", "peak RSS MiB, whole process"):
        assert float(table[row][1]) > 0
        assert float(table[row][2]) > 0
    # The whole process includes the loop, on both sides: a peak below the loop's would be a measuring bug.
    assert float(table["peak RSS MiB, whole process"][2]) >= float(table["peak RSS MiB, training loop"][2])
    assert "1 threads (OMP_NUM_THREADS) for both" in result.stdout


@pytest.mark.slow
def test_sigterm_stops_the_bench_and_leaves_nothing_behind(dataset: Path, tmp_path: Path) -> None:
    """`timeout` sends SIGTERM: the bench used to die by it, leaving its work dir (and a trainer run) behind."""
    import os
    import signal
    import time

    from tests.conftest import processes_mentioning

    work = tmp_path / "tmp"
    work.mkdir()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.train",
            "--epochs",
            "30",
            "--repeats",
            "1",
            "--threads",
            "1",
            "--data",
            str(dataset),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(work)},
    )
    try:
        deadline = time.monotonic() + 120
        while not list(work.glob("deepcloud-bench-*/*")) and time.monotonic() < deadline:  # a run has started
            time.sleep(0.2)
        time.sleep(2)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr
    assert "Traceback" not in stderr
    assert list(work.iterdir()) == []
    assert processes_mentioning(str(work)) == []


def test_a_baseline_tree_without_a_trainer_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bench.train import main

    with pytest.raises(SystemExit) as exited:
        main(["--baseline-tree", str(tmp_path)])
    assert exited.value.code == 2
    assert f"--baseline-tree {tmp_path} has no trainer/__main__.py" in capsys.readouterr().err


def test_compare_gives_after_over_before_round_by_round() -> None:
    from bench.train import compare

    def run(step_seconds: float, checkpoint_seconds: float, kib: int) -> dict:
        return {"step_seconds": step_seconds, "checkpoint_seconds": checkpoint_seconds, "loop_hwm_kib": kib}

    after = [{**run(2.0, 0.02, 2048), "maxrss_kib": 4096}, {**run(4.0, 0.04, 2048), "maxrss_kib": 4096}]
    before = [{**run(1.0, 0.02, 1024), "maxrss_kib": 2048}, {**run(2.0, 0.04, 1024), "maxrss_kib": 2048}]
    bare = [{"samples": 100, "step_seconds": 1.0}, {"samples": 100, "step_seconds": 2.0}]
    lines = compare(after, before, bare, samples=100).splitlines()
    table = {_cells(line)[0]: _cells(line)[1:] for line in lines[1:-1]}
    assert _cells(lines[0]) == ["metric (median)", "after", "before", "after/before"]
    assert table["samples/s"] == ["38", "75", "0.500"]  # medians of 50, 25 and of 100, 50
    assert table["samples/s ratio to bare"] == ["0.500", "1.000", "0.500"]
    assert table["checkpoint overhead %"] == ["1.00", "2.00", "0.500"]
    assert table["peak RSS MiB, training loop"] == ["2", "1", "2.000"]
    assert table["peak RSS MiB, whole process"] == ["4", "2", "2.000"]
    assert lines[-1].endswith(": 0.500")


@pytest.mark.slow
def test_bench_train_runs_a_baseline_tree_side_by_side(dataset: Path) -> None:
    """The repository itself as the baseline: both trainers run in each round and the second table appears."""
    result = _one_round(dataset, "--baseline-tree", str(REPO))
    lines = result.stdout.splitlines()
    run = next(line for line in lines if line.startswith("run 1"))
    assert "trainer " in run
    assert "before " in run
    assert "bare " in run
    header = next(i for i, line in enumerate(lines) if line.startswith("metric (median)") and "after/before" in line)
    table = {_cells(line)[0]: _cells(line)[1:] for line in lines[header + 1 : header + 6]}
    assert tuple(table) == (
        "samples/s",
        "samples/s ratio to bare",
        "checkpoint overhead %",
        "peak RSS MiB, training loop",
        "peak RSS MiB, whole process",
    )
    assert float(table["samples/s"][2]) > 0
    assert lines[header + 6].startswith("paired")
