"""CIFAR ResNets: ResNet-20/56 (three stages of 16/32/64 channels) and the CIFAR ResNet-18.

He et al., "Deep Residual Learning for Image Recognition", arXiv 1512.03385. Shortcuts are
identity when shapes match and a 1x1 conv + BatchNorm projection otherwise ("option B"), so
every residual addition is between tensors of the same channel indexing, which compaction needs.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..registry import register_model


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus shortcut, then ReLU.

    Args:
        c_in: input channels.
        c_out: output channels.
        stride: stride of the first conv (and of the projection shortcut).
        conv_layer: injectable ``nn.Conv2d``-like class.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1, *, conv_layer: type[nn.Module] = nn.Conv2d) -> None:
        super().__init__()
        self.conv1 = conv_layer(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = conv_layer(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        if stride != 1 or c_in != c_out:
            self.shortcut: nn.Module = nn.Sequential(
                conv_layer(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x):  # (B, c_in, H, W) -> (B, c_out, H/stride, W/stride)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Stem conv3x3, stages of BasicBlocks, global average pool, linear head.

    Args:
        blocks: number of blocks per stage.
        widths: channels per stage (before ``width`` scaling).
        num_classes: number of logits.
        in_channels: input image channels.
        width: channel multiplier.
        conv_layer: injectable ``nn.Conv2d``-like class.
        linear_layer: injectable ``nn.Linear``-like class.
    """

    def __init__(
        self,
        blocks: Sequence[int],
        widths: Sequence[int],
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        width: float = 1.0,
        conv_layer: type[nn.Module] = nn.Conv2d,
        linear_layer: type[nn.Module] = nn.Linear,
    ) -> None:
        super().__init__()
        if width <= 0:
            raise ValueError(f"resnet width must be > 0, got {width}")
        chans = [max(1, round(w * width)) for w in widths]
        self.stem = nn.Sequential(
            conv_layer(in_channels, chans[0], 3, padding=1, bias=False), nn.BatchNorm2d(chans[0]), nn.ReLU(inplace=True)
        )
        stages: list[nn.Module] = []
        c = chans[0]
        for i, (n, c_out) in enumerate(zip(blocks, chans)):
            layer = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                layer.append(BasicBlock(c, c_out, stride, conv_layer=conv_layer))
                c = c_out
            stages.append(nn.Sequential(*layer))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = linear_layer(c, num_classes)

    def forward(self, x):  # (B, C, H, W) -> (B, classes)
        return self.fc(self.flatten(self.pool(self.stages(self.stem(x)))))


def _builder(name: str, blocks, widths):
    def build(
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        width: float = 1.0,
        conv_layer: type[nn.Module] = nn.Conv2d,
        linear_layer: type[nn.Module] = nn.Linear,
    ) -> CifarResNet:
        return CifarResNet(
            blocks,
            widths,
            num_classes=num_classes,
            in_channels=in_channels,
            width=width,
            conv_layer=conv_layer,
            linear_layer=linear_layer,
        )

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"CIFAR {name} (blocks {tuple(blocks)}, widths {tuple(widths)}), option-B projection shortcuts."
    return build


resnet20 = register_model("resnet20", input_shape=(3, 32, 32))(_builder("resnet20", (3, 3, 3), (16, 32, 64)))
resnet56 = register_model("resnet56", input_shape=(3, 32, 32))(_builder("resnet56", (9, 9, 9), (16, 32, 64)))
resnet18 = register_model("resnet18", input_shape=(3, 32, 32))(_builder("resnet18", (2, 2, 2, 2), (64, 128, 256, 512)))

__all__ = ["BasicBlock", "CifarResNet", "resnet20", "resnet56", "resnet18"]
