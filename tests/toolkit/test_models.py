"""The paper's architectures: exact parameter counts, shapes, padding and initialisations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from flatbook.models import PAPER_PARAMETER_COUNTS, TFSameConv2d, build, count_parameters


@pytest.mark.parametrize("name, classes", sorted(PAPER_PARAMETER_COUNTS), ids=lambda v: str(v))
def test_paper_parameter_counts(name, classes):
    torch.manual_seed(0)
    assert count_parameters(build(name, num_classes=classes)) == PAPER_PARAMETER_COUNTS[(name, classes)]


def test_mlp_prose_variant_count():
    # the paper's prose ("one hidden layer of 100 units") would be 79,510 parameters
    assert count_parameters(build("mlp", hidden=[100])) == 79_510


@pytest.mark.parametrize("name, kwargs, shape", [
    ("logreg", {}, (4, 1, 28, 28)),
    ("mlp", {"hidden": [32]}, (4, 1, 28, 28)),
    ("allcnnc", {"width": 0.25, "in_channels": 1, "num_classes": 10}, (4, 1, 32, 32)),
    ("preresnet164", {"depth": 20, "in_channels": 1, "num_classes": 10}, (4, 1, 32, 32)),
    ("wrn28x10", {"depth": 10, "width": 1, "num_classes": 10}, (4, 3, 32, 32)),
    ("vgg16bn", {"width": 0.125, "num_classes": 10}, (4, 3, 32, 32)),
])
def test_variants_run_forward_and_backward(name, kwargs, shape):
    torch.manual_seed(0)
    model = build(name, **kwargs)
    out = model(torch.randn(*shape))
    assert out.shape == (shape[0], kwargs.get("num_classes", 10 if name in ("logreg", "mlp") else 100))
    out.logsumexp(1).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_tf_same_padding_is_asymmetric_for_stride_two():
    torch.manual_seed(0)
    conv = TFSameConv2d(2, 3, 3, stride=2)
    x = torch.randn(1, 2, 32, 32)
    expected = F.conv2d(F.pad(x, (0, 1, 0, 1)), conv.weight, conv.bias, stride=2)  # TF: extra pixel bottom/right
    assert torch.allclose(conv(x), expected)
    assert conv(x).shape[-2:] == (16, 16)
    conv1 = TFSameConv2d(2, 3, 3, stride=1)
    assert torch.allclose(conv1(x), F.conv2d(x, conv1.weight, conv1.bias, padding=1))


def test_allcnnc_structure_and_init():
    torch.manual_seed(0)
    model = build("allcnnc")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs] == [
        (3, 96, 3, 1), (96, 96, 3, 1), (96, 96, 3, 2), (96, 192, 3, 1), (192, 192, 3, 1), (192, 192, 3, 2),
        (192, 192, 3, 1), (192, 192, 1, 1), (192, 100, 1, 1)]
    assert all(torch.all(c.bias == 0.1) for c in convs)
    w = convs[4].weight  # Xavier normal: std = sqrt(2 / (fan_in + fan_out))
    assert w.std().item() == pytest.approx(math.sqrt(2 / (192 * 9 + 192 * 9)), rel=0.05)
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.2, 0.5, 0.5]
    assert isinstance(list(model)[-3], nn.ReLU)  # ReLU after the last conv too


@pytest.mark.parametrize("size", [9, 10, 11, 12])
def test_allcnnc_smallest_images(size):
    # two stride-2 "same" convolutions (ceil halving) then a valid 3x3: ceil(ceil(s/2)/2) - 2 >= 1
    model = build("allcnnc", width=0.05, num_classes=3, image_size=size).eval()
    assert model(torch.zeros(2, 3, size, size)).shape == (2, 3)


def test_allcnnc_refuses_images_below_9_pixels():
    with pytest.raises(ValueError, match=r"image_size 8 is too small for All-CNN-C \(needs >= 9"):
        build("allcnnc", image_size=8)


def test_preresnet_and_vgg_init_and_shortcuts():
    torch.manual_seed(0)
    model = build("preresnet164", depth=20)
    conv = model.blocks[0].conv2
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (9 * conv.out_channels)), rel=0.1)
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    firsts = [b for b in model.blocks if b.downsample is not None]
    assert len(firsts) == 3 and all(not any(isinstance(m, nn.BatchNorm2d) for m in b.downsample.modules()) for b in firsts)
    assert [b.conv2.stride[0] for b in firsts] == [1, 2, 2]
    vgg = build("vgg16bn", num_classes=10)
    assert all(torch.all(m.bias == 0) for m in vgg.features if isinstance(m, nn.Conv2d))
    assert sum(isinstance(m, nn.Conv2d) for m in vgg.features) == 13


def test_wrn_structure():
    model = build("wrn28x10", depth=16, width=4)
    blocks = list(model.blocks)
    assert len(blocks) == 6 and all(b.conv1.bias is not None and b.conv2.bias is not None for b in blocks)
    assert [b.conv2.stride[0] for b in blocks] == [1, 1, 2, 1, 2, 1]  # stride in the SECOND conv
    assert blocks[0].shortcut is not None and blocks[0].shortcut.bias is not None  # 16 -> 64 in stage 1
    assert blocks[1].shortcut is None


@pytest.mark.parametrize("call, message", [
    (lambda: build("resnet"), "unknown model 'resnet'"),
    (lambda: build("mlp", depth=3), "has no options ['depth']"),
    (lambda: build("preresnet164", depth=30), "depth must be 9 n + 2"),
    (lambda: build("wrn28x10", depth=27), "depth must be 6 n + 4"),
    (lambda: build("vgg16bn", image_size=28), "multiple of 32"),
    (lambda: build("logreg", num_classes=0), "num_classes must be an integer >= 1"),
    (lambda: build("mlp", hidden=[]), "hidden must be a non-empty list"),
    (lambda: build("logreg", in_channels=3), "takes in_features"),
])
def test_bad_options(call, message):
    with pytest.raises(ValueError) as info:
        call()
    assert message in str(info.value)
