"""Built-in models, user model factories, and the export check that runs before training."""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.conftest import REPO, make_job, run_trainer
from trainer.artifact import export_program, load_program
from trainer.errors import ConfigError
from trainer.model.build import build_model
from trainer.model.export_check import check_exportable
from trainer.model.zoo import CONVNET_MIN_SIDE, MLP, ConvNet, RawPixels, ResNet

EXAMPLE = REPO / "examples" / "custom_model"
MEAN, STD = [0.3], [0.4]


@pytest.fixture(autouse=True)
def _forget_user_modules(tmp_path: Path) -> Iterator[None]:
    """User modules a test imported are dropped afterwards, so no test sees another's user code."""
    path = list(sys.path)
    yield
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None) or ""
        if file.startswith((str(tmp_path), str(EXAMPLE))):
            del sys.modules[name]
    assert sys.path == path, "loading a factory must leave sys.path as it was"


@pytest.fixture
def code_dir(tmp_path: Path) -> Path:
    path = tmp_path / "code"
    path.mkdir()
    return path


@pytest.fixture
def user_module(code_dir: Path) -> Callable[[str], str]:
    """Write ``source`` as a uniquely named module into the code dir; returns the module's name."""

    def write(source: str) -> str:
        name = f"usermodel_{uuid.uuid4().hex[:8]}"
        (code_dir / f"{name}.py").write_text(textwrap.dedent(source))
        return name

    return write


def _build(
    spec: str, code_dir: Path | None, *, channels: int = 1, size: tuple[int, int] = (8, 8), num_classes: int = 10
) -> nn.Module:
    return build_model(
        spec,
        in_channels=channels,
        image_size=size,
        num_classes=num_classes,
        width=8,
        dropout=0.0,
        mean=MEAN * channels,
        std=STD * channels,
        code_dir=code_dir,
    )


def _config_error(spec: str, code_dir: Path | None) -> str:
    with pytest.raises(ConfigError) as info:
        _build(spec, code_dir)
    message = str(info.value)
    assert "\n" not in message, "a ConfigError is one line in output/failure"
    assert message.startswith(f"hyperparameter 'model' ({spec!r}): ")
    return message


# --- built-ins -------------------------------------------------------------------------------------


def test_resnet_trains_one_step_and_exports(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(
        "resnet",
        in_channels=3,
        image_size=(8, 8),
        num_classes=5,
        width=4,
        dropout=0.1,
        mean=[0.5, 0.4, 0.3],
        std=[0.2, 0.2, 0.2],
    )
    assert isinstance(model, RawPixels)
    assert isinstance(model.net, ResNet)
    x, y = torch.rand(6, 3, 8, 8) * 255, torch.randint(0, 5, (6,))
    before = [p.detach().clone() for p in model.parameters()]
    loss = nn.functional.cross_entropy(model.train()(x), y)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters()), "every parameter is trained"
    with torch.no_grad():  # one SGD step (an optimizer's first construction alone costs a second here)
        for p in model.parameters():
            p -= 0.1 * p.grad
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))

    export_program(model, x[:2], tmp_path / "model.pt2")
    program = load_program(tmp_path / "model.pt2")
    with torch.no_grad():
        batch = torch.rand(5, 3, 8, 8) * 255  # another batch size than the example: the batch is dynamic
        assert (program(batch) - model.eval()(batch)).abs().max().item() <= 1e-4


def test_resnet_stem_follows_the_image_size() -> None:
    small = _build("resnet", None, channels=3, size=(32, 32))
    large = _build("resnet", None, channels=3, size=(128, 96))
    assert small.net.stem[0].stride == (1, 1)
    assert large.net.stem[0].kernel_size == (7, 7)
    assert large.net.stem[0].stride == (2, 2)
    with torch.no_grad():
        assert large.eval()(torch.rand(2, 3, 128, 96) * 255).shape == (2, 10)


def test_cnn_is_still_the_default_small_model() -> None:
    model = _build("cnn", None)
    assert model.spec == "cnn"
    with torch.no_grad():
        assert model.eval()(torch.rand(3, 1, 8, 8) * 255).shape == (3, 10)


