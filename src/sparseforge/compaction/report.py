"""What :func:`sparseforge.compact` removed, per layer, and why the rest stayed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["CompactReport", "LayerReport"]


@dataclass
class LayerReport:
    """One layer that produces channels (a Conv, Linear, Hugging Face ``Conv1D``, embedding).

    Attributes:
        name: the module that owns the layer's weight (``"features.0"``).
        op: the ATen op that applies it (``"conv2d"``, ``"linear"``, ``"addmm"``, ...).
        channels: output channels (filters / neurons) before compaction.
        zeroed: output channels whose weight slice is all zero.
        removed: output channels removed (zeroed ones, and live ones nobody reads).
        kept_alive: zeroed channels that were kept, each with the reason (e.g. a BatchNorm shift
            that feeds a zero-padded convolution, a LayerNorm that normalises over them).
    """

    name: str
    op: str
    channels: int
    zeroed: list[int] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    kept_alive: dict[int, str] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        """A flat row for tables: counts and the most common keep-alive reason."""
        reasons: dict[str, int] = {}
        for r in self.kept_alive.values():
            reasons[r] = reasons.get(r, 0) + 1
        top = max(reasons, key=reasons.__getitem__) if reasons else ""
        return {
            "layer": self.name,
            "op": self.op,
            "channels": self.channels,
            "zeroed": len(self.zeroed),
            "removed": len(self.removed),
            "kept_alive": len(self.kept_alive),
            "reason": top,
        }


@dataclass
class CompactReport:
    """What :func:`sparseforge.compact` removed, in original (uncompacted) indices.

    Attributes:
        removed: output channels / neurons / entries removed per module (Conv/Linear filters,
            BatchNorm entries, depthwise filters, layer-scale entries), e.g. ``{"features.0": [3, 7]}``;
            the format of :func:`sparseforge.masks.save_sparsity`'s ``removed``.
        inputs_removed: input channels / features (columns) removed per consumer layer.
        folded: per consumer, removed inputs whose constant value was folded into its bias.
        heads: attention heads removed per attention module (``scaled_dot_product_attention``).
        layers: per channel-producing layer, channels zeroed, removed and kept alive with the reason.
        unhandled: ATen ops without a handler (their channels were kept), as ``"aten.op in 'module'"``.
        params_before: parameter count of the original model.
        params_after: parameter count of the compacted model.
        dynamic_batch: whether the captured graph accepts any batch size.
    """

    removed: dict[str, list[int]] = field(default_factory=dict)
    inputs_removed: dict[str, list[int]] = field(default_factory=dict)
    folded: dict[str, list[int]] = field(default_factory=dict)
    heads: dict[str, list[int]] = field(default_factory=dict)
    layers: dict[str, LayerReport] = field(default_factory=dict)
    unhandled: list[str] = field(default_factory=list)
    params_before: int = 0
    params_after: int = 0
    dynamic_batch: bool = False

    def rows(self) -> list[dict[str, Any]]:
        """One row per producing layer (see :meth:`LayerReport.row`), for ``run.save_table``."""
        return [lr.row() for lr in self.layers.values()]

    def kept_alive(self) -> dict[str, dict[int, str]]:
        """Zeroed channels that stayed, per layer, with the reason."""
        return {k: v.kept_alive for k, v in self.layers.items() if v.kept_alive}

    def __str__(self) -> str:
        lines = [f"compact: {self.params_before} -> {self.params_after} parameters"]
        for r in self.rows():
            line = f"  {r['layer']} ({r['op']}): {r['channels']} channels, {r['zeroed']} zeroed, {r['removed']} removed"
            if r["kept_alive"]:
                line += f", {r['kept_alive']} kept alive ({r['reason']})"
            lines.append(line)
        for name, h in self.heads.items():
            lines.append(f"  {name}: attention heads {h} removed")
        for u in self.unhandled:
            lines.append(f"  no handler: {u}")
        return "\n".join(lines)
