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


@pytest.mark.slow
def test_bench_train_prints_the_table(dataset: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.train",
            "--epochs",
            "1",
            "--repeats",
            "1",
            "--max-runs",
            "1",
            "--threads",
            "1",
            "--data",
            str(dataset),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert result.returncode == 0, f"bench failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
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
