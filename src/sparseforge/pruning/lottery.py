"""The lottery-ticket procedure (train -> score at a checkpoint -> mask -> rewind -> retrain), as a
procedure over a user training callback, and the norm-matched dense baseline.

Papers: Frankle & Carbin, "The Lottery Ticket Hypothesis: Finding Sparse, Trainable Neural Networks"
(arXiv 1803.03635); Frankle et al., "Linear Mode Connectivity and the Lottery Ticket Hypothesis"
(arXiv 1912.05671) for rewinding to step k; Minegishi, Iwasawa & Matsuo, "Grokking Tickets: Lottery
Tickets Accelerate Grokking" (arXiv 2310.19470) for the grokking ticket and the norm-matched control.

Equations:
- ticket mask:  m = TopK(|theta_t|, round((1 - k) N)) over all prunable tensors (global scope).
  With ``imp_rounds = R > 1`` (IMP) each round prunes a fixed rate = 1 - (1 - k)^(1 / R) of the
  surviving weights, so round r reaches sparsity 1 - (1 - rate)^r and the last round hits k exactly.
- rewind:       theta <- theta_rewind * m (theta_rewind = theta_0, or theta_k for rewinding to step k),
  bit-exact for kept weights; a fresh optimizer is built by the callback.
- norm-matched dense init (the paper's "controlled dense"): r_p = ||theta_0 * m||_p / ||theta_0||_p
  with the norms over all prunable weights concatenated (global, float64), and the dense network
  is trained from r_p * theta_0 without a mask, for p = 1 and p = 2.

The procedure never owns the loop: ``train_fn(model, masks, stage) -> TrainResult`` trains
``model`` (dense when ``masks`` is None), building its own fresh optimizer and attaching the masks
(:func:`sparseforge.masks.attach`), and returns in-memory checkpoints (:class:`SnapshotCallback`
collects them from :func:`sparseforge.engine.fit`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..engine.fit import Callback, FitState
from ..errors import UserError
from ..targeting import Targets
from .prune import Masks, apply_masks_, prune_global
from .scores import prunable_params

__all__ = [
    "LotteryResult",
    "SnapshotCallback",
    "TrainResult",
    "lottery_ticket",
    "norm_matched_init",
    "norm_ratio",
    "rewind",
    "snapshot",
    "ticket_mask",
]

State = dict[str, torch.Tensor]


def snapshot(model: nn.Module) -> State:
    """A detached copy of the model's parameters and buffers (``state_dict`` clone)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@torch.no_grad()
def rewind(model: nn.Module, theta: State, masks: Masks | None = None) -> nn.Module:
    """Load ``theta`` (e.g. theta_0) into ``model`` exactly, then zero the masked weights.

    Kept weights are bit-for-bit equal to ``theta``; the optimizer must be rebuilt afterwards
    (never reuse the dense run's moments).
    """
    sd = model.state_dict()
    for k, v in theta.items():
        if k not in sd:
            raise UserError(f"rewind: {k!r} is not in the model's state_dict")
        sd[k].copy_(v)
    if masks:
        apply_masks_(model, masks)
    return model


def ticket_mask(theta_t: State | nn.Module, sparsity: float, *, names: Iterable[str],
                scope: str = "global", masks: Masks | None = None) -> Masks:
    """Magnitude mask of a checkpoint: keep the round((1-k) N) largest |theta_t| (global or layer-wise).

    Args:
        theta_t: the checkpoint (a state dict or a model).
        sparsity: pruning rate k, the fraction REMOVED.
        names: the prunable parameter names.
        scope: ``"global"`` or ``"layerwise"``.
        masks: current masks for iterative pruning (pruned weights stay pruned).
    """
    sd = theta_t.state_dict() if isinstance(theta_t, nn.Module) else theta_t
    sc = {n: sd[n].detach().abs() for n in names}
    return prune_global(None, sc, sparsity, scope=scope, masks=masks)  # type: ignore[arg-type]


def norm_ratio(theta0: State, masks: Masks, p: float) -> float:
    """r_p = ||theta_0 * m||_p / ||theta_0||_p over all masked tensors concatenated (global, float64)."""
    num = torch.cat([(theta0[n].double() * masks[n].double()).flatten() for n in masks])
    den = torch.cat([theta0[n].double().flatten() for n in masks])
    return float(torch.linalg.vector_norm(num, ord=p) / torch.linalg.vector_norm(den, ord=p))


def norm_matched_init(theta0: State, masks: Masks, p: float) -> tuple[State, float]:
    """The norm-matched ("controlled") dense init r_p * theta_0 (prunable weights only) and r_p."""
    r = norm_ratio(theta0, masks, p)
    out = {k: v.clone() for k, v in theta0.items()}
    for n in masks:
        out[n] = (theta0[n].double() * r).to(theta0[n].dtype)
    return out, r


