"""The built-in compressors: magnitude (per weight and per filter), iterative magnitude pruning, pruning at
initialisation with any registered scorer, group lasso and WGSEF.

Papers: Han et al., "Learning both Weights and Connections for Efficient Neural Networks" (2015: magnitude);
Li et al., "Pruning Filters for Efficient ConvNets" (arXiv 1608.08710: filter norms); Frankle & Carbin,
"The Lottery Ticket Hypothesis" (arXiv 1803.03635: iterative magnitude pruning, cumulative sparsity
1 - (1 - rate)^r after round r); SNIP (arXiv 1810.02340), GraSP (arXiv 2002.07376), SynFlow (arXiv 2006.05467);
Yuan & Lin, "Model selection and estimation in regression with grouped variables" (2006: group lasso);
Refael, Arbel & Huleihel, arXiv 2212.12921 (WGSEF, the k-level envelope).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..engine import Callback, FitState
from ..errors import UserError
from ..pruning.prune import Masks, n_keep_for, prune_global, topk_masks
from .base import Compressor, register_compressor


@register_compressor("magnitude", structure="weights", description="train dense, keep the largest |w| (global)")
@register_compressor("magnitude_filter", structure="filter", description="train dense, keep the largest-norm filters per layer")
class Magnitude(Compressor):
    """Dense training, then the largest |w| (or the largest-L2-norm filters per layer) are kept."""

    dense_training = True


@dataclass(frozen=True)
class IMPOptions:
    """``rounds``: prune rounds spread evenly over ``epochs`` (the training length the caller offers)."""

    rounds: int = 3
    epochs: int | None = None


class _IMPCallback(Callback):
    def __init__(self, owner: IterativeMagnitude, model: nn.Module) -> None:
        self.owner, self.model = owner, model
        self.masks: Masks | None = None
        self.maskset: Any = None
        self.done = 0

    def _prune(self, state: FitState, sparsity: float) -> None:
        from ..masks import attach

        scores = {n: p.detach().abs() for n, p in self.owner.weights(self.model).items()}
        self.masks = topk_masks(scores, sparsity, masks=self.masks)
        if self.maskset is not None:
            self.maskset.detach()
        self.maskset = attach(self.model, self.masks, state.optimizer)

    def on_fit_start(self, state: FitState) -> None:
        if self.masks is not None and self.maskset is None:  # resumed after a round: keep pruned weights at zero
            from ..masks import attach

            self.maskset = attach(self.model, self.masks, state.optimizer)

    def on_epoch_end(self, state: FitState) -> None:
        o = self.owner
        epochs = o.options.epochs
        if epochs is None:
            raise UserError("iterative magnitude pruning needs epochs=<training epochs> to spread its rounds")
        r = o.options.rounds
        due = [round(epochs * j / (r + 1)) for j in range(1, r + 1)]  # r rounds, the last one before the end
        while self.done < r and state.epoch >= due[self.done]:
            self.done += 1
            self._prune(state, o.round_sparsity(self.done))

    def on_fit_end(self, state: FitState) -> None:
        if self.maskset is not None:
            self.maskset.bake()

    def state_dict(self) -> dict[str, Any]:
        return {"masks": self.masks, "done": self.done}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.masks, self.done = sd["masks"], sd["done"]


@register_compressor("imp", structure="weights", description="iterative magnitude pruning during training (rounds)")
class IterativeMagnitude(Compressor):
    """Magnitude pruning in ``rounds`` steps during training, each to 1 - (1 - rate)^r, pruned weights never revived."""

    Options = IMPOptions

    def round_sparsity(self, r: int) -> float:
        rate = 1.0 - (1.0 - self.level) ** (1.0 / self.options.rounds)
        return self.level if r >= self.options.rounds else 1.0 - (1.0 - rate) ** r

    def callbacks(self, model: nn.Module) -> list[Any]:
        self._cb = _IMPCallback(self, model)
        return [self._cb]

    def importance(self, model: nn.Module, *, batch: Any = None) -> dict[str, torch.Tensor]:
        return {n: p.detach().abs() for n, p in self.weights(model).items()}


@dataclass(frozen=True)
class PruneAtInitOptions:
    """Options offered to the scorer (each takes the ones it defines): ``seed``, ``temperature``, ``rounds``."""

    seed: int = 0
    temperature: float = 200.0
    rounds: int | None = None


class PruneAtInit(Compressor):
    """Masks chosen at initialisation by a registered scorer (global, exact), kept through training."""

    Options = PruneAtInitOptions
    scorer: str = "snip"

    def prepare(self, model: nn.Module, *, batch: Any = None) -> nn.Module:
        self.resolve(model)
        o = self.options
        offered = {"seed": o.seed, "temperature": o.temperature}
        if o.rounds is not None:
            offered["rounds"] = o.rounds
        self._masks = prune_global(model, self.scorer, self.level, batch=batch, targets=self.modules, options=offered)
        return model

    def training_masks(self, model: nn.Module) -> Masks | None:
        return self._masks

    def importance(self, model: nn.Module, *, batch: Any = None) -> dict[str, torch.Tensor]:
        # the mask chosen at init is the method's answer: kept weights rank above pruned ones
        return {n: self._masks[n].to(torch.float64) for n in self.weights(model)}


@dataclass(frozen=True)
class ProxOptions:
    """``strength`` λ (None: 0.5 / ``lr``, the exact k-level WGSEF default, a prox step γ = lr·λ = 0.5; group lasso
    1.0); the prox weight ramps from 0 over ``ramp_frac`` of ``total_steps`` after ``warmup_frac``."""

    strength: float | None = None
    lr: float | None = None
    total_steps: int | None = None
    ramp_frac: float = 0.3
    warmup_frac: float = 0.2
    exact: bool = True


class _ProxCompressor(Compressor):
    Options = ProxOptions
    prox: str = "group_lasso"
    regularized = True

    def _prox_map(self, model: nn.Module) -> Any:
        from ..optim import build_prox_map

        if not getattr(self, "_map", None) or self._map.model is not model:
            extra = {"per_layer_k": self._keep_counts(model), "exact": self.options.exact} if self.prox == "wgsef" else {}
            self._map = build_prox_map(model, self.prox, weight=self.strength(), targets=self.modules,
                                       grouping=self.structure, include_coupled=self.structure in ("filter", "row"),
                                       **extra)
        return self._map

    def _keep_counts(self, model: nn.Module) -> dict[str, int]:
        """k per layer: the integer count of groups the final masks keep (:func:`group_masks` rounds the same way),
        so the regularizer drives each layer to exactly the structure the projection keeps."""
        from ..groups import n_groups

        return {n: max(1, n_keep_for(n_groups(model.get_submodule(n).weight.shape, self.structure), self.level))
                for n in (self.modules or self.resolve(model))}

    def strength(self) -> float:
        o = self.options
        if o.strength is not None:
            return float(o.strength)
        if self.prox == "wgsef" and o.exact:
            if not o.lr:
                raise UserError("WGSEF's default strength is 0.5 / lr: offer lr=<learning rate> (or strength=...)")
            return 0.5 / o.lr
        return 1.0

    def param_groups(self, model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
        from ..optim import weight_decay_groups

        return weight_decay_groups(model, self._prox_map(model), weight_decay)

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer, model: nn.Module) -> torch.optim.Optimizer:
        from ..optim import ProximalOptimizer, linear_ramp

        o = self.options
        sched = linear_ramp(o.total_steps, o.ramp_frac, o.warmup_frac) if o.total_steps else None
        return ProximalOptimizer(optimizer, self._prox_map(model), weight_schedule=sched)

    def group_importance(self, model: nn.Module, *, batch: Any = None) -> dict[str, torch.Tensor]:
        """The lifted group norms the regularizer acts on (bias and BN entries included)."""
        from ..prox.base import lifted_sq_norms

        pm = self._prox_map(model)
        return {n: lifted_sq_norms(p.detach(), self.structure, getattr(op, "coupled", ())).sqrt()
                for (n, op), p in zip(pm.items(), pm.params())}


@register_compressor("group_lasso_filter", structure="filter", description="group lasso on filters (prox SGD)")
class GroupLassoCompressor(_ProxCompressor):
    """Group lasso λ Σ_g ||θ_g|| by proximal gradient (block soft-thresholding), filter groups."""

    prox = "group_lasso"
    strength_option = "strength"


@register_compressor("wgsef_filter", structure="filter", description="WGSEF k-level envelope on filters (prox SGD)")
@register_compressor("wgsef_channel", structure="channel", description="WGSEF k-level envelope on input channels")
class WGSEFCompressor(_ProxCompressor):
    """WGSEF with k = (1 - level) of each layer's groups (the exact k-level variant by default)."""

    prox = "wgsef"


__all__ = ["GroupLassoCompressor", "IterativeMagnitude", "Magnitude", "PruneAtInit", "WGSEFCompressor"]
