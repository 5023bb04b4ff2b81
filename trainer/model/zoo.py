"""The built-in networks. Each is plain ``nn.Module`` code: no trainer machinery, nothing that export dislikes.

:class:`SmallCNN` holds its own :class:`Normalize`; the others take *normalised* input and
:func:`trainer.model.build.build_model` wraps them in :class:`RawPixels`, so every built model takes raw pixels.
"""

from __future__ import annotations

import torch
from torch import nn


class RawPixelModel(nn.Module):
    """What :func:`trainer.model.build.build_model` returns: a classifier of raw pixels in [0, 255]."""

    spec: str
    """The hyperparameter ``model`` it was built for (``cnn``, ``package.module:function``, ...)."""


class Normalize(nn.Module):
    """(x / 255 - mean) / std per channel, with statistics measured on the training set."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x / 255.0 - self.mean) / self.std


class RawPixels(RawPixelModel):
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


class SmallCNN(RawPixelModel):
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
