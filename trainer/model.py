"""The model zoo, user model factories, and the export check that runs before training.

Every model takes raw pixels in [0, 255] and normalises inside, so the exported artifact needs no
preprocessing code on the serving side beyond decoding pixels (docs/artifact.md). Built-ins:

- ``cnn``: :class:`SmallCNN`, sized for tiny images such as the 8x8 digits.
- ``resnet``: :class:`ResNet`, BasicBlock stages for larger images (32x32 up to 224x224 and beyond).
- ``mlp``: :class:`MLP`, the Keras MNIST multi-layer perceptron.
- ``convnet``: :class:`ConvNet`, the Keras "Simple MNIST convnet".

Anything else is a factory ``package.module:function`` (docs/trainer.md), imported from the job's code
directory (``<SAGEMAKER_BASE_DIR>/code``) or an installed package and called as
``function(num_classes=..., input_shape=(C, H, W))``; it returns an ``nn.Module`` that takes normalised
``[N, C, H, W]`` float batches and returns ``[N, num_classes]`` logits.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import io
import logging
import os
import re
import sys
import sysconfig
import traceback
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from trainer.artifact import MAX_BATCH
from trainer.errors import ConfigError

BUILTINS = ("cnn", "resnet", "mlp", "convnet")
LARGE_INPUT = 96
"""Images whose shorter side is at least this get ResNet's ImageNet stem (7x7 stride 2 + max pool)."""


class Normalize(nn.Module):
    """(x / 255 - mean) / std per channel, with statistics measured on the training set."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x / 255.0 - self.mean) / self.std


class RawPixels(nn.Module):
    """Wraps a network that takes normalised input so that it takes raw pixels in [0, 255]."""

    def __init__(self, net: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """Three conv blocks (width, 2w, 4w) with one 2x2 pool, global average pool, linear head.

    Sized for small images such as 8x8 digits: about 100k parameters at width 32. Takes raw pixels
    (it holds its own :class:`Normalize`).
    """

    def __init__(
        self, in_channels: int, num_classes: int, width: int, dropout: float, mean: list[float], std: list[float]
    ) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.features = nn.Sequential(
            _block(in_channels, width),
            _block(width, 2 * width),
            nn.MaxPool2d(2),
            _block(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(4 * width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.normalize(x)))


class BasicBlock(nn.Module):
    """Two 3x3 convs with BatchNorm and an identity (or 1x1 projection) shortcut, as in ResNet-18."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet-18-style network: stem, four BasicBlock stages (width, 2w, 4w, 8w; stages 2-4 halve the
    resolution), global average pool, dropout, linear head. Takes *normalised* input; wrap it in
    :class:`RawPixels` for raw pixels (``build_model`` does).

    The stem is a 3x3 stride-1 conv for small images (CIFAR-style, so 8x8 still ends at 1x1) and the
    ImageNet stem (7x7 stride 2, 3x3 max pool stride 2) when ``large_input``. About 2.8M parameters at
    width 32 (11M at width 64, like ResNet-18).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        width: int = 32,
        dropout: float = 0.0,
        blocks: tuple[int, ...] = (2, 2, 2, 2),
        large_input: bool = False,
    ) -> None:
        super().__init__()
        if large_input:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            )
        else:
            self.stem = _block(in_channels, width)
        stages, cin = [], width
        for i, count in enumerate(blocks):
            cout = width * 2**i
            stages += [BasicBlock(cin if j == 0 else cout, cout, 2 if i > 0 and j == 0 else 1) for j in range(count)]
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(cin, num_classes))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        for module in self.modules():
            if isinstance(module, BasicBlock):
                # Each block starts as the identity: trains faster and more stably (Goyal et al. 2017).
                nn.init.zeros_(module.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.stages(self.stem(x))))