def _trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_mlp_and_convnet_have_the_keras_examples_layers() -> None:
    # The parameter counts Keras's model.summary() prints for mnist_mlp.py (669,706) and mnist_convnet.py
    # (34,826) on 28x28 digits: same layers, same sizes, at width=32.
    mlp = build_model(
        "mlp", in_channels=1, image_size=(28, 28), num_classes=10, width=32, dropout=0.2, mean=MEAN, std=STD
    )
    convnet = build_model(
        "convnet", in_channels=1, image_size=(28, 28), num_classes=10, width=32, dropout=0.5, mean=MEAN, std=STD
    )
    assert isinstance(mlp.net, MLP)
    assert isinstance(convnet.net, ConvNet)
    assert (mlp.spec, convnet.spec) == ("mlp", "convnet")
    assert _trainable(mlp) == 669_706
    assert _trainable(convnet) == 34_826
    assert [m.p for m in mlp.modules() if isinstance(m, nn.Dropout)] == [0.2, 0.2]
    assert [m.p for m in convnet.modules() if isinstance(m, nn.Dropout)] == [0.5]


@pytest.mark.parametrize("name", ["mlp", "convnet"])
@pytest.mark.parametrize(("channels", "size"), [(1, (28, 28)), (3, (32, 24)), (1, (CONVNET_MIN_SIDE, 17))])
def test_mlp_and_convnet_take_any_channels_and_size_and_export(
    tmp_path: Path, name: str, channels: int, size: tuple[int, int]
) -> None:
    torch.manual_seed(0)
    model = _build(name, None, channels=channels, size=size, num_classes=7)
    x, y = torch.rand(6, channels, *size) * 255, torch.randint(0, 7, (6,))
    loss = nn.functional.cross_entropy(model.train()(x), y)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters()), "every parameter is trained"
    check_exportable(model, x[:2], num_classes=7)
    export_program(model, x[:2], tmp_path / "model.pt2")
    program = load_program(tmp_path / "model.pt2")
    with torch.no_grad():
        batch = torch.rand(5, channels, *size) * 255  # another batch size than the example: the batch is dynamic
        assert program(batch).shape == (5, 7)
        assert (program(batch) - model.eval()(batch)).abs().max().item() <= 1e-4


def test_mlp_takes_the_8x8_digits_and_convnet_says_they_are_too_small() -> None:
    with torch.no_grad():
        assert _build("mlp", None).eval()(torch.rand(3, 1, 8, 8) * 255).shape == (3, 10)
    with pytest.raises(ConfigError) as info:
        _build("convnet", None, size=(8, 8))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("hyperparameter 'model' ('convnet'): ")
    assert "at least 10x10, these are 8x8: use model=cnn or model=mlp" in message
    with pytest.raises(ConfigError, match="these are 28x9"):
        _build("convnet", None, size=(28, CONVNET_MIN_SIDE - 1))


# --- user factories --------------------------------------------------------------------------------


def test_factory_from_code_dir_gets_num_classes_and_input_shape(code_dir: Path, user_module) -> None:
    name = user_module("""
        from torch import nn
        calls = []

        def build(num_classes, input_shape):
            calls.append({"num_classes": num_classes, "input_shape": input_shape})
            channels, height, width = input_shape
            return nn.Sequential(nn.Flatten(), nn.Linear(channels * height * width, num_classes))
    """)
    model = _build(f"{name}:build", code_dir, channels=3, size=(12, 10), num_classes=7)
    module = sys.modules[name]
    assert module.__file__ == str((code_dir / f"{name}.py").resolve())
    assert module.calls == [{"num_classes": 7, "input_shape": (3, 12, 10)}]
    assert isinstance(model, RawPixels)
    assert model.spec == f"{name}:build"
    with torch.no_grad():
        assert model(torch.rand(4, 3, 12, 10) * 255).shape == (4, 7)


