"""``build_model``: hyperparameter ``model`` to a network that takes raw pixels, and :class:`ModelSpec`,
the arguments of one call as a value that a child process can rebuild the same model from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trainer.errors import ConfigError
from trainer.model.factory import call_factory
from trainer.model.zoo import CONVNET_MIN_SIDE, MLP, ConvNet, RawPixelModel, RawPixels, ResNet, SmallCNN

BUILTINS = ("cnn", "resnet", "mlp", "convnet")
LARGE_INPUT = 96
"""Images whose shorter side is at least this get ResNet's ImageNet stem (7x7 stride 2 + max pool)."""


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
) -> RawPixelModel:
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
    model: RawPixelModel
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
        model = RawPixels(
            (MLP if name == "mlp" else ConvNet)(in_channels, image_size, num_classes, width, dropout), mean, std
        )
    elif ":" in name:
        if image_size is None:
            raise ValueError("build_model needs image_size for a user model factory")
        net = call_factory(name, code_dir, num_classes=num_classes, input_shape=(in_channels, *image_size))
        model = RawPixels(net, mean, std)
    else:
        raise ValueError(f"unknown model {name!r}")  # TrainConfig already validated the name
    model.spec = name
    return model


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """The arguments of one :func:`build_model` call. The export check builds the same model from it in a fresh
    process (:func:`trainer.model.export_check.check_exportable_isolated`), so it must pickle."""

    name: str
    """Hyperparameter ``model``: a built-in of :data:`BUILTINS` or ``package.module:function``."""
    in_channels: int
    """Image channels (1 grayscale, 3 RGB)."""
    image_size: tuple[int, int]
    """(height, width) in pixels."""
    num_classes: int
    """Width of the logits."""
    width: int
    """Hyperparameter ``width``."""
    dropout: float
    """Hyperparameter ``dropout``."""
    mean: list[float]
    """Per-channel mean of the training pixels / 255, one value a channel."""
    std: list[float]
    """Per-channel standard deviation of the training pixels / 255, one value a channel."""
    code_dir: Path | None = None
    """The job's code directory, searched first for a user factory."""

    def build(self) -> RawPixelModel:
        return build_model(
            self.name,
            in_channels=self.in_channels,
            image_size=self.image_size,
            num_classes=self.num_classes,
            width=self.width,
            dropout=self.dropout,
            mean=self.mean,
            std=self.std,
            code_dir=self.code_dir,
        )
