"""Recipe ``grokking-tickets``: lottery tickets accelerate grokking on modular arithmetic.

Paper: Gouki Minegishi, Yusuke Iwasawa, Yutaka Matsuo, "Grokking Tickets: Lottery Tickets Accelerate
Grokking" (arXiv 2310.19470). Pruning-at-init baselines: SNIP (Lee et al., arXiv 1810.02340), GraSP
(Wang et al., arXiv 2002.07376), SynFlow (Tanaka et al., arXiv 2006.05467).

Procedure (one seed):
1. theta_0 <- init(seed); train the dense network with full-batch AdamW (lr 1e-3, betas (0.9, 0.98),
   wd 1.0) on c = (a op b) mod p, keeping snapshots every ``checkpoint_every`` steps.
2. Grokking metrics from the eval history (every ``eval_every`` steps), :func:`sparseforge.pruning.grokking_metrics`:
   t_mem(P), t_gen(P), tau = t_gen / t_mem (P = 0.95, also 0.99; None = never reached).
3. Grokking ticket (:func:`sparseforge.pruning.lottery_ticket`): m = TopK(|theta_t|, round((1 - k) N)) over
   all weights (embeddings included, global), theta <- theta_0 * m, retrained with a fresh AdamW, same split.
4. Controls at the same density 1 - k: tickets from the memorisation / transition checkpoints,
   the dense init rescaled to the ticket's global L1 / L2 norm (r_p = ||theta_0 m||_p / ||theta_0||_p),
   masks chosen at init by random / SNIP / GraSP / SynFlow (100 rounds), a sweep over k, and the
   ticket at the critical rate without weight decay.

Variants (``variants``: ``all`` or a comma list of): ``dense``, ``ticket``, ``ticket_mem``,
``ticket_transition`` (absent when the dense run never reaches ``transition_acc``), ``dense_l1``,
``dense_l2``, ``sweep``, ``ticket_nowd``, and the name of any registered scorer (``random``, ``snip``,
``grasp``, ``synflow``, plugins): a mask chosen at init by it (``all`` takes every scorer but magnitude).

Reconstructed defaults (named options):
- ``ticket_source="post_gen"`` at ``quick``: the mask comes from the first snapshot at or after
  t_gen + ``post_gen_margin`` (300) of the dense run (``paper``: ``"final"``, the end of the 30k-step
  base run): a mask taken exactly at t_gen, when test accuracy has just reached 95%, is not yet a
  generalising subnetwork.
- ``budget_rel`` (``quick`` only, 1.0): every non-dense run is capped at budget_rel x the dense
  t_gen steps, so a variant that has not generalised by then is reported as "not reached" (it
  did not accelerate) without spending the full budget.
- ``mem_source``: the memorisation ticket uses the first snapshot at or after t_mem (the paper's
  2,000-step checkpoint with ``checkpoint_every=2000``).
- ``transition_acc=0.33``: the transition ticket uses the first eval step whose test accuracy
  reaches 0.33 (the paper's ~15.5k checkpoint had base test accuracy ~0.33).
- ``eval_every=10`` and the P = 0.99 threshold; ``early_stop`` (stop a run once t_gen is reached;
  off at ``paper``); ``threads=1`` (tiny models run fastest single-threaded on a shared CPU).
  Masks are kept by :func:`sparseforge.masks.attach` (cached masks, in-place gradient and weight masking).
- Frequency entropy: mean over neurons of the Shannon entropy of the normalised DFT power
  (f = 1..floor(p/2)) of each row of U = W_in E.

Measured wall time (2 cores, 1 thread): ``smoke`` ~3 s; ``quick`` 39-60 s (1 seed, variants dense, ticket,
dense_l2, random, snip; ~8.6k full-batch steps); ``paper`` hours (3 seeds x 12 variants, sweep of 9 rates,
30k steps each at ~10 ms/step).
"""

from __future__ import annotations

