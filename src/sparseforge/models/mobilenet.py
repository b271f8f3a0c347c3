"""MobileNet v1 for CIFAR-sized inputs.

Howard et al., "MobileNets: Efficient Convolutional Neural Networks for Mobile Vision
Applications", arXiv 1704.04861. Depthwise-separable blocks (3x3 depthwise conv, BN, ReLU,
1x1 pointwise conv, BN, ReLU); the CIFAR variant uses a stride-1 stem and keeps the paper's
channel plan. ``width`` is the paper's width multiplier alpha.
"""

from __future__ import annotations

from torch import nn

from ..registry import register_model

# (out_channels, stride) of each depthwise-separable block.
PLAN: tuple[tuple[int, int], ...] = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)  # fmt: skip


class DepthwiseSeparable(nn.Module):
    """Depthwise 3x3 conv + BN + ReLU, then pointwise 1x1 conv + BN + ReLU.

    Args:
        c_in: input channels (the depthwise conv has ``groups=c_in``).
        c_out: output channels.
        stride: depthwise stride.
        conv_layer: injectable ``nn.Conv2d``-like class.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, *, conv_layer: type[nn.Module] = nn.Conv2d) -> None:
        super().__init__()
        self.dw = conv_layer(c_in, c_in, 3, stride=stride, padding=1, groups=c_in, bias=False)
        self.bn1 = nn.BatchNorm2d(c_in)
        self.relu1 = nn.ReLU(inplace=True)
        self.pw = conv_layer(c_in, c_out, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x):  # (B, c_in, H, W) -> (B, c_out, H/stride, W/stride)
        return self.relu2(self.bn2(self.pw(self.relu1(self.bn1(self.dw(x))))))


class MobileNetV1(nn.Module):
    """CIFAR MobileNet v1.

    Args:
        num_classes: number of logits.
        in_channels: input image channels.
        width: width multiplier alpha.
        conv_layer: injectable ``nn.Conv2d``-like class.
        linear_layer: injectable ``nn.Linear``-like class.
    """

    def __init__(
        self,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        width: float = 1.0,
        conv_layer: type[nn.Module] = nn.Conv2d,
        linear_layer: type[nn.Module] = nn.Linear,
    ) -> None:
        super().__init__()
        if width <= 0:
            raise ValueError(f"mobilenet width must be > 0, got {width}")
        c = max(1, round(32 * width))
        self.stem = nn.Sequential(
            conv_layer(in_channels, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)
        )
        blocks = []
        for c_out, stride in PLAN:
            c_out = max(1, round(c_out * width))
            blocks.append(DepthwiseSeparable(c, c_out, stride, conv_layer=conv_layer))
            c = c_out
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = linear_layer(c, num_classes)

    def forward(self, x):  # (B, C, H, W) -> (B, classes)
        return self.fc(self.flatten(self.pool(self.blocks(self.stem(x)))))


@register_model("mobilenet_v1", input_shape=(3, 32, 32))
def mobilenet_v1(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    width: float = 1.0,
    conv_layer: type[nn.Module] = nn.Conv2d,
    linear_layer: type[nn.Module] = nn.Linear,
) -> MobileNetV1:
    """CIFAR MobileNet v1 with width multiplier ``width``."""
    return MobileNetV1(
        num_classes=num_classes, in_channels=in_channels, width=width, conv_layer=conv_layer, linear_layer=linear_layer
    )


__all__ = ["DepthwiseSeparable", "MobileNetV1", "mobilenet_v1"]
