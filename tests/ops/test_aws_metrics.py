"""The SageMaker job's MetricDefinitions against what the real trainer prints: every regex finds its lines, and what
it captures is what the trainer wrote to metrics.jsonl and metrics.json.

SageMaker searches each line of the job's stdout and stderr with each definition's Regex and publishes its first
group as a value of the metric (SageMaker guide, "Define training metrics"; botocore's MetricDefinition); the test
does the same with Python's `re`, line by line. The definitions use only syntax every regex engine reads alike, so
Python's reading is SageMaker's. A change to the trainer's log lines that the regexes no longer read fails here, not
silently in the console's charts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ops.aws.training.sagemaker import METRIC_DEFINITIONS
from tests.conftest import make_job, run_trainer

EPOCHS = 2
LOG_EVERY_STEPS = 5
PRINTED_6G = 1e-5
"""Relative error of a value printed with `:.6g` (the trainer's MetricsLog lines)."""
PRINTED_4F = 5e-5
"""Absolute error of a value printed with `:.4f` (the trainer's closing validation_/test_ lines)."""


@pytest.fixture(scope="module")
def trainer_run(tmp_path_factory: pytest.TempPathFactory, dataset: Path) -> tuple[list[str], list[dict], dict]:
    """A real two-epoch run on the demo digits: (its stdout and stderr lines, metrics.jsonl records, metrics.json)."""
    base = make_job(
        tmp_path_factory.mktemp("metrics-job"),
        dataset,
        {"epochs": str(EPOCHS), "seed": "0", "log_every_steps": str(LOG_EVERY_STEPS)},
    )
    result = run_trainer(base)
    assert result.returncode == 0, f"training failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    output = base / "output" / "data"
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    return (result.stdout + result.stderr).splitlines(), records, json.loads((output / "metrics.json").read_text())


def captured(regex: str, lines: list[str]) -> list[float]:
    pattern = re.compile(regex)
    return [float(match.group(1)) for line in lines if (match := pattern.search(line))]


def expected(name: str, records: list[dict], summary: dict) -> list[tuple[float, float, float]]:
    """(value, relative tolerance, absolute tolerance) of each point `name` should publish, in order, from what the
    trainer wrote to its files rather than to its log."""
    steps = [r for r in records if r["type"] == "step"]
    epochs = [r for r in records if r["type"] == "epoch"]
    final = summary["metrics"]
    per_step = {"train:batch_loss": "loss", "train:learning_rate": "lr"}
    per_epoch = {
        "train:loss": "train_loss",
        "train:accuracy": "train_accuracy",
        "validation:loss": "validation_loss",
        "validation:accuracy": "validation_accuracy",
    }
    if name in per_step:
        return [(r[per_step[name]], PRINTED_6G, 1e-12) for r in steps]
    points = [(r[per_epoch[name]], PRINTED_6G, 1e-12) for r in epochs] if name in per_epoch else []
    split, _, key = name.partition(":")
    if split in final:  # the exported model's own evaluation, printed last
        points.append((final[split][key], 0.0, PRINTED_4F))
    return points


@pytest.mark.slow
def test_every_metric_regex_reads_the_real_trainers_log(trainer_run) -> None:
    lines, records, summary = trainer_run
    assert [r["epoch"] for r in records if r["type"] == "epoch"] == list(range(1, EPOCHS + 1))
    for definition in METRIC_DEFINITIONS:
        name, regex = definition["Name"], definition["Regex"]
        assert 1 <= len(name) <= 255, f"{name}: botocore's MetricName is 1-255 characters"
        assert 1 <= len(regex) <= 500, f"{name}: botocore's MetricRegex is 1-500 characters"
        values = captured(regex, lines)
        assert values, f"{name}: {regex!r} matches no line of the trainer's log"
        want = expected(name, records, summary)
        assert len(values) == len(want), f"{name}: captured {values}, the trainer wrote {want}"
        for got, (value, rel, abs_) in zip(values, want, strict=True):
            assert got == pytest.approx(value, rel=rel, abs=abs_), f"{name}: {got} in the log, {value} in the files"
    assert len(METRIC_DEFINITIONS) <= 40, "botocore's MetricDefinitionList holds at most 40"
    assert len({d["Name"] for d in METRIC_DEFINITIONS}) == len(METRIC_DEFINITIONS)


def test_a_line_the_regexes_must_not_misread() -> None:
    """Loss and accuracy of the splits stay apart: a step's `loss=` is not an epoch's `train_loss=`, and an epoch
    line publishes no test metric."""
    epoch = "epoch=3 train_loss=0.376611 train_accuracy=0.977725 validation_loss=0.375949 validation_accuracy=1e-05"
    step = "step=40 epoch=2 loss=0.385376 lr=0"
    by_name = {d["Name"]: d["Regex"] for d in METRIC_DEFINITIONS}
    assert captured(by_name["train:batch_loss"], [epoch, step]) == [0.385376]
    assert captured(by_name["train:learning_rate"], [epoch, step]) == [0.0]
    assert captured(by_name["train:loss"], [epoch, step]) == [0.376611]
    assert captured(by_name["validation:accuracy"], [epoch, step]) == [1e-05]
    assert captured(by_name["test:loss"], [epoch, step]) == []
    assert captured(by_name["validation:loss"], ["validation_loss=nan validation_accuracy=0.1"]) == [], (
        "nan is no point"
    )
