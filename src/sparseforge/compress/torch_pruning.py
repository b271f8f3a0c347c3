"""Torch-Pruning's group-norm pruner as a compressor (the optional ``[bench]`` extra), for the leaderboard.

Paper: Fang et al., "DepGraph: Towards Any Structural Pruning" (CVPR 2023, arXiv 2301.12900): a dependency
graph groups coupled channels; ``GroupNormPruner`` trains with a group-norm regularizer on those groups and then
removes the lowest-norm groups physically. Here it gets the same targets (every other layer is ignored), the
same structured level (a uniform per-layer ratio, as our structured compressors) and, in ``compare``, the same
training budget and fine-tune as every method. Its result is an already smaller model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import UserError
from .base import Compressed, Compressor, natural_group_sparsity, register_compressor


def available() -> bool:
    """Whether ``torch_pruning`` is installed."""
    import importlib.util

    return importlib.util.find_spec("torch_pruning") is not None


@dataclass(frozen=True)
class TorchPruningOptions:
    """``reg``: the group-norm regularization weight of Torch-Pruning's pruner (its default 1e-4)."""

    reg: float = 1e-4


class _RegularizingOptimizer(torch.optim.Optimizer):
    """Calls ``pruner.regularize(model)`` (which adds the group-norm gradient) before every base step."""

    def __init__(self, base: torch.optim.Optimizer, pruner: Any, model: nn.Module) -> None:
        self.base, self.pruner, self.net = base, pruner, model
        self.param_groups, self.state, self.defaults = base.param_groups, base.state, base.defaults

    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        self.pruner.regularize(self.net)
        return self.base.step(closure)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        return self.base.state_dict()

    def load_state_dict(self, sd: dict[str, Any]) -> None:  # type: ignore[override]
        self.base.load_state_dict(sd)


@register_compressor("torch_pruning_groupnorm", structure="filter",
                     description="Torch-Pruning's GroupNormPruner (DepGraph): group-norm training, physical pruning")
class TorchPruningGroupNorm(Compressor):
    """Torch-Pruning's group-norm regularized training, then its own physical removal of the weakest groups."""

    Options = TorchPruningOptions
    regularized = True
    physically_pruned = True

    @classmethod
    def available(cls) -> bool:
        return available()

    def prepare(self, model: nn.Module, *, batch: Any = None) -> nn.Module:
        if not available():
            raise UserError("torch_pruning is not installed: pip install 'sparseforge[bench]'")
        import torch_pruning as tp

        if batch is None:
            raise UserError("the torch_pruning_groupnorm compressor needs a batch (its dependency graph traces the model)")
        self.resolve(model)
        keep = set(self.modules)
        ignored = [m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and n not in keep]
        self.example = batch[0][:2]
        self.pruner = tp.pruner.GroupNormPruner(model, self.example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                                pruning_ratio=self.level, ignored_layers=ignored, reg=self.options.reg)
        self._widths = {n: model.get_submodule(n).weight.shape[0] for n in self.modules}
        return model

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer, model: nn.Module) -> torch.optim.Optimizer:
        return _RegularizingOptimizer(optimizer, self.pruner, model)

    def finish(self, model: nn.Module, *, batch: Any = None) -> Compressed:
        model.eval()
        natural = natural_group_sparsity(self.weights(model), self.structure)  # all-zero filters before removal
        self.pruner.step()
        after = {n: model.get_submodule(n).weight.shape[0] for n in self.modules}
        removed = 1.0 - sum(after.values()) / max(sum(self._widths.values()), 1)
        return Compressed(model, {}, natural, self.level, self.structure,
                          {"removed_fraction": removed, "widths_before": self._widths, "widths_after": after})


__all__ = ["TorchPruningGroupNorm", "available"]
