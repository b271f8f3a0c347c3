"""VGG for CIFAR-sized inputs: 3x3 conv + BatchNorm + ReLU stacks with max-pooling, one linear head.

Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition",
arXiv 1409.1556, in the common CIFAR form (BatchNorm after every conv, a single classifier layer on
the 1x1x512 feature map for 32x32 inputs). ``width`` multiplies every channel count; ``bn=False``
builds the BatchNorm-free variant (convs then have biases), for methods whose per-weight priors a
following BatchNorm would rescale away (e.g. Turbo-VBI).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..registry import register_model

# Channel plans; "M" is a 2x2 max-pool.
CONFIGS: dict[str, tuple[int | str, ...]] = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}


class VGG(nn.Module):
    """CIFAR-style VGG.

    Args:
        plan: channel counts and ``"M"`` (max-pool) entries.
        num_classes: number of logits.
        in_channels: input image channels.
        input_size: input height = width; must be divisible by 2**(number of pools).
        width: channel multiplier (each conv gets ``max(1, round(c * width))`` filters).
        bn: BatchNorm after every conv (default); False drops it and gives the convs a bias.
        conv_layer: injectable ``nn.Conv2d``-like class.
        linear_layer: injectable ``nn.Linear``-like class.
    """

    def __init__(
        self,
        plan: Sequence[int | str],
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        input_size: int = 32,
        width: float = 1.0,
        bn: bool = True,
        conv_layer: type[nn.Module] = nn.Conv2d,
        linear_layer: type[nn.Module] = nn.Linear,
    ) -> None:
        super().__init__()
        n_pool = sum(1 for p in plan if p == "M")
        if width <= 0:
            raise ValueError(f"vgg width must be > 0, got {width}")
        if input_size % (2**n_pool):
            raise ValueError(f"vgg input_size must be divisible by {2**n_pool}, got {input_size}")
        layers: list[nn.Module] = []
        c = in_channels
        for p in plan:
            if p == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            c_out = max(1, round(int(p) * width))
            if bn:
                layers += [conv_layer(c, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            else:
                layers += [conv_layer(c, c_out, 3, padding=1, bias=True), nn.ReLU(inplace=True)]
            c = c_out
        self.features = nn.Sequential(*layers)
        side = input_size // (2**n_pool)
        self.flatten = nn.Flatten()
        self.classifier = linear_layer(c * side * side, num_classes)

    def forward(self, x):  # (B, C, S, S) -> (B, classes)
        return self.classifier(self.flatten(self.features(x)))


def _builder(name: str):
    def build(
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        input_size: int = 32,
        width: float = 1.0,
        bn: bool = True,
        conv_layer: type[nn.Module] = nn.Conv2d,
        linear_layer: type[nn.Module] = nn.Linear,
    ) -> VGG:
        return VGG(
            CONFIGS[name],
            num_classes=num_classes,
            in_channels=in_channels,
            input_size=input_size,
            width=width,
            bn=bn,
            conv_layer=conv_layer,
            linear_layer=linear_layer,
        )

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"CIFAR-style {name.upper()} with BatchNorm (``bn=False``: without) and a ``width`` multiplier."
    return build


vgg11 = register_model("vgg11", input_shape=(3, 32, 32))(_builder("vgg11"))
vgg16 = register_model("vgg16", input_shape=(3, 32, 32))(_builder("vgg16"))

__all__ = ["CONFIGS", "VGG", "vgg11", "vgg16"]
