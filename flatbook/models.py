"""The paper's architectures, exactly, and smaller variants of them.

``build(name, num_classes=..., in_channels=..., **variant)`` with ``name`` one of:

=================  ============================================================  ==============
name               structure (see ../shared/PAPER.md; the authors' code wins)      parameters
=================  ============================================================  ==============
``logreg``         Flatten - Linear(784, C)                                       7,850 (C=10)
``mlp``            Linear(784,10)-ReLU-Linear(10,100)-ReLU-Linear(100,C)          9,960 (C=10)
``allcnnc``        DeepOBS All-CNN-C: 9 convs, TF "same" padding, dropout         1,387,108 (C=100)
``preresnet164``   bottleneck pre-activation ResNet, 18 blocks a stage            1,726,388 (C=100)
``wrn28x10``       WideResNet-28-10, all convs with bias, stride in 2nd conv      36,546,980 (C=100)
``vgg16bn``        VGG-16 with BatchNorm, conv bias, 3-layer 512-wide classifier  15,299,748 (C=100)
=================  ============================================================  ==============

Variants (the ``laptop`` profile's smaller models): ``mlp(hidden=(10, 100))``,
``preresnet(depth=20)`` (depth = 9 n + 2, bottleneck), ``wrn(depth=16, width=4)``
(depth = 6 n + 4), ``vgg16bn(width=0.5)``, ``allcnnc(width=0.5)``, and ``in_features`` /
``in_channels`` / ``image_size`` / ``num_classes`` for other data (e.g. Fashion-MNIST padded to
32x32). Initialisations follow the authors' code: Xavier-normal weights and bias 0.1 for
All-CNN-C; N(0, 2 / (k^2 out_channels)) conv weights, BatchNorm (1, 0) and zero conv biases for
PreResNet and VGG; PyTorch's defaults for WideResNet, logistic regression and the MLP.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .checks import positive_int

__all__ = ["NAMES", "PAPER_PARAMETER_COUNTS", "build", "count_parameters", "TFSameConv2d", "model_label"]

NAMES = ("logreg", "mlp", "allcnnc", "preresnet164", "wrn28x10", "vgg16bn")

# (name, num_classes) -> the parameter count the paper's code gives (checked in the tests)
PAPER_PARAMETER_COUNTS = {
    ("logreg", 10): 7_850,
    ("mlp", 10): 9_960,
    ("allcnnc", 100): 1_387_108,
    ("preresnet164", 100): 1_726_388,
    ("wrn28x10", 100): 36_546_980,
    ("vgg16bn", 100): 15_299_748,
    ("vgg16bn", 10): 15_253_578,
}


def count_parameters(model: nn.Module) -> int:
    """The number of scalar parameters of ``model`` (every tensor of ``model.parameters()``)."""
    return sum(p.numel() for p in model.parameters())


def _he_conv_init(model: nn.Module) -> None:
    """The authors' PreResNet / VGG init: conv weights N(0, 2 / (k_h k_w out)), conv biases 0,
    BatchNorm weight 1 and bias 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# --- logistic regression and the MLP ---------------------------------------------------------


def logreg(num_classes: int = 10, in_features: int = 784) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, num_classes))


def mlp(num_classes: int = 10, in_features: int = 784, hidden: Sequence[int] = (10, 100)) -> nn.Module:
    """ReLU MLP; the authors' network is 784-10-100-10 (the prose's "one hidden layer of 100
    units" would have 79,510 parameters)."""
    if not hidden or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden):
        raise ValueError(f"hidden must be a non-empty list of positive integers, got {hidden!r}")
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


# --- All-CNN-C (DeepOBS cifar100_allcnnc) ------------------------------------------------------


class TFSameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's "same" padding: total padding max((ceil(n/s)-1) s + k - n, 0),
    the odd pixel on the bottom/right (so stride 2 on 32x32 pads (0, 1, 0, 1))."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution with TensorFlow's "same" padding: pad so that the output has ceil(size / stride)
        pixels a side (the extra pixel, if any, on the right and bottom), then convolve unpadded."""
        pads = []
        for size, k, s in zip(x.shape[-2:][::-1], self.kernel_size[::-1], self.stride[::-1]):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def allcnnc(num_classes: int = 100, in_channels: int = 3, width: float = 1.0, image_size: int = 32) -> nn.Module:
    """All-CNN-C as in DeepOBS: ReLU after every conv (also the last), global average pool."""
    c1, c2 = max(1, round(96 * width)), max(1, round(192 * width))
    same = lambda i, o, s=1: TFSameConv2d(i, o, 3, stride=s)  # noqa: E731
    after = math.ceil(math.ceil(image_size / 2) / 2) - 2  # two stride-2 "same" convs, one "valid" 3x3
    if after < 1:
        raise ValueError(f"image_size {image_size} is too small for All-CNN-C (needs >= 9: after two stride-2 "
                         "convolutions and a valid 3x3 one, at least 1 pixel)")
    net = nn.Sequential(
        nn.Dropout(0.2),
        same(in_channels, c1), nn.ReLU(), same(c1, c1), nn.ReLU(), same(c1, c1, 2), nn.ReLU(),
        nn.Dropout(0.5),
        same(c1, c2), nn.ReLU(), same(c2, c2), nn.ReLU(), same(c2, c2, 2), nn.ReLU(),
        nn.Dropout(0.5),
        nn.Conv2d(c2, c2, 3), nn.ReLU(), nn.Conv2d(c2, c2, 1), nn.ReLU(), nn.Conv2d(c2, num_classes, 1), nn.ReLU(),
        nn.AvgPool2d(after), nn.Flatten(),
    )
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_normal_(m.weight)
            nn.init.constant_(m.bias, 0.1)
    return net


# --- PreResNet (bottleneck) -------------------------------------------------------------------


class _PreActBottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, shortcut: bool):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        # the authors' shortcut: a 1x1 conv (no BatchNorm) on the block's RAW input
        self.downsample = nn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False) if shortcut else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        return out + (self.downsample(x) if self.downsample is not None else x)


class PreResNet(nn.Module):
    def __init__(self, depth: int = 164, num_classes: int = 100, in_channels: int = 3, image_size: int = 32):
        super().__init__()
        if (depth - 2) % 9 != 0 or depth < 11:
            raise ValueError(f"PreResNet (bottleneck) depth must be 9 n + 2 with n >= 1 (e.g. 20, 164), got {depth}")
        n = (depth - 2) // 9
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        blocks, inplanes = [], 16
        for stage, planes in enumerate((16, 32, 64)):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(_PreActBottleneck(inplanes, planes, stride, shortcut=(i == 0)))
                inplanes = planes * 4
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(inplanes)
        self.pool = nn.AvgPool2d(image_size // 4)
        self.fc = nn.Linear(inplanes, num_classes)
        _he_conv_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(self.conv1(x))
        out = self.pool(F.relu(self.bn(out)))
        return self.fc(out.flatten(1))


# --- WideResNet -------------------------------------------------------------------------------


class _WideBasic(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int, dropout: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, padding=1, bias=True)
        self.dropout = nn.Dropout(dropout)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=True)  # stride in the 2nd conv
        self.shortcut = (nn.Conv2d(inplanes, planes, 1, stride=stride, bias=True)
                         if stride != 1 or inplanes != planes else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.dropout(self.conv1(F.relu(self.bn1(x))))
        out = self.conv2(F.relu(self.bn2(out)))
        return out + (self.shortcut(x) if self.shortcut is not None else x)


class WideResNet(nn.Module):
    def __init__(self, depth: int = 28, width: int = 10, num_classes: int = 100, in_channels: int = 3,
                 dropout: float = 0.0, image_size: int = 32):
        super().__init__()
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ValueError(f"WideResNet depth must be 6 n + 4 with n >= 1 (e.g. 16, 28), got {depth}")
        positive_int("width", width)
        n = (depth - 4) // 6
        widths = (16, 16 * width, 32 * width, 64 * width)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=True)
        blocks, inplanes = [], widths[0]
        for stage, planes in enumerate(widths[1:]):
            for i in range(n):
                blocks.append(_WideBasic(inplanes, planes, 2 if stage > 0 and i == 0 else 1, dropout))
                inplanes = planes
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(inplanes)
        self.pool = nn.AvgPool2d(image_size // 4)
        self.fc = nn.Linear(inplanes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(self.conv1(x))
        out = self.pool(F.relu(self.bn(out)))
        return self.fc(out.flatten(1))


# --- VGG-16 with BatchNorm -------------------------------------------------------------------

_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG16BN(nn.Module):
    def __init__(self, num_classes: int = 100, in_channels: int = 3, width: float = 1.0, image_size: int = 32):
        super().__init__()
        if image_size % 32 != 0:
            raise ValueError(f"VGG-16 pools five times: image_size must be a multiple of 32, got {image_size}")
        layers: list[nn.Module] = []
        channels = in_channels
        for v in _VGG16:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                out = max(1, round(v * width))
                layers += [nn.Conv2d(channels, out, 3, padding=1, bias=True), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
                channels = out
        self.features = nn.Sequential(*layers)
        hidden = max(1, round(512 * width))
        flat = channels * (image_size // 32) ** 2
        self.classifier = nn.Sequential(
            nn.Dropout(), nn.Linear(flat, hidden), nn.ReLU(True),
            nn.Dropout(), nn.Linear(hidden, hidden), nn.ReLU(True),
            nn.Linear(hidden, num_classes),
        )
        _he_conv_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


# --- the factory -----------------------------------------------------------------------------


def build(name: str, num_classes: int | None = None, in_channels: int | None = None, **variant: Any) -> nn.Module:
    """The paper's model ``name`` (defaults: its dataset's classes and channels) or a variant.

    ``variant`` keys: logreg/mlp: ``in_features`` (784), mlp: ``hidden``; allcnnc/vgg16bn:
    ``width`` (1.0), ``image_size`` (32); preresnet164: ``depth`` (164), ``image_size``;
    wrn28x10: ``depth`` (28), ``width`` (10), ``dropout`` (0), ``image_size``.
    """
    if name not in NAMES:
        raise ValueError(f"unknown model {name!r}; models are: {', '.join(NAMES)}")
    mnist_like = name in ("logreg", "mlp")
    num_classes = positive_int("num_classes", num_classes if num_classes is not None else (10 if mnist_like else 100))
    allowed = {
        "logreg": {"in_features"},
        "mlp": {"in_features", "hidden"},
        "allcnnc": {"width", "image_size"},
        "preresnet164": {"depth", "image_size"},
        "wrn28x10": {"depth", "width", "dropout", "image_size"},
        "vgg16bn": {"width", "image_size"},
    }[name]
    unknown = sorted(set(variant) - allowed)
    if unknown:
        raise ValueError(f"model {name!r} has no options {unknown}; its options are {sorted(allowed)}")
    if mnist_like:
        if in_channels is not None:
            raise ValueError(f"{name} takes in_features (flattened inputs), not in_channels")
        return logreg(num_classes, **variant) if name == "logreg" else mlp(num_classes, **variant)
    in_channels = positive_int("in_channels", in_channels if in_channels is not None else 3)
    if name == "allcnnc":
        return allcnnc(num_classes, in_channels, **variant)
    if name == "preresnet164":
        return PreResNet(num_classes=num_classes, in_channels=in_channels, **variant)
    if name == "wrn28x10":
        return WideResNet(num_classes=num_classes, in_channels=in_channels, **variant)
    return VGG16BN(num_classes=num_classes, in_channels=in_channels, **variant)


_PAPER_LABELS = {"logreg": "logistic regression", "mlp": "MLP", "allcnnc": "All-CNN-C", "preresnet164": "PreResNet-164",
                 "wrn28x10": "WRN-28-10", "vgg16bn": "VGG-16-BN"}


def model_label(name: str, options: dict | None = None) -> str:
    """A reader's name for ``build(name, **options)``: the variant's own name where it has one
    (``wrn28x10`` with depth 10, width 1: "WRN-10-1"; ``preresnet164`` with depth 11:
    "PreResNet-11"), else the paper's name with the width factor ("VGG-16-BN at width 0.125");
    ``image_size`` and dropout are left out (not part of the architecture's name).

    >>> model_label("wrn28x10", {"depth": 10, "width": 1})
    'WRN-10-1'
    >>> model_label("allcnnc", {"width": 0.25})
    'All-CNN-C at width 0.25'
    """
    if name not in _PAPER_LABELS:
        raise ValueError(f"unknown model {name!r}; models are {sorted(_PAPER_LABELS)}")
    options = dict(options or {})
    if name == "wrn28x10":
        return f"WRN-{options.get('depth', 28)}-{options.get('width', 10):g}"
    if name == "preresnet164":
        return f"PreResNet-{options.get('depth', 164)}"
    label = _PAPER_LABELS[name]
    if "width" in options and options["width"] != 1:
        label += f" at width {options['width']:g}"
    return label