def test_factory_from_an_installed_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "site" / "mypkg_installed"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(
        "from torch import nn\n\ndef build(num_classes, input_shape):\n"
        "    return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    model = _build("mypkg_installed.models:build", tmp_path / "no-code-dir")
    assert not any(isinstance(p, nn.parameter.UninitializedParameter) for p in model.parameters()), (
        "lazy modules get their shapes before the optimizer sees them"
    )
    with torch.no_grad():
        assert model(torch.rand(2, 1, 8, 8) * 255).shape == (2, 10)


def test_wrapper_normalises_raw_pixels_before_the_user_model(code_dir: Path, user_module) -> None:
    name = user_module("""
        from torch import nn

        def build(num_classes, input_shape):
            return nn.Sequential(nn.Conv2d(input_shape[0], 4, 3), nn.Flatten(), nn.LazyLinear(num_classes))
    """)
    mean, std = [0.1, 0.5, 0.9], [0.2, 0.3, 0.4]
    model = build_model(
        f"{name}:build",
        in_channels=3,
        image_size=(8, 8),
        num_classes=3,
        width=8,
        dropout=0.0,
        mean=mean,
        std=std,
        code_dir=code_dir,
    ).eval()
    x = torch.randint(0, 256, (5, 3, 8, 8)).float()
    by_hand = (x / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.net(by_hand))


def test_missing_module_is_a_config_error(code_dir: Path) -> None:
    message = _config_error("nosuchmodule_xyz:build", code_dir)
    assert message.endswith(
        f"no module 'nosuchmodule_xyz' in the job's code directory {code_dir} "
        "or on the Python path (installed packages, PYTHONPATH)"
    )


def test_missing_code_dir_is_named(tmp_path: Path) -> None:
    message = _config_error("nosuchmodule_xyz:build", tmp_path / "code")
    assert f"{tmp_path / 'code'} (which does not exist) or on the Python path" in message


def test_missing_function_is_a_config_error(code_dir: Path, user_module) -> None:
    name = user_module("def build_model(num_classes, input_shape):\n    pass\n")
    message = _config_error(f"{name}:build", code_dir)
    assert message.endswith(f"module '{name}' ({(code_dir / name).resolve()}.py) has no function 'build'")


def test_factory_that_raises_is_a_config_error(code_dir: Path, user_module) -> None:
    name = user_module("""
        def build(num_classes, input_shape):
            raise ValueError("this model needs\\nRGB images")
    """)
    message = _config_error(f"{name}:build", code_dir)
    where = f"{(code_dir / name).resolve()}.py:3 in build"
    assert message.endswith(
        f"build(num_classes=10, input_shape=(1, 8, 8)) raised ValueError: this model needs "
        f'(at {where}: `raise ValueError("this model needs\\nRGB images")`)'
    )


def test_factory_returning_a_non_module_is_a_config_error(code_dir: Path, user_module) -> None:
    name = user_module("def build(num_classes, input_shape):\n    return {'layers': 3}\n")
    message = _config_error(f"{name}:build", code_dir)
    assert message.endswith(
        "build(num_classes=10, input_shape=(1, 8, 8)) returned builtins.dict, not a torch.nn.Module"
    )


def test_module_whose_import_fails_is_a_config_error(code_dir: Path, user_module) -> None:
    name = user_module("import not_installed_dependency_xyz\n")
    message = _config_error(f"{name}:build", code_dir)
    assert message.endswith(
        f"importing '{name}' failed: ModuleNotFoundError: No module named "
        f"'not_installed_dependency_xyz' (at {(code_dir / name).resolve()}.py:1 in <module>: "
        "`import not_installed_dependency_xyz`)"
    )


def test_module_with_a_syntax_error_is_a_config_error(code_dir: Path, user_module) -> None:
    name = user_module("def build(:\n")
    assert f"importing '{name}' failed: SyntaxError: " in _config_error(f"{name}:build", code_dir)


def test_factory_name_that_is_not_a_function(code_dir: Path, user_module) -> None:
    name = user_module("build = 3\n")
    assert _config_error(f"{name}:build", code_dir).endswith(
        f"'build' in {(code_dir / name).resolve()}.py is not callable (int)"
    )


# --- the export check ------------------------------------------------------------------------------


class _DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        if x.sum() > 0:
            return self.linear(x)
        return -self.linear(x)


class _FixedBatch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.view(2, 64))