import hashlib
import math
import statistics
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from ..config import RecipeConfig
from ..engine import Run, fit
from ..errors import ConfigError
from ..masks import attach
from ..models.grokking import ModMLP, ModTransformer, float64_cross_entropy
from ..pruning import (
    TrainResult,
    density_by_layer,
    lottery_ticket,
    norm_matched_init,
    prunable_params,
    prune_global,
    rewind,
    snapshot,
    ticket_mask,
)
from ..pruning.grokking import GrokTracker, first_snapshot_at_or_after, grokking_metrics
from ..registry import METHODS
from . import recipe

FIXED_VARIANTS = ("dense", "ticket", "ticket_mem", "ticket_transition", "dense_l1", "dense_l2")
LATE_VARIANTS = ("sweep", "ticket_nowd")


def pai_variants() -> list[str]:
    """Masks at init: every registered scorer (plugins included) except magnitude, which the paper leaves out."""
    return [n for n in METHODS.names(family="scorer") if n != "magnitude"]


def all_variants() -> tuple[str, ...]:
    return (*FIXED_VARIANTS, *pai_variants(), *LATE_VARIANTS)


@dataclass
class GrokkingTicketsConfig(RecipeConfig):
    """Options of ``grokking-tickets`` (see the module docstring for the reconstructed ones)."""

    model: Literal["mlp", "transformer"] = "mlp"
    p: int = 67
    op: str = "add"
    frac_train: float = 0.4
    symmetric: bool | None = None
    include_diagonal: bool = True
    data_seed: int | None = None  # None: the split seed is the run seed
    d_emb: int = 500
    d_hidden: int = 48
    d_model: int = 128
    pos_emb: bool = False
    mlp_bias: bool = False
    lr: float = 1e-3
    weight_decay: float = 1.0
    betas: tuple[float, ...] = (0.9, 0.98)
    eps: float = 1e-8
    steps: int = 30000
    ticket_steps: int | None = None  # None: same as steps
    eval_every: int = 10
    threshold: float = 0.95
    threshold_hi: float = 0.99
    early_stop: bool = False
    checkpoint_every: int = 2000
    pruning_rate: float = 0.6
    scope: Literal["global", "layerwise"] = "global"
    ticket_source: str = "final"  # final | post_gen | t_gen | <step>
    post_gen_margin: int = 300  # post_gen: first snapshot at or after t_gen + margin (reconstructed default)
    budget_rel: float | None = None  # cap non-dense runs at budget_rel * dense t_gen steps (reconstructed, quick)
    mem_source: str = "t_mem"  # t_mem (first snapshot at/after t_mem) | <step>
    transition_acc: float = 0.33
    sweep_rates: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    nowd_rate: float = 0.81
    variants: str = "all"
    seeds: tuple[int, ...] = ()  # () -> (seed,)
    pai_score_at: Literal["init", "final"] = "init"
    synflow_rounds: int = 100
    grasp_temperature: float = 200.0
    threads: int | None = 1  # tiny models: one intra-op thread is fastest

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.p < 3:
            raise ConfigError("p must be >= 3")
        if not 0 < self.frac_train < 1:
            raise ConfigError("frac_train must be in (0, 1)")
        if self.steps < 1 or (self.ticket_steps is not None and self.ticket_steps < 1):
            raise ConfigError("steps and ticket_steps must be >= 1")
        if self.budget_rel is not None and self.budget_rel <= 0:
            raise ConfigError("budget_rel must be > 0 (or none)")
        if self.eval_every < 1 or self.checkpoint_every < 1:
            raise ConfigError("eval_every and checkpoint_every must be >= 1")
        for r in (self.pruning_rate, self.nowd_rate, *self.sweep_rates):
            if not 0 <= r < 1:
                raise ConfigError(f"pruning rates must be in [0, 1), got {r}")
        if len(self.betas) != 2:
            raise ConfigError("betas must be two numbers, e.g. betas=0.9,0.98")
        if not (self.ticket_source in ("final", "post_gen", "t_gen") or self.ticket_source.isdigit()):
            raise ConfigError("ticket_source must be final, post_gen, t_gen or a step number")
        if not (self.mem_source == "t_mem" or self.mem_source.isdigit()):
            raise ConfigError("mem_source must be t_mem or a step number")
        self.variant_list()  # validate

    def variant_list(self) -> list[str]:
        if self.variants in ("all", ""):
            return list(all_variants())
        vs = [v.strip() for v in self.variants.split(",") if v.strip()]
        known = (*FIXED_VARIANTS, *METHODS.names(family="scorer"), *LATE_VARIANTS)
        bad = [v for v in vs if v not in known]
        if bad:
            raise ConfigError(f"unknown variant {bad[0]!r}; choose from {', '.join(known)}")
        if "dense" not in vs:
            vs.insert(0, "dense")  # every other variant derives from the dense run
        return [v for v in known if v in vs]


