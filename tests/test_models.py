"""Model zoo: every builder works with defaults, options change what they should."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparseforge.models import create_model, example_input
from sparseforge.registry import MODELS

OURS = (
    "mlp",
    "digits_mlp",
    "lenet5",
    "digits_cnn",
    "vgg11",
    "vgg16",
    "resnet20",
    "resnet56",
    "resnet18",
    "mobilenet_v1",
)


def _n(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name", OURS)
def test_builds_with_defaults_and_runs_on_example_input(name: str) -> None:
    assert name in MODELS
    model = create_model(name).eval()
    x = example_input(name, batch=3)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (3, 10) and torch.isfinite(y).all()


def test_lenet5_layout_for_digits_and_fashion_mnist() -> None:
    m = create_model("lenet5")
    convs = [c for c in m.modules() if isinstance(c, nn.Conv2d)]
    lins = [c for c in m.modules() if isinstance(c, nn.Linear)]
    assert [tuple(c.weight.shape) for c in convs] == [(6, 1, 5, 5), (16, 6, 5, 5)]
    assert [tuple(c.weight.shape) for c in lins] == [(120, 64), (84, 120), (10, 84)]
    assert not any(isinstance(c, nn.BatchNorm2d) for c in m.modules())
    big = create_model("lenet5", input_size=28, bn=True)
    assert [c for c in big.modules() if isinstance(c, nn.Linear)][0].in_features == 16 * 7 * 7
    assert sum(isinstance(c, nn.BatchNorm2d) for c in big.modules()) == 2
    assert big(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_digits_cnn_and_mlp_sizes() -> None:
    cnn = create_model("digits_cnn")
    assert [c.out_channels for c in cnn.modules() if isinstance(c, nn.Conv2d)] == [32, 64, 64]
    assert [c.in_features for c in cnn.modules() if isinstance(c, nn.Linear)] == [1024, 128]
    mlp = create_model("digits_mlp")
    assert [tuple(c.weight.shape) for c in mlp.modules() if isinstance(c, nn.Linear)] == [
        (256, 64),
        (128, 256),
        (10, 128),
    ]


def test_width_multiplier_scales_channels() -> None:
    full, half = create_model("vgg16"), create_model("vgg16", width=0.5)
    assert [c.out_channels for c in half.modules() if isinstance(c, nn.Conv2d)][-1] == 256
    assert _n(half) < _n(full) / 3
    assert create_model("mobilenet_v1", width=0.5).fc.in_features == 512
    assert create_model("resnet20", width=2).fc.in_features == 128


def test_resnet_depths_and_projection_shortcuts() -> None:
    for name, n3x3, n1x1 in (("resnet20", 19, 2), ("resnet56", 55, 2), ("resnet18", 17, 3)):
        convs = [c for c in create_model(name).modules() if isinstance(c, nn.Conv2d)]
        assert sum(c.kernel_size == (3, 3) for c in convs) == n3x3
        assert sum(c.kernel_size == (1, 1) for c in convs) == n1x1  # option-B projection shortcuts


def test_mobilenet_uses_depthwise_convs() -> None:
    dws = [c for c in create_model("mobilenet_v1").modules() if isinstance(c, nn.Conv2d) and c.groups > 1]
    assert len(dws) == 13 and all(c.groups == c.in_channels == c.out_channels for c in dws)


class TaggedLinear(nn.Linear):
    pass


class TaggedConv(nn.Conv2d):
    pass


@pytest.mark.parametrize("name", ["lenet5", "digits_cnn", "vgg11", "resnet20", "mobilenet_v1"])
def test_layers_are_injectable(name: str) -> None:
    m = create_model(name, conv_layer=TaggedConv, linear_layer=TaggedLinear)
    convs = [c for c in m.modules() if isinstance(c, nn.Conv2d)]
    lins = [c for c in m.modules() if isinstance(c, nn.Linear)]
    assert convs and all(isinstance(c, TaggedConv) for c in convs)
    assert lins and all(isinstance(c, TaggedLinear) for c in lins)
    assert all(
        isinstance(c, TaggedLinear)
        for c in create_model("mlp", linear_layer=TaggedLinear).modules()
        if isinstance(c, nn.Linear)
    )


def test_bad_options_raise() -> None:
    with pytest.raises(ValueError):
        create_model("vgg11", input_size=20)
    with pytest.raises(ValueError):
        create_model("mlp", sizes=(4,))
