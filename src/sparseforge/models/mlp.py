"""Multi-layer perceptrons: a generic ``mlp`` and the 64-256-128-10 ``digits_mlp``.

The input is flattened, so any input shape works as long as ``sizes[0]`` equals the number of
features per example.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..registry import register_model


class MLP(nn.Module):
    """Flatten, then ``Linear -> activation`` for every hidden size, then a linear head.

    Args:
        sizes: ``(in_features, hidden..., out_features)``; at least two entries.
        linear_layer: layer class with ``nn.Linear``'s ``(in, out, bias=...)`` signature.
        activation: activation module class, instantiated once per hidden layer.
        dropout: dropout probability after each hidden activation (0 disables it).
        bias: whether the linear layers have biases.
    """

    def __init__(
        self,
        sizes: Sequence[int] = (64, 256, 128, 10),
        *,
        linear_layer: type[nn.Module] = nn.Linear,
        activation: type[nn.Module] = nn.ReLU,
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        sizes = tuple(int(s) for s in sizes)
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"mlp sizes must have >= 2 positive entries, got {sizes}")
        layers: list[nn.Module] = [nn.Flatten()]
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(linear_layer(n_in, n_out, bias=bias))
            if i < len(sizes) - 2:
                layers.append(activation())
                if dropout > 0:
                    layers.append(nn.Dropout(dropout))
        self.net = nn.Sequential(*layers)
        self.sizes = sizes

    def forward(self, x):  # (B, ...) -> (B, sizes[-1])
        return self.net(x)


@register_model("mlp", input_shape=(64,))
def mlp(
    *,
    sizes: Sequence[int] = (64, 256, 128, 10),
    linear_layer: type[nn.Module] = nn.Linear,
    activation: type[nn.Module] = nn.ReLU,
    dropout: float = 0.0,
    bias: bool = True,
) -> MLP:
    """Generic MLP; flattens its input (``sizes[0]`` = features per example)."""
    return MLP(sizes, linear_layer=linear_layer, activation=activation, dropout=dropout, bias=bias)


@register_model("digits_mlp", input_shape=(1, 8, 8))
def digits_mlp(*, num_classes: int = 10, linear_layer: type[nn.Module] = nn.Linear, dropout: float = 0.0) -> MLP:
    """The 64-256-128-10 MLP for 8x8 digits (the WGSEF paper's small digits MLP)."""
    return MLP((64, 256, 128, num_classes), linear_layer=linear_layer, dropout=dropout)


__all__ = ["MLP", "mlp", "digits_mlp"]