class MLP(nn.Module):
    """The MLP of Keras's MNIST example (keras-team/keras ``examples/mnist_mlp.py``,
    at commit 10bfb1c565582803982e2205d41b095bc929d4a4): Flatten, Dense(512, relu),
    Dropout(0.2), Dense(512, relu), Dropout(0.2), Dense(10).

    Here the hidden layers have ``16 * width`` units (512 at the default ``width=32``, as in Keras) and both
    dropouts use ``dropout`` (Keras: 0.2); the head returns logits, since the loss applies the softmax that the
    Keras model ends with. Any ``C x H x W`` input: the first layer takes ``C * H * W`` features. Takes
    *normalised* input (``build_model`` wraps it in :class:`RawPixels`).
    """

    def __init__(
        self, in_channels: int, image_size: tuple[int, int], num_classes: int, width: int = 32, dropout: float = 0.2
    ) -> None:
        super().__init__()
        hidden = 16 * width
        self.layers = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_channels * image_size[0] * image_size[1], hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class ConvNet(nn.Module):
    """The "Simple MNIST convnet" of the Keras examples (keras-team/keras-io
    ``examples/vision/mnist_convnet.py``, at commit 02cfe8063b505adc073986c91729f22039f77ad0):
    Conv2D(32, 3x3, relu), MaxPooling2D(2x2), Conv2D(64, 3x3, relu), MaxPooling2D(2x2), Flatten, Dropout(0.5),
    Dense(10). About 35k parameters on 28x28 digits.

    Here the convolutions have ``width`` and ``2 * width`` channels (32 and 64 at the default ``width=32``, as in
    Keras) and the dropout is ``dropout`` (Keras: 0.5); like Keras's, the convolutions are unpadded ("valid"),
    so an image must be at least :data:`CONVNET_MIN_SIDE` pixels on each side. Takes *normalised* input.
    """

    def __init__(
        self, in_channels: int, image_size: tuple[int, int], num_classes: int, width: int = 32, dropout: float = 0.5
    ) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, kernel_size=3),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, kernel_size=3),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        rows, cols = (_convnet_side(side) for side in image_size)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * width * rows * cols, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _convnet_side(side: int) -> int:
    """One side of :class:`ConvNet`'s last feature map: each stage is a valid 3x3 conv (-2) then a 2x2 pool (/2)."""
    for _ in range(2):
        side = (side - 2) // 2
    return side


CONVNET_MIN_SIDE = 10
"""The smallest side :class:`ConvNet` takes: 10 -> 8 -> 4 -> 2 -> 1; 9 would end at 0."""


def build_model(
    name: str,
    *,
    in_channels: int,
    image_size: tuple[int, int] | None = None,
    num_classes: int,
    width: int,
    dropout: float,
    mean: list[float],
    std: list[float],
    code_dir: Path | None = None,
) -> nn.Module:
    """The model for hyperparameter ``model``: a built-in or a user factory, taking raw pixels.

    ``width`` and ``dropout`` size the built-ins; user factories get ``num_classes`` and
    ``input_shape=(in_channels, *image_size)`` only. ``code_dir`` is the job's code directory
    (``<SAGEMAKER_BASE_DIR>/code``); it is searched before the installed packages. ``image_size``
    is required for user factories, ``mlp`` and ``convnet`` (``resnet`` uses it to pick its stem); images
    too small for ``convnet`` raise ``ConfigError``. A factory that
    cannot be imported or called, or returns something else than an ``nn.Module``, raises
    ``ConfigError``. The returned module's ``spec`` attribute is ``name``.
    """
    if len(mean) != in_channels or len(std) != in_channels:
        raise ValueError(f"mean and std need {in_channels} values (one per channel), got {len(mean)} and {len(std)}")
    model: nn.Module
    if name == "cnn":
        model = SmallCNN(in_channels, num_classes, width, dropout, mean, std)
    elif name == "resnet":
        large = image_size is not None and min(image_size) >= LARGE_INPUT
        model = RawPixels(ResNet(in_channels, num_classes, width, dropout, large_input=large), mean, std)
    elif name in ("mlp", "convnet"):
        if image_size is None:
            raise ValueError(f"build_model needs image_size for {name}")
        if name == "convnet" and min(image_size) < CONVNET_MIN_SIDE:
            raise ConfigError(
                f"hyperparameter 'model' ('convnet'): the Keras convnet's two unpadded 3x3 convolutions "
                f"and 2x2 poolings need images of at least {CONVNET_MIN_SIDE}x{CONVNET_MIN_SIDE}, these "
                f"are {image_size[0]}x{image_size[1]}: use model=cnn or model=mlp for them"
            )
        net = (MLP if name == "mlp" else ConvNet)(in_channels, image_size, num_classes, width, dropout)
        model = RawPixels(net, mean, std)
    elif ":" in name:
        if image_size is None:
            raise ValueError("build_model needs image_size for a user model factory")
        net = _call_factory(name, code_dir, num_classes=num_classes, input_shape=(in_channels, *image_size))
        model = RawPixels(net, mean, std)
    else:
        raise ValueError(f"unknown model {name!r}")  # TrainConfig already validated the name
    model.spec = name
    return model


