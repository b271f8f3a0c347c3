"""Turbo-VBI as a compressor: structured Bayesian compression for the ``compare`` leaderboard.

Paper: Xia, Tsang & Lau, "Structured Bayesian Compression for Deep Neural Networks Based on the Turbo-VBI
Approach", arXiv:2302.10483. The compressor swaps its targets for Bayesian layers at :meth:`prepare`, adds the
(β / N) KL term to the loss, runs the turbo rounds on the outer schedule during training, and at the end ranks
weights (or groups) by their support posteriors π̃ to reach the level exactly; its natural sparsity is what the
posterior rule (π̃ >= ½) prunes on its own. See :mod:`sparseforge.bayes`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import UserError
from .base import Compressed, Compressor, register_compressor


@dataclass(frozen=True)
class TurboVBIOptions:
    """``n_data``: the training-set size N of the KL scaling (offered by the caller); ``epochs``: the training
    budget, split into ``warm_epochs`` (no KL) then rounds of ``epochs_per_round``; ``kl_weight`` β (0.03:
    β = 1 prunes every weight of a digits MLP); ``coupling`` ``mrf`` or ``iid``."""

    n_data: int | None = None
    epochs: int | None = None
    epochs_per_round: int = 2
    warm_epochs: int = 0
    kl_weight: float = 0.03
    coupling: str = "mrf"


@register_compressor("turbo_vbi", structure="weights", description="Turbo-VBI: hierarchical prior with an MRF support")
@register_compressor("turbo_vbi_filter", structure="filter",
                     description="Turbo-VBI, neurons/filters ranked by their mean support posterior")
class TurboVBICompressor(Compressor):
    """Turbo-VBI with the 2-D MRF support prior; the final top-k is on the support posteriors."""

    Options = TurboVBIOptions
    regularized = True
    strength_option = "kl_weight"

    def prepare(self, model: nn.Module, *, batch: Any = None) -> nn.Module:
        from ..bayes import TurboVBI

        self.resolve(model)
        o = self.options
        if o.n_data is None or o.epochs is None:
            raise UserError("the turbo_vbi compressor needs n_data=<training-set size> and epochs=<training epochs>")
        self.tv = TurboVBI(model, targets=self.modules, n_data=o.n_data, kl_weight=o.kl_weight, coupling=o.coupling)
        return model

    def penalty_fn(self):
        return lambda m: self.tv.penalty()

    def callbacks(self, model: nn.Module) -> list[Any]:
        o = self.options
        rounds = max(1, (int(o.epochs) - o.warm_epochs) // max(1, o.epochs_per_round))
        return [self.tv.callback(rounds=rounds, epochs_per_round=o.epochs_per_round, warm_epochs=o.warm_epochs)]

    def final_model(self, model: nn.Module) -> nn.Module:
        self._natural = self.tv.natural_sparsity()
        return self.tv.bake()

    def finish(self, model: nn.Module, *, batch: Any = None) -> Compressed:
        structure = "element" if self.structure == "weights" else self.structure
        masks = self.tv.masks(self.level, structure=structure, scope="global" if structure == "element" else "layerwise")
        plain = self.final_model(model)
        natural = self._natural
        if self.structured:  # the natural group sparsity: groups the posterior rule empties entirely
            from ..groups import zero_groups

            nat = self.tv.natural_masks()
            total = sum(int(zero_groups(m.to(torch.float32), self.structure).numel()) for m in nat.values())
            natural = sum(int(zero_groups(m.to(torch.float32), self.structure).sum()) for m in nat.values()) / max(total, 1)
        return Compressed(plain, masks, natural, self.level, self.structure,
                          {"kl_weight": self.options.kl_weight, "coupling": self.options.coupling})


__all__ = ["TurboVBICompressor"]
