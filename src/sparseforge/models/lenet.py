"""LeNet-5 sized for 8x8 digits by default, and the wider ``digits_cnn`` .

``lenet5``: conv 5x5 in->6 (pad 2), [BN], ReLU, maxpool 2; conv 5x5 6->16 (pad 2), [BN], ReLU,
maxpool 2; flatten; linear ->120, ReLU, 120->84, ReLU, 84->classes. With ``input_size=8`` the
flattened size is 16*2*2 = 64; with ``input_size=28`` (Fashion-MNIST) it is 16*7*7 = 784.
"""

from __future__ import annotations

from torch import nn

from ..registry import register_model


def _conv_block(conv_layer: type[nn.Module], c_in: int, c_out: int, k: int, pad: int, bn: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [conv_layer(c_in, c_out, k, padding=pad, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(nn.ReLU(inplace=True))
    return layers


class LeNet5(nn.Module):
    """LeNet-5 with padding-2 convolutions so it fits small inputs.

    Args:
        num_classes: number of output logits.
        in_channels: input image channels.
        input_size: input height = width (8 for digits, 28 for MNIST-family).
        bn: insert BatchNorm2d after each convolution (convs then have no bias).
        conv_layer: injectable ``nn.Conv2d``-like class.
        linear_layer: injectable ``nn.Linear``-like class.
    """

    def __init__(
        self,
        *,
        num_classes: int = 10,
        in_channels: int = 1,
        input_size: int = 8,
        bn: bool = False,
        conv_layer: type[nn.Module] = nn.Conv2d,
        linear_layer: type[nn.Module] = nn.Linear,
    ) -> None:
        super().__init__()
        if input_size < 4:
            raise ValueError(f"lenet5 needs input_size >= 4, got {input_size}")
        self.features = nn.Sequential(
            *_conv_block(conv_layer, in_channels, 6, 5, 2, bn),
            nn.MaxPool2d(2),
            *_conv_block(conv_layer, 6, 16, 5, 2, bn),
            nn.MaxPool2d(2),
        )
        side = input_size // 2 // 2
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(
            linear_layer(16 * side * side, 120),
            nn.ReLU(inplace=True),
            linear_layer(120, 84),
            nn.ReLU(inplace=True),
            linear_layer(84, num_classes),
        )

    def forward(self, x):  # (B, C, S, S) -> (B, classes)
        return self.classifier(self.flatten(self.features(x)))


class DigitsCNN(nn.Module):
    """Conv 32, conv 64, maxpool, conv 64 (all 3x3 pad 1 with BN and ReLU), then 1024->128->classes.

    Args:
        num_classes: number of output logits.
        in_channels: input image channels.
        input_size: input height = width (8 for digits).
        conv_layer: injectable ``nn.Conv2d``-like class.
        linear_layer: injectable ``nn.Linear``-like class.
    """

    def __init__(
        self,
        *,
        num_classes: int = 10,
        in_channels: int = 1,
        input_size: int = 8,
        conv_layer: type[nn.Module] = nn.Conv2d,
        linear_layer: type[nn.Module] = nn.Linear,
    ) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_block(conv_layer, in_channels, 32, 3, 1, True),
            *_conv_block(conv_layer, 32, 64, 3, 1, True),
            nn.MaxPool2d(2),
            *_conv_block(conv_layer, 64, 64, 3, 1, True),
        )
        side = input_size // 2
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(
            linear_layer(64 * side * side, 128), nn.ReLU(inplace=True), linear_layer(128, num_classes)
        )

    def forward(self, x):  # (B, C, S, S) -> (B, classes)
        return self.classifier(self.flatten(self.features(x)))


@register_model("lenet5", input_shape=(1, 8, 8))
def lenet5(
    *,
    num_classes: int = 10,
    in_channels: int = 1,
    input_size: int = 8,
    bn: bool = False,
    conv_layer: type[nn.Module] = nn.Conv2d,
    linear_layer: type[nn.Module] = nn.Linear,
) -> LeNet5:
    """LeNet-5 for 8x8 digits by default (``input_size=28`` for Fashion-MNIST)."""
    return LeNet5(
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        bn=bn,
        conv_layer=conv_layer,
        linear_layer=linear_layer,
    )


@register_model("digits_cnn", input_shape=(1, 8, 8))
def digits_cnn(
    *,
    num_classes: int = 10,
    in_channels: int = 1,
    input_size: int = 8,
    conv_layer: type[nn.Module] = nn.Conv2d,
    linear_layer: type[nn.Module] = nn.Linear,
) -> DigitsCNN:
    """A wider digits CNN (32/64 filters) for the structured-sparsity recipes."""
    return DigitsCNN(
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        conv_layer=conv_layer,
        linear_layer=linear_layer,
    )


__all__ = ["LeNet5", "DigitsCNN", "lenet5", "digits_cnn"]