# ---------------------------------------------------------------------------------------------------
# User factories


def _config_error(spec: str, cause: str) -> ConfigError:
    return ConfigError(f"hyperparameter 'model' ({spec!r}): {_one_line(cause)}")


@contextlib.contextmanager
def _on_sys_path(code_dir: Path | None) -> Iterator[None]:
    """``code_dir`` first on sys.path while the factory is imported and called, then as before."""
    if code_dir is None or not code_dir.is_dir():
        yield
        return
    entry = str(code_dir.resolve())
    sys.path.insert(0, entry)
    importlib.invalidate_caches()  # the directory may be newer than the finders' caches
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(entry)


def _where(code_dir: Path | None) -> str:
    on_path = "on the Python path (installed packages, PYTHONPATH)"
    if code_dir is None:
        return on_path
    missing = "" if code_dir.is_dir() else " (which does not exist)"
    return f"in the job's code directory {code_dir}{missing} or {on_path}"


def _import_module(spec: str, module_name: str, code_dir: Path | None):
    top = module_name.split(".")[0]
    if code_dir is not None and top in sys.modules and ((code_dir / f"{top}.py").exists() or (code_dir / top).is_dir()):
        found = getattr(sys.modules[top], "__file__", None) or "a built-in module"
        if found == "a built-in module" or not Path(found).resolve().is_relative_to(code_dir.resolve()):
            raise _config_error(
                spec, f"module '{top}' in {code_dir} has the name of a module already imported from {found}; rename it"
            )
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise _config_error(spec, f"no module '{module_name}' {_where(code_dir)}") from None
        raise _config_error(spec, f"importing '{module_name}' failed: {_describe(exc)}") from None
    except Exception as exc:  # the user's module raised while being imported (SyntaxError included)
        raise _config_error(spec, f"importing '{module_name}' failed: {_describe(exc)}") from None


def _call_factory(
    spec: str, code_dir: Path | None, *, num_classes: int, input_shape: tuple[int, int, int]
) -> nn.Module:
    module_name, _, function_name = spec.partition(":")
    call = f"{function_name}(num_classes={num_classes}, input_shape={input_shape})"
    with _on_sys_path(code_dir):
        module = _import_module(spec, module_name, code_dir)
        where = getattr(module, "__file__", None) or module_name
        factory = getattr(module, function_name, None)
        if factory is None:
            raise _config_error(spec, f"module '{module_name}' ({where}) has no function '{function_name}'")
        if not callable(factory):
            raise _config_error(spec, f"'{function_name}' in {where} is not callable ({type(factory).__name__})")
        try:
            net = factory(num_classes=num_classes, input_shape=input_shape)
        except Exception as exc:
            raise _config_error(spec, f"{call} raised {_describe(exc)}") from None
    if not isinstance(net, nn.Module):
        raise _config_error(
            spec, f"{call} returned {type(net).__module__}.{type(net).__qualname__}, not a torch.nn.Module"
        )
    if any(isinstance(p, nn.parameter.UninitializedParameter) for p in net.parameters()):
        _materialize(spec, net, input_shape)
    if not any(p.requires_grad for p in net.parameters()):
        raise _config_error(spec, f"{call} returned a {type(net).__name__} without trainable parameters")
    return net


