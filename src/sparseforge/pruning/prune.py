"""Masks from scores: exact global / layer-wise top-k, one-shot, iterative (SynFlow) and IMP schedules.

Papers: Frankle & Carbin, "The Lottery Ticket Hypothesis" (arXiv 1803.03635) for iterative magnitude
pruning (IMP, a fixed rate per round, cumulative density (1 - rate)^r); Tanaka et al., "Pruning neural
networks without any data by iteratively conserving synaptic flow" (arXiv 2006.05467) for the
iterative exponential schedule; Minegishi et al., "Grokking Tickets" (arXiv 2310.19470) for the
one-shot global magnitude mask of the grokking ticket.

Equations:
- ``sparsity`` (= pruning rate k) is the fraction of weights REMOVED; density = 1 - k.
- global top-k:  n_keep = round((1 - k) * N) (half up) over all scored tensors concatenated (in the order of
  the scores dict); keep exactly the n_keep largest scores, ties broken by the lowest flat index.
- layer-wise:    n_keep_t = round((1 - k) * N_t) for every tensor t separately.
- iterative:     with n rounds and target density d, round j prunes to density
  d0 * (d / d0)^(j / n) (``schedule="exponential"``, SynFlow) or d0 + (d - d0) j / n (``"linear"``),
  re-scoring the masked network each round. Pruned weights are never revived.
- IMP:           after round r the sparsity is 1 - (1 - rate)^r (:func:`imp_sparsities`).

Masks are ``{param_name: bool tensor}`` with True = kept, always paired by parameter name.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator
from typing import Any, Literal

import torch
from torch import nn

from ..errors import UserError
from ..targeting import Targets
from .scores import LossFn, _names, get_scorer, score_without_side_effects

__all__ = [
    "apply_masks_",
    "density_by_layer",
    "imp_sparsities",
    "mask_sparsity",
    "n_keep_for",
    "prune",
    "prune_global",
    "temporarily_masked",
    "topk_masks",
]

Masks = dict[str, torch.Tensor]
Scope = Literal["global", "layerwise"]


def _check_sparsity(sparsity: float) -> float:
    s = float(sparsity)
    if not 0.0 <= s <= 1.0:
        raise UserError(f"sparsity (fraction of weights removed) must be in [0, 1], got {sparsity}")
    return s


def n_keep_for(n: int, sparsity: float) -> int:
    """round((1 - k) n), half up, tolerant to float error ((1 - 0.9) * 95 = 9.4999... keeps 10)."""
    return min(n, max(0, int(math.floor((1.0 - sparsity) * n + 0.5 + 1e-9))))


def _keep_top(flat: torch.Tensor, n_keep: int) -> torch.Tensor:
    """Bool mask of exactly ``n_keep`` largest entries of a 1-D tensor, ties -> lowest index first.

    O(N): the n_keep-th largest value is the threshold (``kthvalue``); everything above it is kept,
    and of the entries equal to it the lowest-indexed ones fill the remaining slots.
    """
    n = flat.numel()
    if n_keep <= 0:
        return torch.zeros(n, dtype=torch.bool, device=flat.device)
    if n_keep >= n:
        return torch.ones(n, dtype=torch.bool, device=flat.device)
    thr = torch.kthvalue(flat.cpu(), n - n_keep + 1).values.to(flat.device)  # the n_keep-th largest
    above = flat > thr
    need = n_keep - int(above.sum())
    tie = flat == thr
    return above | (tie & (torch.cumsum(tie, 0) <= need))


def topk_masks(scores: dict[str, torch.Tensor], sparsity: float, *, scope: Scope = "global",
               masks: Masks | None = None) -> Masks:
    """Exact top-k masks from scores (True = kept).

    Args:
        scores: ``{name: scores}`` (higher = kept); the concatenation order is the dict order.
        sparsity: fraction of the scored weights to REMOVE (k); ``round((1-k) N)`` are kept.
        scope: ``"global"`` (one threshold over all tensors) or ``"layerwise"`` (k per tensor).
        masks: current masks; weights they prune stay pruned (never revived), so ``sparsity``
            must be at least their sparsity.

    Raises:
        UserError: sparsity out of range, non-finite (NaN) scores, or a sparsity below the current one.
    """
    k = _check_sparsity(sparsity)
    if scope not in ("global", "layerwise"):
        raise UserError(f"scope must be 'global' or 'layerwise', got {scope!r}")
    names = list(scores)
    flat_parts = []
    for n in names:
        s = scores[n].detach().flatten().to(torch.float64)
        if torch.isnan(s).any():
            raise UserError(f"scores of {n!r} contain NaN; check the scorer's input")
        if masks is not None and n in masks:
            s = s.masked_fill(~masks[n].flatten().to(s.device), float("-inf"))  # pruned stay pruned
        flat_parts.append(s)

    def n_alive(i: int) -> int:
        n = names[i]
        return int(masks[n].sum()) if masks is not None and n in masks else flat_parts[i].numel()

    out: Masks = {}
    if scope == "global":
        flat = torch.cat(flat_parts)
        n_keep = n_keep_for(flat.numel(), k)
        alive = sum(n_alive(i) for i in range(len(names)))
        if n_keep > alive:
            raise UserError(f"sparsity {k} keeps {n_keep} weights but only {alive} are still unpruned; "
                            "iterative pruning never revives weights: ask for a sparsity >= the current one")
        keep = _keep_top(flat, n_keep)
        off = 0
        for n, part in zip(names, flat_parts):
            out[n] = keep[off: off + part.numel()].view(scores[n].shape)
            off += part.numel()
    else:
        for i, (n, part) in enumerate(zip(names, flat_parts)):
            n_keep = n_keep_for(part.numel(), k)
            if n_keep > n_alive(i):
                raise UserError(f"layer-wise sparsity {k} would revive pruned weights of {n!r}")
            out[n] = _keep_top(part, n_keep).view(scores[n].shape)
    return out


def prune_global(model: nn.Module | dict[str, torch.Tensor] | None, scores: Any = None,
                 sparsity: float | None = None, *, scope: Scope = "global", masks: Masks | None = None,
                 batch: Any = None, loss_fn: LossFn | None = None, targets: Targets = None,
                 params: dict[str, nn.Parameter] | None = None, rounds: int | None = None,
                 schedule: Literal["exponential", "linear"] = "exponential", options: dict[str, Any] | None = None,
                 **scorer_kwargs: Any) -> Masks:
    """``prune_global(model, scores, sparsity) -> {param_name: bool mask}`` (True = kept).

    Args:
        model: the network (may be None when ``scores`` is a dict). ``prune_global(scores, sparsity)``
            is accepted as a shorthand.
        scores: ``{name: scores}`` from :func:`sparseforge.pruning.scores`, or a scorer name
            (``"synflow"``...), in which case the scorer's own schedule runs (:func:`prune`).
        sparsity: fraction of weights REMOVED (pruning rate k); exactly ``round((1-k) N)`` are kept.
        scope: ``"global"`` or ``"layerwise"``.
        masks: current masks (never revived).
        targets: module names / patterns whose weights are pruned (:func:`sparseforge.select`); with a scores
            dict, only the scores of those weights are kept (default: every scored tensor).
        batch, loss_fn, params, rounds, schedule, options, scorer_kwargs: used only when ``scores`` is a name
            (see :func:`prune`).
    """
    if isinstance(model, dict) and sparsity is None:  # prune_global(scores, sparsity)
        model, scores, sparsity = None, model, scores
    if sparsity is None:
        raise UserError("prune_global needs a sparsity (fraction of weights removed)")
    if isinstance(scores, str) or callable(scores):
        if model is None:
            raise UserError("prune_global with a scorer name needs the model")
        return prune(model, scores, sparsity, batch=batch, loss_fn=loss_fn, targets=targets, params=params,
                     scope=scope, rounds=rounds, schedule=schedule, masks=masks, options=options, **scorer_kwargs)
    if not isinstance(scores, dict):
        raise UserError("scores must be a {param_name: tensor} dict or a scorer name")
    if targets is not None:
        if model is None:
            raise UserError("prune_global with targets needs the model")
        keep = set(_names(model, targets, None))
        scores = {n: s for n, s in scores.items() if n in keep}
        if not scores:
            raise UserError(f"none of the scored weights belongs to targets={targets!r}")
    return topk_masks(scores, sparsity, scope=scope, masks=masks)


@contextlib.contextmanager
def temporarily_masked(model: nn.Module, masks: Masks | None) -> Iterator[nn.Module]:
    """Zero the masked weights for the duration of the block, then restore them exactly."""
    if not masks:
        yield model
        return
    named = dict(model.named_parameters())
    saved = {}
    with torch.no_grad():
        for n, m in masks.items():
            saved[n] = named[n].detach().clone()
            named[n].mul_(m.to(named[n].device, named[n].dtype))
    try:
        yield model
    finally:
        with torch.no_grad():
            for n, v in saved.items():
                named[n].copy_(v)


@torch.no_grad()
def apply_masks_(model: nn.Module, masks: Masks) -> nn.Module:
    """Zero masked weights in place (``torch.where`` so kept weights are bit-identical)."""
    named = dict(model.named_parameters())
    for n, m in masks.items():
        p = named[n]
        p.copy_(torch.where(m.to(p.device), p, torch.zeros((), dtype=p.dtype, device=p.device)))
    return model


def prune(model: nn.Module, method: Any, sparsity: float, *, batch: Any = None, loss_fn: LossFn | None = None,
          targets: Targets = None, params: dict[str, nn.Parameter] | None = None, scope: Scope = "global",
          rounds: int | None = None, schedule: Literal["exponential", "linear"] = "exponential",
          masks: Masks | None = None, options: dict[str, Any] | None = None, **scorer_kwargs: Any) -> Masks:
    """Score and prune ``model`` to ``sparsity`` with ``method``, iteratively when it asks for rounds.

    ``options`` are offered to the scorer, which takes the ones it defines (:meth:`Scorer.options_for`), so a
    caller can pass ``options={"seed": s, "temperature": T, "rounds": R}`` to any scorer; ``scorer_kwargs`` are
    passed as they are. SynFlow runs its ``rounds`` option (100) by default; ``rounds=`` overrides the number of
    rounds of any scorer (1 = one-shot). Each round scores the
    network with the current mask applied (the model itself is left unchanged) and prunes to the
    round's density. The last round hits exactly ``round((1-k) N)`` kept weights.

    Returns:
        ``{param_name: bool mask}`` (True = kept).
    """
    k = _check_sparsity(sparsity)
    sc = get_scorer(method)
    offered = {**(options or {}), **scorer_kwargs}
    n_rounds = int(rounds if rounds is not None else sc.rounds_for(**offered))
    scorer_kwargs = {**sc.options_for(**(options or {})), **scorer_kwargs}
    scorer_kwargs.pop("rounds", None)
    if n_rounds < 1:
        raise UserError(f"rounds must be >= 1, got {rounds}")
    if schedule not in ("exponential", "linear"):
        raise UserError(f"schedule must be 'exponential' or 'linear', got {schedule!r}")
    named = _names(model, targets, params)
    if sc.needs_batch and batch is None:
        raise UserError(f"scorer {method!r} needs a batch: pass batch=(x, y)")
    total = sum(p.numel() for p in named.values())
    d0 = 1.0 if masks is None else sum(int(masks[n].sum()) if n in masks else named[n].numel() for n in named) / total
    d_target = 1.0 - k
    cur = masks
    if n_rounds == 1:
        with temporarily_masked(model, cur):
            s = score_without_side_effects(sc, model, named, batch=batch, loss_fn=loss_fn, **scorer_kwargs)
        return topk_masks(s, k, scope=scope, masks=cur)
    # several rounds: score a private copy whose pruned weights are zeroed in place (monotone)
    work = copy.deepcopy(model)
    wnamed = dict(work.named_parameters())
    wsel = {n: wnamed[n] for n in named}
    for j in range(1, n_rounds + 1):
        if schedule == "exponential":
            d = d0 * (d_target / d0) ** (j / n_rounds) if d0 > 0 else 0.0
        else:
            d = d0 + (d_target - d0) * j / n_rounds
        if cur:
            apply_masks_(work, cur)
        s = sc(work, wsel, batch=batch, loss_fn=loss_fn, **scorer_kwargs)
        cur = topk_masks(s, k if j == n_rounds else 1.0 - d, scope=scope, masks=cur)
    assert cur is not None
    return cur


def imp_sparsities(rate: float, rounds: int) -> list[float]:
    """Cumulative sparsities of iterative magnitude pruning: ``1 - (1 - rate)^r`` for r = 1..rounds."""
    if not 0.0 < rate < 1.0:
        raise UserError(f"IMP rate per round must be in (0, 1), got {rate}")
    return [1.0 - (1.0 - rate) ** r for r in range(1, int(rounds) + 1)]


def mask_sparsity(masks: Masks) -> float:
    """Fraction of masked-out (False) entries over all masks."""
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    return 1.0 - kept / max(total, 1)


def density_by_layer(masks: Masks) -> dict[str, float]:
    """Fraction kept per tensor."""
    return {n: float(m.float().mean()) for n, m in masks.items()}