def split_hash(train_x: torch.Tensor) -> str:
    return hashlib.sha1(train_x.contiguous().numpy().tobytes()).hexdigest()[:12]


def build_model(cfg: GrokkingTicketsConfig, num_classes: int) -> nn.Module:
    if cfg.model == "mlp":
        return ModMLP(cfg.p, d_emb=cfg.d_emb, d_hidden=cfg.d_hidden, num_classes=num_classes)
    return ModTransformer(cfg.p, d_model=cfg.d_model, d_mlp=cfg.d_model, num_classes=num_classes,
                          pos_emb=cfg.pos_emb, mlp_bias=cfg.mlp_bias)


def train_run(cfg: GrokkingTicketsConfig, model: nn.Module, data: tuple[torch.Tensor, ...], names: list[str], *,
              masks: dict[str, torch.Tensor] | None, steps: int, weight_decay: float, stop_after: str | None,
              run: Run | None, series: str, checkpoints: bool = False) -> GrokTracker:
    """Full-batch AdamW from the model's current weights (fresh optimizer), masks kept exactly zero."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(cfg.betas[0], cfg.betas[1]), eps=cfg.eps,
                            weight_decay=weight_decay)
    ms = attach(model, masks, optimizer=opt) if masks else None
    tracker = GrokTracker(data, names, every=cfg.eval_every, P=cfg.threshold, loss_fn=float64_cross_entropy,
                          checkpoint_every=cfg.checkpoint_every if checkpoints else None,
                          transition_acc=cfg.transition_acc if checkpoints else None,
                          stop_after=stop_after, run=run, series=series, margin=cfg.post_gen_margin)
    fit(model, [(data[0], data[1])], opt, loss_fn=float64_cross_entropy, steps=steps, callbacks=[tracker],
        device=cfg.device, desc=series)
    if ms is not None:
        ms.detach()
    return tracker


# ---------------------------------------------------------------------------------------------
# one seed
# ---------------------------------------------------------------------------------------------


def run_seed(cfg: GrokkingTicketsConfig, seed: int, run: Run | None) -> dict[str, Any]:
    """All requested variants for one seed; returns per-variant metrics and histories."""
    from ..data import modular_arithmetic

    variants = cfg.variant_list()
    split_seed = seed if cfg.data_seed is None else cfg.data_seed
    md = modular_arithmetic(cfg.p, cfg.op, cfg.frac_train, split_seed,
                            symmetric=cfg.symmetric, include_diagonal=cfg.include_diagonal)
    dev = cfg.device
    data = (md.train_pairs.to(dev), md.train_labels.to(dev), md.test_pairs.to(dev), md.test_labels.to(dev))
    torch.manual_seed(seed)
    model = build_model(cfg, md.num_classes).to(dev)
    names = list(prunable_params(model))
    theta0 = snapshot(model)
    early = "t_gen" if cfg.early_stop else None
    k = cfg.pruning_rate
    out: dict[str, Any] = {"seed": seed, "split_hash": split_hash(md.train_pairs), "variants": {}}
    budget = {"steps": cfg.ticket_steps or cfg.steps}

    def record(name: str, tr: GrokTracker, **extra: Any) -> None:
        m = grokking_metrics(tr.history, cfg.threshold)
        last = tr.history[-1]
        out["variants"][name] = {**m, "t_gen99": grokking_metrics(tr.history, cfg.threshold_hi)["t_gen"],
                                 "final_train_acc": last["train_acc"], "final_test_acc": last["test_acc"],
                                 "final_l1": last["l1"], "final_l2": last["l2"], "steps_run": last["step"],
                                 "history": tr.history, **extra}

    def train(name: str, masks: dict[str, torch.Tensor] | None, *, wd: float | None = None, **extra: Any) -> TrainResult:
        dense = name == "dense"
        stop = ("post_gen" if cfg.ticket_source in ("post_gen", "t_gen") else None) if dense and cfg.early_stop else early
        tr = train_run(cfg, model, data, names, masks=masks, steps=cfg.steps if dense else budget["steps"],
                       weight_decay=cfg.weight_decay if wd is None else wd, stop_after=stop, run=run,
                       series=f"{name}/s{seed}", checkpoints=dense)
        record(name, tr, **extra)
        return tr.result()

    def source(dense: TrainResult) -> int | str:
        """The dense checkpoint the ticket is scored at (and the budget of every later run)."""
        t_gen = dense.extra["t_gen"]
        at = {"final": None, "post_gen": None if t_gen is None else t_gen + cfg.post_gen_margin, "t_gen": t_gen}
        key = "final" if cfg.ticket_source == "final" else first_snapshot_at_or_after(
            dense, at.get(cfg.ticket_source, int(cfg.ticket_source) if cfg.ticket_source.isdigit() else None))
        dm = out["variants"]["dense"]
        if cfg.budget_rel is not None and dm["t_gen"] is not None:
            budget["steps"] = max(cfg.eval_every, min(budget["steps"], math.ceil(cfg.budget_rel * dm["t_gen"])))
        return key

    def train_fn(m: nn.Module, masks: dict[str, torch.Tensor] | None, stage: str) -> TrainResult:
        return train("dense", None) if stage == "dense" else train("ticket", masks)

    lot = lottery_ticket(model, train_fn, sparsity=k, score_at=source, scope=cfg.scope, theta0=theta0,
                         retrain="ticket" in variants)
    dense, mask = lot.dense, lot.masks
    key = dense.extra["scored_checkpoint"]
    out["ticket_source_step"] = dense.extra["final_step"] if key == "final" else key
    out["ticket_steps"] = budget["steps"]
    out["ticket_density_by_layer"] = density_by_layer(mask)
    if "ticket" in out["variants"]:
        out["variants"]["ticket"]["source_step"] = out["ticket_source_step"]

    def ticket(name: str, masks: dict[str, torch.Tensor], *, wd: float | None = None, **extra: Any) -> None:
        rewind(model, theta0, masks)
        train(name, masks, wd=wd, **extra)

    dm = out["variants"]["dense"]
    if "ticket_mem" in variants:
        key = first_snapshot_at_or_after(dense, dm["t_mem"] if cfg.mem_source == "t_mem" else int(cfg.mem_source))
        ticket("ticket_mem", ticket_mask(dense.checkpoints[key], k, names=names, scope=cfg.scope),
               source_step=key if key != "final" else dense.extra["final_step"])
    if "ticket_transition" in variants and "transition" in dense.checkpoints:
        ticket("ticket_transition", ticket_mask(dense.checkpoints["transition"], k, names=names, scope=cfg.scope),
               source_step=dense.extra["transition_step"])
    for p_norm, name in ((1, "dense_l1"), (2, "dense_l2")):
        if name in variants:
            theta_p, r = norm_matched_init(theta0, mask, p_norm)
            rewind(model, theta_p)
            train(name, None, norm_ratio=r)
    for meth in (v for v in variants if v in METHODS.names(family="scorer")):
        rewind(model, theta0 if cfg.pai_score_at == "init" else dense.checkpoints["final"])
        pm = prune_global(model, meth, k, batch=(data[0], data[1]), scope=cfg.scope, options={  # the whole train set
            "seed": seed, "temperature": cfg.grasp_temperature, "rounds": cfg.synflow_rounds})
        out.setdefault("pai_density_by_layer", {})[meth] = density_by_layer(pm)
        ticket(meth, pm)
    src = dense.checkpoints[dense.extra["scored_checkpoint"]]
    if "sweep" in variants:
        for rate in cfg.sweep_rates:
            ticket(f"sweep_k{rate:g}", ticket_mask(src, rate, names=names, scope=cfg.scope), rate=rate)
    if "ticket_nowd" in variants:
        ticket("ticket_nowd", ticket_mask(src, cfg.nowd_rate, names=names, scope=cfg.scope), wd=0.0, rate=cfg.nowd_rate)
    return out


# ---------------------------------------------------------------------------------------------
# the recipe
# ---------------------------------------------------------------------------------------------


def _median(vals: list[Any]) -> float | None:
    """Median over seeds; None (did not generalise) counts as +inf, so a median of None is None."""
    xs = sorted(math.inf if v is None else float(v) for v in vals)
    if not xs:
        return None
    m = statistics.median(xs)
    return None if math.isinf(m) else m


def _figures(cfg: GrokkingTicketsConfig, results: list[dict[str, Any]], summary_t: dict[str, Any], run: Run) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r0 = results[0]
    main = [v for v in (*FIXED_VARIANTS, *METHODS.names(family="scorer"), "ticket_nowd") if v in r0["variants"]]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    cmap = plt.get_cmap("tab20")
    for i, v in enumerate(main):
        h = r0["variants"][v]["history"]
        st = [r["step"] for r in h]
        ax.plot(st, [r["test_acc"] for r in h], color=cmap(i), label=f"{v} test")
        ax.plot(st, [r["train_acc"] for r in h], color=cmap(i), ls="--", lw=0.8)
    ax.axhline(cfg.threshold, color="gray", lw=0.6, ls=":")
    ax.set_xscale("symlog", linthresh=max(cfg.eval_every, 10))
    ax.set_xlim(left=0)
    ax.set(xlabel="step", ylabel="accuracy (dashed: train)", title=f"seed {r0['seed']}, k={cfg.pruning_rate}")
    ax.legend(fontsize=7, ncol=2)
    run.save_figure(fig, "accuracy_curves", caption="Train (dashed) and test (solid) accuracy per variant, first seed.")

    names = [v for v in summary_t if not v.startswith("sweep_")]
    budget = max(r["variants"][v]["steps_run"] for r in results for v in r["variants"])
    fig, ax = plt.subplots(figsize=(max(5, 0.7 * len(names)), 4))
    for i, v in enumerate(names):
        med = summary_t[v]
        ax.bar(i, med if med is not None else budget, color="C0" if med is not None else "white",
               edgecolor="C0", hatch=None if med is not None else "//")
        if med is None:
            ax.text(i, budget, "not\nreached", ha="center", va="bottom", fontsize=7)
        for r in results:
            t = r["variants"].get(v, {}).get("t_gen")
            ax.plot(i, t if t is not None else budget, "k.", ms=4)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set(ylabel=f"t_gen (test acc >= {cfg.threshold:g})", title="steps to generalise (median, dots = seeds)")
    run.save_figure(fig, "t_gen_per_variant", caption="Median t_gen per variant; hatched = did not generalise.")

    sweep = sorted((float(v[len("sweep_k"):]), v) for v in r0["variants"] if v.startswith("sweep_k"))
    if sweep:
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for c, (key, lab, mk) in enumerate((("t_gen", "t_gen", "o-"), ("t_mem", "t_mem", "s--"))):
            xs, ys, miss = [], [], []
            for rate, v in sweep:
                med = _median([r["variants"][v][key] for r in results])
                (xs.append(rate), ys.append(med)) if med is not None else miss.append(rate)
            ax.plot(xs, ys, mk, color=f"C{c}", label=lab)
            if miss:
                ax.plot(miss, [budget * (1.0 + 0.08 * c)] * len(miss), "x", color=f"C{c}", label=f"{lab} not reached")
        dense_t = summary_t.get("dense")
        if dense_t is not None:
            ax.axhline(dense_t, color="gray", ls=":", label="dense t_gen")
        ax.set(xlabel="pruning rate k", ylabel="step", yscale="log", title="grokking speed vs pruning rate")
        ax.legend(fontsize=8)
        run.save_figure(fig, "t_gen_vs_rate", caption="Median t_gen and t_mem of tickets vs the pruning rate k.")


@recipe(
    "grokking-tickets",
    config=GrokkingTicketsConfig,
    presets={
        "smoke": {"p": 13, "frac_train": 0.5, "d_emb": 32, "d_hidden": 16, "lr": 3e-3, "steps": 60,
                  "ticket_steps": 40, "eval_every": 10, "checkpoint_every": 20, "ticket_source": "final",
                  "variants": "dense,ticket,dense_l2,random,synflow,sweep", "sweep_rates": (0.3, 0.6),
                  "synflow_rounds": 5},
        "quick": {"d_emb": 128, "frac_train": 0.5, "lr": 3e-3, "steps": 4000, "ticket_steps": 3000,
                  "eval_every": 10, "early_stop": True, "checkpoint_every": 100, "ticket_source": "post_gen",
                  "budget_rel": 1.0,
                  "variants": "dense,ticket,dense_l2,random,snip"},
        "paper": {"seeds": (1, 2, 3)},
    },
    help="Grokking tickets: lottery tickets vs dense / norm-matched / pruning-at-init on modular addition",
    headline=("t_gen/dense", "t_gen/ticket", "speedup_ticket_vs_dense", "t_gen/dense_l2", "t_gen/random", "t_gen/snip"),
)
def run(cfg: GrokkingTicketsConfig, run: Run) -> dict[str, Any]:
    seeds = list(cfg.seeds) or [cfg.seed]
    results = [run.cached(f"seed{s}", lambda s=s: run_seed(cfg, s, run)) for s in seeds]
    variants = list(dict.fromkeys(v for r in results for v in r["variants"]))  # ticket_transition may be absent
    rows, t_gen, t_mem, summary = [], {}, {}, {}
    for v in variants:
        vals = [r["variants"].get(v) for r in results if v in r["variants"]]
        t_gen[v] = _median([x["t_gen"] for x in vals])
        t_mem[v] = _median([x["t_mem"] for x in vals])
        for r in results:
            x = r["variants"].get(v)
            if x is not None:
                rows.append({"variant": v, "seed": r["seed"], "t_mem": x["t_mem"], "t_gen": x["t_gen"],
                             "t_gen99": x["t_gen99"], "tau": x["tau"], "final_test_acc": round(x["final_test_acc"], 4),
                             "final_l1": round(x["final_l1"], 2), "final_l2": round(x["final_l2"], 3),
                             "steps_run": x["steps_run"], "norm_ratio": x.get("norm_ratio")})
    run.save_table("per_seed", rows, caption="t_mem / t_gen (first eval step with accuracy >= P; None = not reached).")
    _figures(cfg, results, t_gen, run)
    d, t = t_gen.get("dense"), t_gen.get("ticket")
    summary["t_gen"] = t_gen
    summary["t_mem"] = t_mem
    summary["final_test_acc"] = {v: statistics.median(r["variants"][v]["final_test_acc"] for r in results
                                                      if v in r["variants"]) for v in variants}
    summary["speedup_ticket_vs_dense"] = (d / t) if (d is not None and t) else None
    for v in ("dense_l1", "dense_l2"):
        if v in variants:
            summary[f"norm_ratio_{v[-2:]}"] = statistics.median(r["variants"][v]["norm_ratio"] for r in results
                                                                if v in r["variants"])
    summary["ticket_source_step"] = [r["ticket_source_step"] for r in results]
    summary["split_hash"] = [r["split_hash"] for r in results]
    summary["seeds"] = seeds
    summary["pruning_rate"] = cfg.pruning_rate
    summary["variants"] = variants
    return summary