def _materialize(spec: str, net: nn.Module, input_shape: tuple[int, int, int]) -> None:
    """Give lazy modules (nn.LazyLinear, ...) their shapes now: the optimizer needs real parameters."""
    modes = [(module, module.training) for module in net.modules()]
    try:
        with torch.no_grad():
            net.eval()(torch.zeros(2, *input_shape))
    except Exception as exc:
        raise _config_error(
            spec, f"the model fails on a batch of shape {[2, *input_shape]}: {_describe(exc)}"
        ) from None
    finally:
        for module, training in modes:
            module.training = training


# ---------------------------------------------------------------------------------------------------
# The export check


_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_STDLIB_DIR = sysconfig.get_paths()["stdlib"] + os.sep
_NOISE = (
    "for more information",
    "for extended logs",
    "if you suspect",
    "for c++ stack trace",
    "consider using",
    "the error above",
    "caused by",
    "the following call raised",
    "user code",
)
_OWN_FRAMES = frozenset({"check_exportable", "_call_factory", "_import_module"})
"""Functions of this file that call into the user's code: a failure is never *in* them."""
_EXPORT_HINT = (
    "make forward() free of data-dependent Python control flow (if/while on tensor values, .item(), "
    ".tolist(), numpy: use torch.where or torch.cond) and of a fixed batch size (x.flatten(1), not "
    "x.view(2, -1)); see docs/trainer.md"
)


def check_exportable(
    model: nn.Module, example: torch.Tensor, *, spec: str | None = None, num_classes: int | None = None
) -> None:
    """Fail before training when the model could not be shipped: a dry run of the artifact export.

    Runs a deep copy of ``model`` on CPU in eval mode on ``example`` (a batch of raw pixels) and
    ``torch.export``s it exactly as ``trainer.artifact.export_program`` will (dynamic batch dimension
    1..MAX_BATCH). ``model`` itself, its weights, BatchNorm statistics, train/eval mode and device, and
    the RNG state are untouched. Raises ``ConfigError`` naming what failed and where in the user's code.
    ``num_classes``, when given, is checked against the width of the logits.
    """
    spec = spec or getattr(model, "spec", None) or type(model).__name__
    if example.shape[0] < 2:
        # export specialises a dimension of size 1, so the dynamic batch needs an example of 2 or more
        example = example[:1].expand(2, *example.shape[1:])
    example = example.detach().to("cpu", torch.float32)
    with torch.random.fork_rng(devices=[]):
        try:
            dry = copy.deepcopy(model).cpu().eval()
        except Exception as exc:
            raise ConfigError(f"model '{spec}' cannot be copied for the export check: {_describe(exc)}") from None
        try:
            with torch.no_grad():
                out = dry(example)
        except Exception as exc:
            raise ConfigError(
                f"model '{spec}' fails on a batch of shape {list(example.shape)} (raw pixels, "
                f"float32 NCHW): {_describe(exc)}"
            ) from None
        _check_logits(spec, out, len(example), num_classes)
        batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
        try:
            with _quiet_torch():
                torch.export.export(dry, (example,), dynamic_shapes=({0: batch},))
        except Exception as exc:
            raise ConfigError(
                f"model '{spec}' cannot be exported with torch.export: {_export_cause(exc)}; {_EXPORT_HINT}"
            ) from None


def _check_logits(spec: str, out: object, batch: int, num_classes: int | None) -> None:
    if not isinstance(out, torch.Tensor):
        raise ConfigError(
            f"model '{spec}': forward() must return one tensor of logits [N, classes], got {type(out).__name__}"
        )
    expected = f"[{batch}, {num_classes if num_classes is not None else 'classes'}]"
    if out.ndim != 2 or out.shape[0] != batch or (num_classes is not None and out.shape[1] != num_classes):
        raise ConfigError(
            f"model '{spec}': forward() returned logits of shape {list(out.shape)} for a batch of "
            f"{batch}; expected {expected}"
        )
    if not out.is_floating_point():
        raise ConfigError(f"model '{spec}': forward() returned {out.dtype} logits; expected floating point")


