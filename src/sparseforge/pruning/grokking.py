"""Grokking measurements: memorisation / generalisation times and a training callback that tracks them.

Paper: Gouki Minegishi, Yusuke Iwasawa, Yutaka Matsuo, "Grokking Tickets: Lottery Tickets Accelerate
Grokking" (arXiv 2310.19470); grokking itself: Power et al., "Grokking: Generalization Beyond Overfitting
on Small Algorithmic Datasets" (arXiv 2201.02177).

Definitions (P a threshold, 0.95 or 0.99; accuracies evaluated every ``every`` steps)::

    t_mem(P) = min{t : train_acc(t) >= P},   t_gen(P) = min{t : test_acc(t) >= P},   tau = t_gen / t_mem

A run that never reaches P has t = None ("did not generalise"). The frequency entropy of a modular-arithmetic
network is the mean over neurons of the Shannon entropy of the normalised DFT power (f = 1..floor(p/2), no DC)
of each row of U = W_in E (a reconstructed definition: a grokked network concentrates on a few frequencies).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..engine import Callback, FitState, Run
from .lottery import State, TrainResult, snapshot

__all__ = ["GrokTracker", "frequency_entropy", "grokking_metrics"]


def grokking_metrics(history: list[dict[str, Any]], P: float = 0.95) -> dict[str, float | None]:
    """First steps with train / test accuracy >= P, tau = t_gen / t_mem and the gap (None = never)."""
    t_mem = next((r["step"] for r in history if r["train_acc"] >= P), None)
    t_gen = next((r["step"] for r in history if r["test_acc"] >= P), None)
    tau = t_gen / t_mem if (t_gen is not None and t_mem) else None
    gap = t_gen - t_mem if (t_gen is not None and t_mem is not None) else None
    return {"t_mem": t_mem, "t_gen": t_gen, "tau": tau, "gap": gap}


def frequency_entropy(U: torch.Tensor) -> float:
    """Mean over rows of the entropy of the normalised DFT power at f = 1..floor(p/2) (no DC)."""
    U = U.detach().double()  # (neurons, p)
    p = U.shape[1]
    power = torch.fft.rfft(U, dim=1).abs().pow(2)[:, 1: p // 2 + 1]  # (neurons, floor(p/2))
    tot = power.sum(1, keepdim=True)
    ok = tot.squeeze(1) > 0
    if not bool(ok.any()):
        return float("nan")
    q = power[ok] / tot[ok]
    ent = -(q * torch.log(q.clamp_min(1e-300))).sum(1)
    return float(ent.mean())


class GrokTracker(Callback):
    """Full-batch train / test accuracy every ``every`` steps, weight norms, frequency entropy; snapshots; early stop.

    Args:
        data: ``(x_train, y_train, x_test, y_test)`` (evaluated in one forward pass).
        names: parameter names whose global L1 / L2 norms are logged.
        every: evaluation period in steps.
        P: the t_gen threshold used for early stopping.
        loss_fn: ``loss_fn(logits, y)`` for the logged train loss.
        checkpoint_every: keep a snapshot every this many steps (None: none but the final one).
        transition_acc: also snapshot at the first evaluation with test accuracy >= this (key ``"transition"``).
        stop_after: ``"t_gen"`` stops at t_gen, ``"post_gen"`` at the first snapshot at or after t_gen +
            ``margin``, None never.
        run / series: where evaluations are logged.

    :meth:`result` gives the :class:`~sparseforge.pruning.TrainResult` a lottery procedure consumes:
    ``checkpoints`` keyed by step, ``"final"`` and ``"transition"``; ``extra`` holds ``final_step``,
    ``transition_step`` and ``t_gen``.
    """

    def __init__(self, data: tuple[torch.Tensor, ...], names: list[str], *, every: int, P: float,
                 loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 checkpoint_every: int | None = None, transition_acc: float | None = None,
                 stop_after: str | None = None, run: Run | None = None, series: str | None = None,
                 margin: int = 0) -> None:
        self.margin = margin
        self.xtr, self.ytr, self.xte, self.yte = data
        self.xall, self.n_train = torch.cat([self.xtr, self.xte]), len(self.xtr)
        self.names, self.every, self.P, self.loss_fn = names, every, P, loss_fn
        self.checkpoint_every, self.transition_acc, self.stop_after = checkpoint_every, transition_acc, stop_after
        self.run, self.series = run, series
        self.history: list[dict[str, Any]] = []
        self.snapshots: dict[int | str, State] = {}
        self.steps: dict[str, int] = {}
        self.t_gen: int | None = None

    @torch.no_grad()
    def _eval(self, state: FitState) -> None:
        m = state.raw_model
        m.eval()
        logits = m(self.xall)  # one forward over train + test
        tr_logits, te_logits = logits[: self.n_train], logits[self.n_train:]
        row = {
            "step": state.step,
            "train_loss": float(self.loss_fn(tr_logits, self.ytr)),
            "train_acc": float((tr_logits.argmax(-1) == self.ytr).double().mean()),
            "test_acc": float((te_logits.argmax(-1) == self.yte).double().mean()),
        }
        params = dict(m.named_parameters())
        flat = torch.cat([params[n].detach().flatten().double() for n in self.names])
        row["l1"] = float(flat.abs().sum())
        row["l2"] = float(flat.norm())
        if hasattr(m, "neuron_token_map"):
            row["freq_entropy"] = frequency_entropy(m.neuron_token_map())
        m.train()
        self.history.append(row)
        if self.run is not None:
            self.run.log(state.step, series=self.series, **{k: v for k, v in row.items() if k != "step"})
        if self.transition_acc is not None and "transition" not in self.snapshots and row["test_acc"] >= self.transition_acc:
            self.snapshots["transition"] = snapshot(m)
            self.steps["transition"] = state.step
        if self.t_gen is None and row["test_acc"] >= self.P:
            self.t_gen = state.step
            if self.stop_after == "t_gen":
                state.stop = True

    def on_fit_start(self, state: FitState) -> None:
        if state.step == 0:
            self._eval(state)
            if self.checkpoint_every:
                self.snapshots[0] = snapshot(state.raw_model)

    def on_step_end(self, state: FitState) -> None:
        if state.step % self.every == 0:
            self._eval(state)
        if self.checkpoint_every and state.step % self.checkpoint_every == 0:
            self.snapshots[state.step] = snapshot(state.raw_model)
            if self.stop_after == "post_gen" and self.t_gen is not None and state.step >= self.t_gen + self.margin:
                state.stop = True

    def on_fit_end(self, state: FitState) -> None:
        if not self.history or self.history[-1]["step"] != state.step:
            self._eval(state)
        self.snapshots["final"] = snapshot(state.raw_model)
        self.steps["final"] = state.step

    def result(self) -> TrainResult:
        return TrainResult(checkpoints=self.snapshots, history=self.history,
                           extra={"t_gen": self.t_gen, **{f"{k}_step": v for k, v in self.steps.items()}})

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "snapshots": self.snapshots, "steps": self.steps, "t_gen": self.t_gen}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.history, self.snapshots = list(sd["history"]), dict(sd["snapshots"])
        self.steps, self.t_gen = dict(sd["steps"]), sd["t_gen"]


def first_snapshot_at_or_after(result: TrainResult, step: int | None) -> int | str:
    """Key of the first step snapshot at or after ``step`` (``"final"`` when there is none, or step is None)."""
    steps = sorted(k for k in result.checkpoints if isinstance(k, int))
    if step is not None:
        for s in steps:
            if s >= step:
                return s
    return "final"


__all__ += ["first_snapshot_at_or_after"]
