"""ServerConfig: every setting read once, from a flag, else the environment, else its default, and checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.config import SETTINGS, ServerConfig, StartupError, parse


def test_the_defaults_are_the_dataclass_defaults() -> None:
    config = parse([], {})
    default = ServerConfig()
    for name in ("host", "port", "max_batch_size", "max_queue", "timeout", "max_body_bytes", "access_log"):
        assert getattr(config, name) == getattr(default, name), name
    assert config.trust_model_files is False
    assert config.multi_model is False
    assert config.limits is not None
    assert config.limits.max_connections == 512
    assert config.model_dir == Path("/opt/ml/model")


def test_a_flag_wins_over_its_environment_variable_which_wins_over_the_default() -> None:
    environ = {"DEEPCLOUD_MAX_QUEUE": "7", "SAGEMAKER_BIND_TO_PORT": "9000", "SM_MODEL_DIR": "/m"}
    assert parse([], environ).max_queue == 7
    assert parse(["--max-queue", "9"], environ).max_queue == 9
    assert parse([], environ).port == 9000
    assert parse([], environ).model_dir == Path("/m")
    assert parse([], {"SAGEMAKER_BASE_DIR": "/base"}).model_dir == Path("/base/model")


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        ([], {"DEEPCLOUD_MAX_QUEUE": "many"}, "DEEPCLOUD_MAX_QUEUE 'many' is not a whole number"),
        (["--max-queue", "many"], {"DEEPCLOUD_MAX_QUEUE": "3"}, "--max-queue 'many' is not a whole number"),
        ([], {"SAGEMAKER_MODEL_SERVER_TIMEOUT": "0"}, "SAGEMAKER_MODEL_SERVER_TIMEOUT must be at least 0.001, got 0"),
        ([], {"DEEPCLOUD_MAX_HEADERS": "-1"}, "DEEPCLOUD_MAX_HEADERS must be at least 1, got -1"),
        ([], {"DEEPCLOUD_INFERENCE_THREADS": "0"}, "DEEPCLOUD_INFERENCE_THREADS must be at least 1, got 0"),
        (["--port", "0"], {}, "port '0' is not a port number: set SAGEMAKER_BIND_TO_PORT to 1-65535"),
        (["--management-port", "8080"], {}, "--management-port 8080 is the inference port: pick another one"),
        (["--max-batch-size", "4,4"], {}, "--max-batch-size '4,4' has two defaults"),
        (["--max-batch-delay-ms", "1,a=-1"], {}, "--max-batch-delay-ms a= must be at least 0, got -1"),
        (["--max-body-bytes", "10", "--max-pending-body-bytes", "9"], {}, "must be at least 10, got 9"),
    ],
)
def test_a_bad_value_is_refused_naming_where_it_came_from(argv, environ, message) -> None:
    with pytest.raises(StartupError) as refused:
        parse(argv, environ)
    assert message in str(refused.value)


@pytest.mark.parametrize(
    ("environ", "access_log", "trusted"),
    [
        ({}, True, False),
        ({"DEEPCLOUD_ACCESS_LOG": "0", "DEEPCLOUD_TRUST_MODEL_FILES": "1"}, False, True),
        ({"DEEPCLOUD_ACCESS_LOG": "1", "DEEPCLOUD_TRUST_MODEL_FILES": "0"}, True, False),
    ],
)
def test_switches_read_their_environment_values(environ, access_log, trusted) -> None:
    config = parse([], environ)
    assert (config.access_log, config.trust_model_files) == (access_log, trusted)
    assert parse(["--no-access-log", "--trust-model-files"], environ).access_log is False


def test_multi_model_mode_is_checked_once(tmp_path: Path) -> None:
    config = parse([], {"SAGEMAKER_MULTI_MODEL": "TRUE", "DEEPCLOUD_MULTI_MODEL_DIR": str(tmp_path)})
    assert (config.multi_model, config.multi_model_dir, config.multi_model_budget) == (True, tmp_path, None)
    assert (
        parse(
            ["--multi-model", "--multi-model-dir", str(tmp_path), "--multi-model-memory-bytes", "5"]
        ).multi_model_budget
        == 5
    )
    with pytest.raises(StartupError, match="drop --models and --model-store"):
        parse(["--multi-model", "--multi-model-dir", str(tmp_path), "--model-store", str(tmp_path)], {})


def test_per_model_batching_and_its_names() -> None:
    config = parse(["--max-batch-size", "16,digits=1", "--max-batch-delay-ms", "5,big=0"], {})
    assert config.policy("digits").max_batch_size == 1
    assert config.policy("other").max_batch_size == 16
    assert config.policy("big").max_batch_delay == 0
    assert config.policy("digits").max_batch_delay == pytest.approx(0.005)
    config.check_model_names({"digits", "big"})
    with pytest.raises(StartupError, match="--max-batch-size names digits, which is not a loaded model"):
        config.check_model_names({"big"})


def test_every_setting_has_an_environment_variable_and_help() -> None:
    flags = [s.flag for s in SETTINGS]
    assert len(flags) == len(set(flags))
    assert all(s.env and s.help for s in SETTINGS)