@contextlib.contextmanager
def _quiet_torch() -> Iterator[None]:
    """torch.export prints the partial graph and logs warnings on failure; our one line says it better."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logging.disable(previous)


def _export_cause(exc: BaseException) -> str:
    text = str(exc)
    if match := re.search(r"specialized it to be a constant \((\d+)\)", text):
        return (
            f"forward() fixes the batch size to {match.group(1)} (the exported program must take any batch "
            f"of 1..{MAX_BATCH})"
        )
    line = _first_useful_line(text) or type(exc).__name__
    if line.startswith("Constraints violated"):
        # e.g. "Not all values of batch = L['x'].size()[0] in the specified range batch <= 4096 satisfy ..."
        detail = _first_useful_line(text.split("\n", 1)[1] if "\n" in text else "")
        detail = re.sub(r"L\[[^\]]*\](?:\[[^\]]*\])*\.size\(\)\[0\]", "N", detail)
        return f"forward() does not work for every batch size of 1..{MAX_BATCH}" + (f" ({detail})" if detail else "")
    line = re.sub(r"\s*\(unhinted: .*$", "", line)
    line = re.sub(r"\s*\(Size-like symbols: .*$", "", line)
    if match := re.match(
        r"Could not (?:guard on|extract specialized integer from) (data-dependent expression .*?)\.?$", line
    ):
        line = f"a Python branch or number depends on tensor values ({match.group(1)})"
    else:
        line = f"{type(exc).__name__}: {line}"
    where = _user_frame(exc)
    return line + (f" at {where}" if where else "")


def _first_useful_line(text: str) -> str:
    for raw in text.splitlines():
        line = re.sub(r"^-\s+", "", raw.strip())  # a bullet of torch's lists
        line = re.split(r"\s+For more information", line)[0].strip()
        if line and not line.lower().startswith(_NOISE):
            return line
    return ""


def _user_frame(exc: BaseException) -> str:
    """Where in the model's own code the failure happened: the innermost frame outside torch and Python."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        name = frame.filename
        stdlib = name.startswith(_STDLIB_DIR) and "-packages" not in name
        if stdlib or name.startswith((_TORCH_DIR, "<")) or (name == __file__ and frame.name in _OWN_FRAMES):
            continue
        code = re.sub(r"\s+#.*$", "", frame.line or "").strip()  # the line, without its comment
        code = f": `{code}`" if code else ""
        return f"{name}:{frame.lineno} in {frame.name}{code}"
    return ""


def _describe(exc: BaseException) -> str:
    """``Type: message (at file:line in function)`` for an exception raised by the user's code."""
    message = _first_useful_line(str(exc))
    where = _user_frame(exc)
    return f"{type(exc).__name__}{': ' + message if message else ''}" + (f" (at {where})" if where else "")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _isolated_check(conn, build_kwargs: dict, example: torch.Tensor, spec: str, num_classes: int) -> None:
    try:
        check_exportable(build_model(**build_kwargs), example, spec=spec, num_classes=num_classes)
    except ConfigError as exc:
        conn.send(str(exc))
    except Exception as exc:  # a bug in the check itself: report it rather than hang the parent
        conn.send(f"model '{spec}' export check crashed: {_describe(exc)}")
    else:
        conn.send(None)
    finally:
        conn.close()


def check_exportable_isolated(build_kwargs: dict, example: torch.Tensor, *, spec: str, num_classes: int) -> None:
    """:func:`check_exportable` on a model built from ``build_kwargs`` in a fresh (spawned) process.

    torch.export's machinery stays in memory once imported (about 36 MiB here, more with big graphs);
    checking in a child keeps the training process as lean as a bare loop. Exportability depends on
    the architecture, not the weights, so a freshly built model answers the question.
    """
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_isolated_check, args=(send, build_kwargs, example, spec, num_classes), daemon=True)
    child.start()
    send.close()
    try:
        message = receive.recv()
    except EOFError:
        child.join()
        raise ConfigError(f"model '{spec}' export check died with exit code {child.exitcode}") from None
    child.join()
    if message is not None:
        raise ConfigError(message)
