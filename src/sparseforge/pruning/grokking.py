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
        stop_after: ``"t_gen"`` stops at the first evaluation with test accuracy >= ``stop_P``,
            ``"post_gen"`` at the first snapshot at or after that step + ``margin``, None never.
        stop_P: the stopping threshold (default ``P``; e.g. 0.99 to stop at t_gen@99).
        run / series: where evaluations are logged.

    :meth:`result` gives the :class:`~sparseforge.pruning.TrainResult` a lottery procedure consumes:
    ``checkpoints`` keyed by step, ``"final"`` and ``"transition"``; ``extra`` holds ``final_step``,
    ``transition_step`` and ``t_gen``.
    """

    def __init__(self, data: tuple[torch.Tensor, ...], names: list[str], *, every: int, P: float,
                 loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 checkpoint_every: int | None = None, transition_acc: float | None = None,
                 stop_after: str | None = None, run: Run | None = None, series: str | None = None,
                 margin: int = 0, stop_P: float | None = None) -> None:
        self.margin = margin
        self.stop_P = P if stop_P is None else stop_P
        self.t_stop: int | None = None
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
        if self.t_stop is None and row["test_acc"] >= self.stop_P:
            self.t_stop = state.step
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
            if self.stop_after == "post_gen" and self.t_stop is not None and state.step >= self.t_stop + self.margin:
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
        return {"history": self.history, "snapshots": self.snapshots, "steps": self.steps, "t_gen": self.t_gen,
                "t_stop": self.t_stop}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.history, self.snapshots = list(sd["history"]), dict(sd["snapshots"])
        self.steps, self.t_gen, self.t_stop = dict(sd["steps"]), sd["t_gen"], sd.get("t_stop")


def first_snapshot_at_or_after(result: TrainResult, step: int | None) -> int | str:
    """Key of the first step snapshot at or after ``step`` (``"final"`` when there is none, or step is None)."""
    steps = sorted(k for k in result.checkpoints if isinstance(k, int))
    if step is not None:
        for s in steps:
            if s >= step:
                return s
    return "final"


def median_steps(vals: list[Any]) -> float | None:
    """Median over seeds; None (did not generalise) counts as +inf, so a median of None is None."""
    import math
    import statistics

    xs = sorted(math.inf if v is None else float(v) for v in vals)
    if not xs:
        return None
    m = statistics.median(xs)
    return None if math.isinf(m) else m


def accuracy_curves_figure(histories: dict[str, list[dict[str, Any]]], *, threshold: float, title: str = "",
                           linthresh: int = 10) -> Any:
    """Train (dashed) and test (solid) accuracy against the step (symlog x), one colour per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 4.5))
    cmap = plt.get_cmap("tab20")
    for i, (v, h) in enumerate(histories.items()):
        st = [r["step"] for r in h]
        ax.plot(st, [r["test_acc"] for r in h], color=cmap(i % 20), label=f"{v}")
        ax.plot(st, [r["train_acc"] for r in h], color=cmap(i % 20), ls="--", lw=0.8)
    ax.axhline(threshold, color="gray", lw=0.6, ls=":")
    ax.set_xscale("symlog", linthresh=max(linthresh, 10))
    ax.set_xlim(left=0)
    ax.set(xlabel="step", ylabel="accuracy (solid test, dashed train)", title=title)
    ax.legend(fontsize=7, ncol=1, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def t_gen_figure(per_variant: dict[str, list[int | None]], caps: dict[str, int], *, threshold: float) -> Any:
    """Median t_gen per variant (bars), every seed as a dot; a variant that never reached the threshold within its
    budget is a hatched bar at that budget, labelled "not reached (cap N)"."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(per_variant)
    fig, ax = plt.subplots(figsize=(max(5.5, 0.75 * len(names) + 1.5), 4))
    for i, v in enumerate(names):
        med = median_steps(per_variant[v])
        cap = caps.get(v, 0)
        ax.bar(i, med if med is not None else cap, color="C0" if med is not None else "white", edgecolor="C0",
               hatch=None if med is not None else "//")
        if med is None:
            ax.text(i, cap, f"not reached\n(cap {cap})", ha="center", va="bottom", fontsize=6)
        for t in per_variant[v]:
            ax.plot(i, t if t is not None else cap, "k.", ms=4)
    ax.set_xticks(range(len(names)), names, rotation=40, ha="right", fontsize=8)
    ax.set(ylabel=f"t_gen (test acc >= {threshold:g})", title="steps to generalise (median; dots = seeds)")
    fig.tight_layout()
    return fig


def rate_figure(rates: list[float], t_gen: list[float | None], t_mem: list[float | None], *, dense_t_gen: float | None,
                cap: int) -> Any:
    """Median t_gen and t_mem of tickets against the pruning rate k (log y), misses marked at the cap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.8, 4))
    for c, (vals, lab, mk) in enumerate(((t_gen, "t_gen", "o-"), (t_mem, "t_mem", "s--"))):
        xs = [r for r, v in zip(rates, vals) if v is not None]
        ax.plot(xs, [v for v in vals if v is not None], mk, color=f"C{c}", label=lab)
        miss = [r for r, v in zip(rates, vals) if v is None]
        if miss:
            ax.plot(miss, [cap * (1.0 + 0.08 * c)] * len(miss), "x", color=f"C{c}", label=f"{lab} not reached")
    if dense_t_gen is not None:
        ax.axhline(dense_t_gen, color="gray", ls=":", label="dense t_gen")
    ax.set(xlabel="pruning rate k", ylabel="step", yscale="log", title="grokking speed vs pruning rate")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


__all__ += ["accuracy_curves_figure", "first_snapshot_at_or_after", "median_steps", "rate_figure", "t_gen_figure"]
