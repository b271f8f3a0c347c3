"""Memory accounting for spectral methods (Zhao et al., arXiv:2405.15481, spec §2.5).

Per layer (m = out, n = in, k = min(m, n), r = rank):
    SST      trainable = r(m + n) + k (+ bias), stored = k(m + n) + k (+ bias)
    LoRA     trainable = r(m + n) (+ bias),     stored = mn + r(m + n) (+ bias)
    GaLore   trainable = mn (+ bias),           Adam state = 2 * (m r if m >= n else r n)
    full     trainable = mn (+ bias),           Adam state = 2 * mn
Gradient bytes = trainable elements x element size (gradients exist for trainable tensors only).
Optimizer-state bytes are *measured* from ``optimizer.state`` when an optimizer is given
(every tensor, step counters and GaLore projectors included).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .galore import GaLoreLinear
from .lora import LoRALinear
from .sst import SpectralLinear

LAYER_TYPES = (SpectralLinear, LoRALinear, GaLoreLinear, nn.Linear)


def _state_bytes(optimizer: torch.optim.Optimizer | None, params: list[nn.Parameter]) -> int:
    if optimizer is None:
        return 0
    total = 0
    for p in params:
        for v in optimizer.state.get(p, {}).values():
            if isinstance(v, torch.Tensor):
                total += v.numel() * v.element_size()
    return total


def layer_memory(module: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict[str, int]:
    """Trainable params, stored params, gradient bytes and optimizer-state bytes of one module (own params)."""
    params = list(module.parameters(recurse=False))
    train = [p for p in params if p.requires_grad]
    buffers = list(module.buffers(recurse=False))
    stored = sum(p.numel() for p in params) + sum(b.numel() for b in buffers if b.is_floating_point())
    return {
        "trainable_params": sum(p.numel() for p in train),
        "stored_params": stored,
        "grad_bytes": sum(p.numel() * p.element_size() for p in train),
        "optimizer_state_bytes": _state_bytes(optimizer, train),
    }


def memory_report(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict[str, Any]:
    """Per linear-type layer accounting plus model totals (``layers`` and ``total`` keys)."""
    layers = {n: {"type": type(m).__name__, **layer_memory(m, optimizer)}
              for n, m in model.named_modules() if isinstance(m, LAYER_TYPES)}
    train = [p for p in model.parameters() if p.requires_grad]
    total = {
        "trainable_params": sum(p.numel() for p in train),
        "params": sum(p.numel() for p in model.parameters()),
        "grad_bytes": sum(p.numel() * p.element_size() for p in train),
        "optimizer_state_bytes": _state_bytes(optimizer, train),
    }
    return {"layers": layers, "total": total}


def analytic_trainable(m: int, n: int, r: int, method: str, *, bias: bool = True) -> int:
    """Trainable element count of one m x n layer under ``method`` (spec §2.5)."""
    k = min(m, n)
    b = m if bias else 0
    if method == "sst":
        return r * (m + n) + k + b
    if method in ("lora", "relora", "relora_star"):
        return r * (m + n) + b
    return m * n + b


__all__ = ["analytic_trainable", "layer_memory", "memory_report"]
