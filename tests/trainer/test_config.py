"""Hyperparameters arrive as strings; every bad one is named with what it accepts."""

from __future__ import annotations

import pytest

from trainer.config import TrainConfig
from trainer.errors import ConfigError


def test_strings_are_parsed_per_field() -> None:
    cfg = TrainConfig.from_hyperparameters(
        {"epochs": "7", "lr": "0.002", "deterministic": "False", "device": "cpu", "dropout": "0"}
    )
    assert (cfg.epochs, cfg.lr, cfg.deterministic, cfg.device, cfg.dropout) == (7, 0.002, False, "cpu", 0.0)


def test_values_json_encoded_by_the_sagemaker_sdk_are_accepted() -> None:
    cfg = TrainConfig.from_hyperparameters({"device": '"cpu"', "epochs": "3", "deterministic": '"true"'})
    assert (cfg.device, cfg.epochs, cfg.deterministic) == ("cpu", 3, True)


def test_platform_keys_are_ignored() -> None:
    cfg = TrainConfig.from_hyperparameters({"sagemaker_program": "train.py", "sagemaker_region": '"eu-west-1"'})
    assert cfg == TrainConfig()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"epochs": "ten"}, "hyperparameter 'epochs' must be an integer, got 'ten'"),
        ({"epochs": "1.5"}, "hyperparameter 'epochs' must be an integer, got '1.5'"),
        ({"epochs": "0"}, "hyperparameter 'epochs' must be an integer >= 1, got 0"),
        ({"lr": "nan"}, "hyperparameter 'lr' must be a finite number, got 'nan'"),
        ({"lr": "-1"}, "hyperparameter 'lr' must be a number > 0, got -1.0"),
        ({"warmup_fraction": "1"}, "hyperparameter 'warmup_fraction' must be a number in [0, 1), got 1.0"),
        ({"deterministic": "maybe"}, "hyperparameter 'deterministic' must be true or false, got 'maybe'"),
        ({"device": "tpu"}, "hyperparameter 'device' must be one of auto, cpu, cuda, got 'tpu'"),
        (
            {"model": "vgg"},
            "hyperparameter 'model' must be one of cnn, resnet, mlp, convnet or a factory 'package.module:function', "
            "got 'vgg'",
        ),
        (
            {"checkpoint_s3_uri": "bucket/x"},
            "hyperparameter 'checkpoint_s3_uri' must be empty or an s3://bucket/prefix URI, got 'bucket/x'",
        ),
    ],
)
def test_bad_value_names_field_and_allowed_values(raw: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_hyperparameters(raw)
    assert str(info.value) == message


def test_unknown_hyperparameter_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown hyperparameter 'learning_rate': allowed are batch_size, .*lr"):
        TrainConfig.from_hyperparameters({"learning_rate": "0.1"})


def test_missing_file_means_defaults_and_bad_json_is_named(tmp_path) -> None:
    assert TrainConfig.from_file(tmp_path / "absent.json") == TrainConfig()
    bad = tmp_path / "hyperparameters.json"
    bad.write_text("{epochs: 3}")
    with pytest.raises(ConfigError, match=r"hyperparameters.json is not valid JSON"):
        TrainConfig.from_file(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must hold a JSON object"):
        TrainConfig.from_file(bad)