def test_data_dependent_control_flow_is_rejected_with_the_line(capfd: pytest.CaptureFixture[str]) -> None:
    model = RawPixels(_DataDependent(), MEAN, STD)
    with pytest.raises(ConfigError) as info:
        check_exportable(model, torch.rand(2, 1, 8, 8) * 255, spec="mine:build")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("model 'mine:build' cannot be exported with torch.export: ")
    assert "a Python branch or number depends on tensor values (data-dependent expression " in message
    assert f"{__file__}:" in message
    assert "in forward: `if x.sum() > 0:`; make forward() free" in message
    assert "; make forward() free of data-dependent Python control flow" in message
    assert "def forward" not in capfd.readouterr().err, "torch's partial-graph dump is kept out of the log"


def test_fixed_batch_size_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"forward\(\) fixes the batch size to 2"):
        check_exportable(RawPixels(_FixedBatch(), MEAN, STD), torch.rand(2, 1, 8, 8) * 255)


def test_wrong_number_of_logits_is_rejected() -> None:
    model = RawPixels(nn.Sequential(nn.Flatten(), nn.Linear(64, 4)), MEAN, STD)
    with pytest.raises(ConfigError, match=r"returned logits of shape \[2, 4\] for a batch of 2; expected \[2, 10\]"):
        check_exportable(model, torch.rand(2, 1, 8, 8) * 255, num_classes=10)


def test_check_leaves_the_model_and_rng_untouched() -> None:
    torch.manual_seed(0)
    model = _build("cnn", None).train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    example = torch.rand(1, 1, 8, 8) * 255  # a batch of 1 is padded to 2 (export specialises a dimension of 1)
    rng = torch.get_rng_state()
    check_exportable(model, example, num_classes=10)
    assert all(m.training for m in model.modules())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())  # BatchNorm stats included
    assert torch.equal(rng, torch.get_rng_state())


def test_worked_example_builds_and_passes_the_export_check() -> None:
    model = _build("tinynet:build", EXAMPLE)
    check_exportable(model, torch.rand(2, 1, 8, 8) * 255, num_classes=10)
    assert type(model.net).__name__ == "TinyNet"


# --- the worked example of docs/trainer.md, end to end ---------------------------------------------


@pytest.mark.slow
def test_worked_example_trains_from_the_job_code_dir(tmp_path: Path, dataset: Path) -> None:
    base = make_job(tmp_path / "job", dataset, {"epochs": "2", "model": "tinynet:build"})
    shutil.copytree(EXAMPLE, base / "code")
    result = run_trainer(base)
    assert result.returncode == 0, f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    manifest = json.loads((base / "model" / "manifest.json").read_text())
    assert manifest["training"]["config"]["model"] == "tinynet:build"
    assert manifest["metrics"]["test"]["accuracy"] >= 0.5
    program = load_program(base / "model" / "model.pt2")  # raw pixels in, logits out: what the server runs
    with torch.no_grad():
        assert program(torch.full((3, 1, 8, 8), 255.0)).shape == (3, 10)


@pytest.mark.slow
def test_unexportable_user_model_fails_before_training(tmp_path: Path, dataset: Path) -> None:
    base = make_job(tmp_path / "job", dataset, {"epochs": "50", "model": "branchy:build"})
    (base / "code").mkdir()
    (base / "code" / "branchy.py").write_text(
        textwrap.dedent("""
        from torch import nn

        class Branchy(nn.Module):
            def __init__(self, num_classes):
                super().__init__()
                self.linear = nn.LazyLinear(num_classes)

            def forward(self, x):
                if x.mean() > 0:
                    return self.linear(x.flatten(1))
                return self.linear(-x.flatten(1))

        def build(num_classes, input_shape):
            return Branchy(num_classes)
    """)
    )
    result = run_trainer(base)
    assert result.returncode == 1, result.stderr
    failure = (base / "output" / "failure").read_text().strip()
    assert failure.startswith("model 'branchy:build' cannot be exported with torch.export: ")
    assert f"{base / 'code' / 'branchy.py'}:10 in forward: `if x.mean() > 0:`" in failure
    assert "Traceback" not in result.stderr
    assert not list(base.glob("checkpoints/step-*")), "the export check runs before the first step"
