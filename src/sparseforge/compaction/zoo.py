"""A zoo of third-party architectures built from small configs, for trying compaction on models you did not write.

Hugging Face ``transformers`` models (``pip install sparseforge[hf]``) are built from small
configs with random weights -- nothing is downloaded -- next to two small models of our own for
patterns ``transformers`` has no tiny config for (DenseNet-style concatenation, EfficientNet-style
squeeze-excite)::

    from sparseforge.compaction import zoo
    model, inputs = zoo.build("convnext")
    zeroed = zoo.zero_channels_(model)            # half of the conv filters / MLP neurons
    small = sparseforge.compact(model, inputs(2))

:func:`randomize_` first gives BatchNorm statistics and biases values as after training, so that
zeroed channels are "dead but biased" (a BatchNorm shift or a bias keeps them constant, not zero).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError

__all__ = ["ZOO", "ZooEntry", "build", "names", "randomize_", "zero_channels_", "TinyDenseNet", "TinySENet"]

# Module-name suffixes of the first layer of a transformer MLP (the neurons we zero).
MLP_IN = ("intermediate.dense", "fc1", "mlp.c_fc", "pwconv1")


class TinyDenseNet(nn.Module):
    """DenseNet-style: BN-ReLU-conv layers whose outputs are concatenated to the running features."""

    def __init__(self, c0: int = 16, growth: int = 8, layers: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c0, 3, padding=1, bias=False)
        self.norms = nn.ModuleList(nn.BatchNorm2d(c0 + i * growth) for i in range(layers))
        self.convs = nn.ModuleList(nn.Conv2d(c0 + i * growth, growth, 3, padding=1, bias=False) for i in range(layers))
        self.norm = nn.BatchNorm2d(c0 + layers * growth)
        self.fc = nn.Linear(c0 + layers * growth, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)  # (B, c0, H, W)
        for bn, conv in zip(self.norms, self.convs):
            h = torch.cat([h, conv(F.relu(bn(h)))], 1)  # (B, c + growth, H, W)
        return self.fc(F.relu(self.norm(h)).mean((2, 3)))  # (B, classes)


class TinySENet(nn.Module):
    """EfficientNet-style MBConv blocks: expand, depthwise, squeeze-excite gate (``mul``), project, residual."""

    def __init__(self, c: int = 16, expand: int = 4, blocks: int = 2, num_classes: int = 10) -> None:
        super().__init__()
        e = c * expand
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.SiLU())
        self.blocks = nn.ModuleList(
            nn.ModuleDict({
                "expand": nn.Conv2d(c, e, 1, bias=False), "bn1": nn.BatchNorm2d(e),
                "dw": nn.Conv2d(e, e, 3, padding=1, groups=e, bias=False), "bn2": nn.BatchNorm2d(e),
                "reduce": nn.Conv2d(e, max(1, c // 4), 1), "gate": nn.Conv2d(max(1, c // 4), e, 1),
                "project": nn.Conv2d(e, c, 1, bias=False), "bn3": nn.BatchNorm2d(c),
            })
            for _ in range(blocks)
        )  # fmt: skip
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for b in self.blocks:
            u = F.silu(b["bn1"](b["expand"](h)))
            u = F.silu(b["bn2"](b["dw"](u)))
            s = torch.sigmoid(b["gate"](F.silu(b["reduce"](u.mean((2, 3), keepdim=True)))))  # (B, e, 1, 1)
            h = h + b["bn3"](b["project"](u * s))
        return self.fc(h.mean((2, 3)))


@dataclass(frozen=True)
class ZooEntry:
    """How to build one zoo model and its inputs."""

    build: Callable[[], nn.Module]
    inputs: Callable[[int, torch.Generator], dict[str, torch.Tensor]]
    kind: str  # "cnn" | "transformer"
    hf: bool = True


def _pixels(size: int) -> Callable[[int, torch.Generator], dict[str, torch.Tensor]]:
    return lambda b, g: {"pixel_values": torch.randn(b, 3, size, size, generator=g)}


def _tokens(vocab: int, length: int, *, mask: bool = False) -> Callable[[int, torch.Generator], dict[str, torch.Tensor]]:
    def make(b: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        out = {"input_ids": torch.randint(0, vocab, (b, length), generator=g)}
        if mask:
            out["attention_mask"] = torch.ones(b, length, dtype=torch.long)
        return out

    return make


def _hf(factory: Callable[[Any], nn.Module]) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        try:
            import transformers
        except ImportError:  # pragma: no cover - the [hf] extra is missing
            raise UserError("the zoo's Hugging Face models need transformers: pip install 'sparseforge[hf]'") from None
        return factory(transformers).eval()

    return build


ZOO: dict[str, ZooEntry] = {
    "resnet_basic": ZooEntry(_hf(lambda T: T.ResNetModel(T.ResNetConfig(
        embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic"))), _pixels(32), "cnn"),
    "resnet_bottleneck": ZooEntry(_hf(lambda T: T.ResNetModel(T.ResNetConfig(
        embedding_size=16, hidden_sizes=[32, 64], depths=[1, 1], layer_type="bottleneck"))), _pixels(32), "cnn"),
    "regnet": ZooEntry(_hf(lambda T: T.RegNetModel(T.RegNetConfig(
        embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], groups_width=8))), _pixels(32), "cnn"),
    "mobilenet_v1": ZooEntry(_hf(lambda T: T.MobileNetV1Model(T.MobileNetV1Config(
        depth_multiplier=0.25, image_size=32))), _pixels(32), "cnn"),
    "mobilenet_v2": ZooEntry(_hf(lambda T: T.MobileNetV2Model(T.MobileNetV2Config(
        depth_multiplier=0.25, image_size=32))), _pixels(32), "cnn"),
    "convnext": ZooEntry(_hf(lambda T: T.ConvNextModel(T.ConvNextConfig(
        hidden_sizes=[16, 32], depths=[1, 1], num_stages=2))), _pixels(32), "cnn"),
    "vit": ZooEntry(_hf(lambda T: T.ViTModel(T.ViTConfig(
        image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, attn_implementation="sdpa"))), _pixels(16), "transformer"),
    "bert": ZooEntry(_hf(lambda T: T.BertModel(T.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=32, attn_implementation="sdpa"))), _tokens(100, 8, mask=True), "transformer"),
    "opt": ZooEntry(_hf(lambda T: T.OPTModel(T.OPTConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64,
        max_position_embeddings=32, word_embed_proj_dim=32, use_cache=False, attn_implementation="sdpa"))),
        _tokens(100, 8), "transformer"),
    "gpt2": ZooEntry(_hf(lambda T: T.GPT2Model(T.GPT2Config(
        vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=32, use_cache=False, bos_token_id=0,
        eos_token_id=0, attn_implementation="sdpa"))), _tokens(100, 8), "transformer"),
    "efficientnet": ZooEntry(_hf(lambda T: T.EfficientNetModel(T.EfficientNetConfig(
        image_size=32, width_coefficient=0.25, depth_coefficient=0.25, hidden_dim=320))), _pixels(32), "cnn"),
    "densenet_cat": ZooEntry(lambda: TinyDenseNet().eval(), lambda b, g: {"x": torch.randn(b, 3, 16, 16, generator=g)},
                             "cnn", hf=False),
    "se_net": ZooEntry(lambda: TinySENet().eval(), lambda b, g: {"x": torch.randn(b, 3, 16, 16, generator=g)},
                       "cnn", hf=False),
}  # fmt: skip


def names(*, hf: bool | None = None) -> list[str]:
    """Zoo model names (``hf=True``: only Hugging Face ones, ``False``: only ours)."""
    return [n for n, e in ZOO.items() if hf is None or e.hf == hf]


def build(name: str, *, seed: int = 0) -> tuple[nn.Module, Callable[[int], dict[str, torch.Tensor]]]:
    """``(model in eval mode, inputs(batch) -> dict of keyword inputs)`` for zoo model ``name``."""
    if name not in ZOO:
        raise UserError(f"unknown zoo model {name!r}; choose one of {', '.join(ZOO)}")
    entry = ZOO[name]
    torch.manual_seed(seed)
    model = entry.build()

    def inputs(batch: int, *, seed: int = 1) -> dict[str, torch.Tensor]:
        return entry.inputs(batch, torch.Generator().manual_seed(seed))

    return model, inputs


def _conv1d_type() -> type | None:
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover
        return None
    return Conv1D


@torch.no_grad()
def randomize_(model: nn.Module, *, seed: int = 0) -> nn.Module:
    """BatchNorm statistics / affine and layer biases as after training (small random values)."""
    g = torch.Generator().manual_seed(seed)
    conv1d = _conv1d_type()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
            if m.affine:
                m.weight.copy_(1 + 0.1 * torch.randn(m.num_features, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.num_features, generator=g))
        elif isinstance(m, (nn.Conv2d, nn.Linear)) or (conv1d is not None and isinstance(m, conv1d)):
            if getattr(m, "bias", None) is not None:
                m.bias.copy_(0.05 * torch.randn(m.bias.shape, generator=g))
    return model


@torch.no_grad()
def zero_channels_(model: nn.Module, *, fraction: float = 0.5, seed: int = 0) -> dict[str, torch.Tensor]:
    """Zero ``fraction`` of the output channels (weights only; biases stay) of every dense conv and MLP input layer.

    Dense ``Conv2d`` (``groups == 1``) filters, and the neurons of each transformer MLP's first layer
    (``intermediate.dense``, ``fc1``, ``mlp.c_fc``, ``pwconv1``; Hugging Face ``Conv1D`` included).

    Returns:
        module name -> sorted indices of the zeroed output channels.
    """
    g = torch.Generator().manual_seed(seed)
    conv1d = _conv1d_type()
    zeroed: dict[str, torch.Tensor] = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and m.groups == 1:
            out_dim = 0
        elif isinstance(m, nn.Linear) and name.endswith(MLP_IN):
            out_dim = 0
        elif conv1d is not None and isinstance(m, conv1d) and name.endswith(MLP_IN):
            out_dim = 1  # Conv1D stores (in, out)
        else:
            continue
        c = m.weight.shape[out_dim]
        idx = torch.randperm(c, generator=g)[: int(round(fraction * c))].sort().values
        m.weight.index_fill_(out_dim, idx, 0.0)
        zeroed[name] = idx
    return zeroed
