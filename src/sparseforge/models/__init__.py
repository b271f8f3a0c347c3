"""Model zoo. Each module registers builders with ``@register_model(name, **meta)``.

Builders take keyword-only options and work with none (the tests iterate the registry).
Registry metadata describes example inputs: ``input_shape`` (without batch),
``input_dtype`` (``"float"`` default or ``"long"``), ``vocab_size`` for token models.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..registry import MODELS


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build registered model ``name`` (one-line error listing the choices if unknown)."""
    return MODELS.get(name)(**kwargs)


def example_input(name: str, batch: int = 2, *, generator: torch.Generator | None = None, **overrides: Any) -> torch.Tensor:
    """A random input batch for registered model ``name``, from its registry metadata."""
    meta = {**MODELS.entry(name).meta, **overrides}
    shape = (batch, *meta.get("input_shape", (1, 8, 8)))
    if meta.get("input_dtype", "float") == "long":
        return torch.randint(0, int(meta.get("vocab_size", 2)), shape, generator=generator)
    return torch.randn(shape, generator=generator)


__all__ = ["create_model", "example_input"]