class SnapshotCallback(Callback):
    """Keep in-memory snapshots of the model at chosen steps (and every ``every`` steps) during fit.

    ``snapshots[step]`` holds a :func:`snapshot`; ``snapshots["final"]`` is added at the end.
    """

    def __init__(self, *, steps: Iterable[int] = (), every: int | None = None, final: bool = True) -> None:
        self.steps = set(int(s) for s in steps)
        self.every = every
        self.final = final
        self.snapshots: dict[int | str, State] = {}

    def on_fit_start(self, state: FitState) -> None:
        if 0 in self.steps and state.step == 0:
            self.snapshots[0] = snapshot(state.raw_model)

    def on_step_end(self, state: FitState) -> None:
        s = state.step
        if s in self.steps or (self.every and s % self.every == 0):
            self.snapshots[s] = snapshot(state.raw_model)

    def on_fit_end(self, state: FitState) -> None:
        if self.final:
            self.snapshots["final"] = snapshot(state.raw_model)


@dataclass
class TrainResult:
    """What a training callback returns.

    Attributes:
        checkpoints: ``{step or "final": state}``; must contain the scoring checkpoint and, when
            rewinding to step k > 0, step k.
        history: eval rows, free-form.
        extra: anything else (t_gen, ...).
    """

    checkpoints: dict[int | str, State] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class LotteryResult:
    masks: Masks
    theta0: State
    rewind_state: State
    dense: TrainResult
    ticket: TrainResult | None
    rounds: list[TrainResult] = field(default_factory=list)


def lottery_ticket(
    model: nn.Module,
    train_fn: Callable[[nn.Module, Masks | None, str], TrainResult],
    *,
    sparsity: float,
    score_at: int | str | Callable[[TrainResult], int | str] = "final",
    rewind_to: int = 0,
    scope: str = "global",
    targets: Targets = None,
    imp_rounds: int = 1,
    retrain: bool = True,
    theta0: State | None = None,
) -> LotteryResult:
    """Find a lottery ticket with a user training callback.

    Steps: save theta_0 -> ``train_fn(model, None, "dense")`` -> magnitude scores of the checkpoint
    ``score_at`` -> global (or layer-wise) top-k mask at ``sparsity`` -> rewind to theta_0 (or the
    checkpoint at step ``rewind_to``) -> ``train_fn(model, masks, "ticket")`` with a fresh optimizer.
    With ``imp_rounds = R > 1`` the prune / rewind / retrain cycle repeats R times at a constant rate
    per round (iterative magnitude pruning); pruned weights are never revived.

    Args:
        model: the network at initialisation (theta_0 is read from it unless ``theta0`` is given).
        train_fn: ``train_fn(model, masks, stage) -> TrainResult``; ``stage`` is ``"dense"``,
            ``"imp{r}"`` or ``"ticket"``. It must build a fresh optimizer and keep ``masks`` applied.
        sparsity: final pruning rate k (fraction removed).
        score_at: which checkpoint of each training run to score: a step, ``"final"``, or a function of the
            run's :class:`TrainResult` returning one (e.g. the first checkpoint after generalisation).
        rewind_to: 0 rewinds to theta_0; k > 0 to the dense run's checkpoint at step k.
        scope: ``"global"`` or ``"layerwise"``.
        targets: module names / patterns whose weights are pruned (:func:`sparseforge.select`; default every
            weight with >= 2 dims, embeddings and classifier included).
        imp_rounds: number of prune rounds.
        retrain: train the final ticket (else ``ticket`` is None).
    """
    names = list(prunable_params(model, targets))
    theta0 = theta0 if theta0 is not None else snapshot(model)
    dense = train_fn(model, None, "dense")
    if rewind_to:
        if rewind_to not in dense.checkpoints:
            raise UserError(f"rewind_to={rewind_to}: the dense run returned no checkpoint at that step")
        theta_r = dense.checkpoints[rewind_to]
    else:
        theta_r = theta0
    if imp_rounds < 1:
        raise UserError(f"imp_rounds must be >= 1, got {imp_rounds}")
    rate = 1.0 - (1.0 - sparsity) ** (1.0 / imp_rounds)
    masks: Masks | None = None
    last = dense
    rounds: list[TrainResult] = []
    for r in range(1, imp_rounds + 1):
        key = score_at(last) if callable(score_at) else score_at
        if key not in last.checkpoints:
            raise UserError(f"score_at={key!r}: the training callback returned no such checkpoint")
        k_r = sparsity if r == imp_rounds else 1.0 - (1.0 - rate) ** r
        masks = ticket_mask(last.checkpoints[key], k_r, names=names, scope=scope, masks=masks)
        last.extra.setdefault("scored_checkpoint", key)
        if r < imp_rounds:
            rewind(model, theta_r, masks)
            last = train_fn(model, masks, f"imp{r}")
            rounds.append(last)
    assert masks is not None
    rewind(model, theta_r, masks)
    ticket = train_fn(model, masks, "ticket") if retrain else None
    return LotteryResult(masks=masks, theta0=theta0, rewind_state=theta_r, dense=dense, ticket=ticket, rounds=rounds)

