"""Recipe ``grokking-tickets``: lottery tickets accelerate grokking on modular arithmetic.

Paper: Gouki Minegishi, Yusuke Iwasawa, Yutaka Matsuo, "Grokking Tickets: Lottery Tickets Accelerate
Grokking" (arXiv 2310.19470): a magnitude-pruned, rewound subnetwork of the *generalised* network (MLP 500/48,
p = 67, 40% train, AdamW lr 1e-3, wd 1, full batch, k = 0.6) generalises about 4x sooner than the dense network,
sooner than dense networks matched to its L1/L2 norm, and masks chosen at initialisation (random, SNIP,
GraSP, SynFlow) do not accelerate. Baselines: SNIP (arXiv 1810.02340), GraSP (arXiv 2002.07376), SynFlow
(arXiv 2006.05467).

Procedure (one seed; :func:`sparseforge.pruning.lottery_ticket` with :class:`sparseforge.pruning.GrokTracker`):
1. theta_0 <- init(seed); train the dense network full batch (AdamW), keeping snapshots every
   ``checkpoint_every`` steps; t_mem(P), t_gen(P), tau = t_gen / t_mem from the evaluations every ``eval_every``
   steps (P = ``threshold``; also ``threshold_hi``; None = not reached).
2. The ticket: m = TopK(|theta_t|, round((1 - k) N)) over all weights (embeddings included, global), theta <-
   theta_0 * m, retrained with a fresh AdamW on the same split. t is ``ticket_source``: ``final`` (the paper's: the
   end of the base run), ``converged`` (the base run stops at the first snapshot, every ``checkpoint_every``
   steps, at or after t_gen@``threshold_hi`` + ``converge_margin``),
   ``post_gen`` (the first snapshot after t_gen + ``post_gen_margin``), ``t_gen`` or a step.
3. Controls at the same density: the L1/L2 norm-matched dense init r_p theta_0; masks at init by every registered
   scorer (``random``, ``snip``, ``grasp``, ``synflow``; ``synflow_repo``: one round on the real batch, as the
   authors' code runs it; ``pai_score_at="final"`` scores the trained network instead); tickets from other
   times (``ticket_mem``, ``ticket_transition``, and ``timing``: at t_mem, the transition, t_gen, 1.5x and 2x
   t_gen); a sweep over k; without weight decay (``nowd``): tickets at ``nowd_rates`` with dense and random-mask
   controls, all at wd 0 and for the full budget (no cap, no early stop).

Budgets: non-dense runs get ``ticket_steps``, capped at ``budget_rel`` x the dense t_gen when set; ``early_stop``
stops them at the first evaluation with test accuracy >= ``early_stop_at`` (default ``threshold``). A run that
hits its cap without generalising is reported as "not reached (cap N)" with its final test accuracy, so
"slower" and "never" stay apart.

Reconstructed defaults (named options): ``post_gen`` with a 300-step margin at ``quick`` (a mask taken when test
accuracy has just reached 95% is not yet a generalising subnetwork); ``budget_rel=1`` at ``quick`` (it measures
"faster than dense" without spending the full budget); ``transition_acc=0.33`` (the paper's ~15.5k checkpoint had
base test accuracy ~0.33); ``eval_every=10``; frequency entropy of U = W_in E; ``threads=1``.

Measured wall time (2 cores, 1 thread): ``smoke`` ~3 s; ``quick`` 40-60 s (d_emb 128, 50% train, lr 3e-3: a fast
check, not the paper's regime); ``paper`` (the paper's regime, 3 seeds) hours; ``benchmarks/grokking_paper.py``
runs the paper regime for 6 seeds in parallel processes.
"""

from __future__ import annotations

import hashlib
import math
import statistics
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

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
from ..pruning.grokking import (
    GrokTracker,
    accuracy_curves_figure,
    first_snapshot_at_or_after,
    grokking_metrics,
    median_steps,
    rate_figure,
    t_gen_figure,
)
from ..registry import METHODS
from . import recipe

FIXED = ("dense", "ticket", "ticket_mem", "ticket_transition", "dense_l1", "dense_l2")
EXTRA_PAI = ("synflow_repo",)
LATE = ("timing", "sweep", "nowd")
TIMING = {"t_mem": None, "transition": None, "t_gen": 1.0, "1.5x": 1.5, "2x": 2.0}


def pai_variants() -> list[str]:
    """Masks at init: every registered scorer (plugins included) except magnitude, which the paper leaves out."""
    return [n for n in METHODS.names(family="scorer") if n != "magnitude"]


@dataclass
class GrokkingTicketsConfig(RecipeConfig):
    """Options of ``grokking-tickets`` (see the module docstring)."""

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
    early_stop_at: float | None = None  # None: threshold
    checkpoint_every: int = 2000
    pruning_rate: float = 0.6
    scope: Literal["global", "layerwise"] = "global"
    ticket_source: str = "final"  # final | converged | post_gen | t_gen | <step>
    post_gen_margin: int = 300
    converge_margin: int = 1000
    budget_rel: float | None = None
    mem_source: str = "t_mem"  # t_mem | <step>
    transition_acc: float = 0.33
    sweep_rates: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    nowd_rates: tuple[float, ...] = (0.81,)
    variants: str = "all"
    seeds: tuple[int, ...] = ()  # () -> (seed,)
    pai_score_at: Literal["init", "final"] = "init"
    synflow_rounds: int = 100
    grasp_temperature: float = 200.0
    threads: int | None = 1  # tiny models: one intra-op thread is fastest
    limits: ClassVar[dict[str, Any]] = {"p": (3, 1_000), "eval_every": (1, 1_000_000), "checkpoint_every": (1, 10_000_000),
                                        "post_gen_margin": (0, 10_000_000), "converge_margin": (0, 10_000_000),
                                        "synflow_rounds": (1, 10_000)}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.p < 3 or not 0 < self.frac_train < 1:
            raise ConfigError("p must be >= 3 and frac_train in (0, 1)")
        if self.steps < 1 or (self.ticket_steps is not None and self.ticket_steps < 1):
            raise ConfigError("steps and ticket_steps must be >= 1")
        if self.budget_rel is not None and self.budget_rel <= 0:
            raise ConfigError("budget_rel must be > 0 (or none)")
        if self.eval_every < 1 or self.checkpoint_every < 1:
            raise ConfigError("eval_every and checkpoint_every must be >= 1")
        for r in (self.pruning_rate, *self.nowd_rates, *self.sweep_rates):
            if not 0 <= r < 1:
                raise ConfigError(f"pruning rates must be in [0, 1), got {r}")
        if len(self.betas) != 2:
            raise ConfigError("betas must be two numbers, e.g. betas=0.9,0.98")
        if not (self.ticket_source in ("final", "converged", "post_gen", "t_gen") or self.ticket_source.isdigit()):
            raise ConfigError("ticket_source must be final, converged, post_gen, t_gen or a step number")
        if not (self.mem_source == "t_mem" or self.mem_source.isdigit()):
            raise ConfigError("mem_source must be t_mem or a step number")
        self.variant_list()  # validate

    def variant_list(self) -> list[str]:
        known = (*FIXED, *METHODS.names(family="scorer"), *EXTRA_PAI, *LATE)
        if self.variants in ("all", ""):
            return [v for v in known if v not in ("magnitude",)]
        vs = [v.strip() for v in self.variants.split(",") if v.strip()]
        bad = [v for v in vs if v not in known]
        if bad:
            raise ConfigError(f"unknown variant {bad[0]!r}; choose from {', '.join(known)}")
        return [v for v in known if v in vs or v == "dense"]  # every variant derives from the dense run


def split_hash(train_x: torch.Tensor) -> str:
    return hashlib.sha1(train_x.contiguous().numpy().tobytes()).hexdigest()[:12]


def build_model(cfg: GrokkingTicketsConfig, num_classes: int) -> nn.Module:
    if cfg.model == "mlp":
        return ModMLP(cfg.p, d_emb=cfg.d_emb, d_hidden=cfg.d_hidden, num_classes=num_classes)
    return ModTransformer(cfg.p, d_model=cfg.d_model, d_mlp=cfg.d_model, num_classes=num_classes,
                          pos_emb=cfg.pos_emb, mlp_bias=cfg.mlp_bias)


def train_run(cfg: GrokkingTicketsConfig, model: nn.Module, data: tuple[torch.Tensor, ...], names: list[str], *,
              masks: dict[str, torch.Tensor] | None, steps: int, weight_decay: float, stop_after: str | None,
              run: Run | None, series: str, checkpoints: bool = False, stop_P: float | None = None,
              margin: int | None = None) -> GrokTracker:
    """Full-batch AdamW from the model's current weights (fresh optimizer), masks kept exactly zero."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(cfg.betas[0], cfg.betas[1]), eps=cfg.eps,
                            weight_decay=weight_decay)
    ms = attach(model, masks, optimizer=opt) if masks else None
    tracker = GrokTracker(data, names, every=cfg.eval_every, P=cfg.threshold, loss_fn=float64_cross_entropy,
                          checkpoint_every=cfg.checkpoint_every if checkpoints else None,
                          transition_acc=cfg.transition_acc if checkpoints else None, stop_after=stop_after,
                          run=run, series=series, margin=cfg.post_gen_margin if margin is None else margin,
                          stop_P=stop_P)
    fit(model, [(data[0], data[1])], opt, loss_fn=float64_cross_entropy, steps=steps, callbacks=[tracker],
        device=cfg.device, desc=series, run=run, series=series, stateful=())
    if ms is not None:
        ms.detach()
    return tracker


def run_seed(cfg: GrokkingTicketsConfig, seed: int, run: Run | None) -> dict[str, Any]:
    """All requested variants for one seed; returns per-variant metrics and histories."""
    from ..data import modular_arithmetic

    variants = cfg.variant_list()
    md = modular_arithmetic(cfg.p, cfg.op, cfg.frac_train, seed if cfg.data_seed is None else cfg.data_seed,
                            symmetric=cfg.symmetric, include_diagonal=cfg.include_diagonal)
    dev = cfg.device
    data = (md.train_pairs.to(dev), md.train_labels.to(dev), md.test_pairs.to(dev), md.test_labels.to(dev))
    torch.manual_seed(seed)
    model = build_model(cfg, md.num_classes).to(dev)
    names = list(prunable_params(model))
    theta0 = snapshot(model)
    k = cfg.pruning_rate
    out: dict[str, Any] = {"seed": seed, "split_hash": split_hash(md.train_pairs), "variants": {}}
    budget = {"steps": cfg.ticket_steps or cfg.steps}

    def record(name: str, tr: GrokTracker, cap: int, stopped_at: float | None, **extra: Any) -> None:
        """``stopped_at``: the accuracy an early stop ended the run at (None: no early stop)."""
        last = tr.history[-1]
        m = grokking_metrics(tr.history, cfg.threshold)
        t99 = grokking_metrics(tr.history, cfg.threshold_hi)["t_gen"]
        measured99 = t99 is not None or stopped_at is None or stopped_at >= cfg.threshold_hi or last["step"] >= cap
        out["variants"][name] = {**m, "t_gen99": t99, "t_gen99_measured": measured99,
                                 "final_train_acc": last["train_acc"], "final_test_acc": last["test_acc"],
                                 "final_l1": last["l1"], "final_l2": last["l2"], "steps_run": last["step"],
                                 "cap": cap, "capped": m["t_gen"] is None and last["step"] >= cap,
                                 "capped99": t99 is None and last["step"] >= cap,
                                 "history": tr.history, **extra}

    def train(name: str, masks: dict[str, torch.Tensor] | None, *, full: bool = False, wd: float | None = None,
              **extra: Any) -> TrainResult:
        if name == "dense":
            stop = None
            if cfg.ticket_source == "converged":
                stop, P, margin = "post_gen", cfg.threshold_hi, cfg.converge_margin
            elif cfg.early_stop and cfg.ticket_source in ("post_gen", "t_gen"):
                stop, P, margin = "post_gen", cfg.threshold, cfg.post_gen_margin
            else:
                P, margin = None, None
            steps = cfg.steps
        else:
            stop = "t_gen" if (cfg.early_stop and not full) else None
            P, margin, steps = cfg.early_stop_at, None, (cfg.ticket_steps or cfg.steps) if full else budget["steps"]
        tr = train_run(cfg, model, data, names, masks=masks, steps=steps, stop_after=stop, stop_P=P, margin=margin,
                       weight_decay=cfg.weight_decay if wd is None else wd, run=run, series=f"{name}/s{seed}",
                       checkpoints=name == "dense")
        stopped_at = (cfg.threshold if P is None else P) if stop == "t_gen" else None  # None P: stop at threshold
        record(name, tr, steps, stopped_at, **extra)
        return tr.result()

    def source(dense: TrainResult) -> int | str:
        """The dense checkpoint the ticket is scored at; also fixes the budget of every later run."""
        t_gen = dense.extra["t_gen"]
        at = {"post_gen": None if t_gen is None else t_gen + cfg.post_gen_margin, "t_gen": t_gen}
        key: int | str = "final"
        if cfg.ticket_source in at or cfg.ticket_source.isdigit():
            key = first_snapshot_at_or_after(dense, at.get(cfg.ticket_source) if not cfg.ticket_source.isdigit()
                                             else int(cfg.ticket_source))
        if cfg.budget_rel is not None and t_gen is not None:
            budget["steps"] = max(cfg.eval_every, min(budget["steps"], math.ceil(cfg.budget_rel * t_gen)))
        return key

    lot = lottery_ticket(model, lambda m, masks, stage: train("dense" if stage == "dense" else "ticket", masks),
                         sparsity=k, score_at=source, scope=cfg.scope, theta0=theta0, retrain="ticket" in variants)
    dense, mask = lot.dense, lot.masks
    key = dense.extra["scored_checkpoint"]
    out["ticket_source_step"] = dense.extra["final_step"] if key == "final" else key
    out["ticket_steps"] = budget["steps"]
    out["ticket_density_by_layer"] = density_by_layer(mask)
    if "ticket" in out["variants"]:
        out["variants"]["ticket"]["source_step"] = out["ticket_source_step"]
    dm = out["variants"]["dense"]
    src = dense.checkpoints[key]

    def ticket(name: str, masks: dict[str, torch.Tensor], **kw: Any) -> None:
        rewind(model, theta0, masks)
        train(name, masks, **kw)

    def from_step(name: str, step: int | None, **kw: Any) -> None:
        if step is not None and step > dense.extra["final_step"]:  # the dense run ended before: no such mask
            out.setdefault("skipped", {})[name] = f"step {step} is past the dense run's end ({dense.extra['final_step']})"
            return
        key = first_snapshot_at_or_after(dense, step)
        ticket(name, ticket_mask(dense.checkpoints[key], k, names=names, scope=cfg.scope),
               source_step=key if key != "final" else dense.extra["final_step"], **kw)

    if "ticket_mem" in variants:
        from_step("ticket_mem", dm["t_mem"] if cfg.mem_source == "t_mem" else int(cfg.mem_source))
    if "ticket_transition" in variants and "transition" in dense.checkpoints:
        ticket("ticket_transition", ticket_mask(dense.checkpoints["transition"], k, names=names, scope=cfg.scope),
               source_step=dense.extra["transition_step"])
    for p_norm, name in ((1, "dense_l1"), (2, "dense_l2")):
        if name in variants:
            theta_p, r = norm_matched_init(theta0, mask, p_norm)
            rewind(model, theta_p)
            train(name, None, norm_ratio=r)
    for meth in (v for v in variants if v in (*METHODS.names(family="scorer"), *EXTRA_PAI)):
        rewind(model, theta0 if cfg.pai_score_at == "init" else dense.checkpoints["final"])
        opts = {"seed": seed, "temperature": cfg.grasp_temperature, "rounds": cfg.synflow_rounds}
        if meth == "synflow_repo":  # the authors' code: one round, scored on the real training batch
            opts.update(rounds=1, input="batch")
        pm = prune_global(model, "synflow" if meth == "synflow_repo" else meth, k, batch=(data[0], data[1]),
                          scope=cfg.scope, options=opts)
        out.setdefault("pai_density_by_layer", {})[meth] = density_by_layer(pm)
        ticket(meth, pm)
    if "timing" in variants:
        for tag, mult in TIMING.items():
            at = {"t_mem": dm["t_mem"], "transition": dense.extra.get("transition_step")}.get(tag)
            if mult is not None:
                at = None if dm["t_gen"] is None else int(mult * dm["t_gen"])
            if tag == "transition" and "transition" in dense.checkpoints:  # the snapshot taken at the transition
                ticket("ticket_at_transition", ticket_mask(dense.checkpoints["transition"], k, names=names,
                                                            scope=cfg.scope), source_step=at)
            elif at is not None:
                from_step(f"ticket_at_{tag}", at)
    if "sweep" in variants:
        for rate in cfg.sweep_rates:
            ticket(f"sweep_k{rate:g}", ticket_mask(src, rate, names=names, scope=cfg.scope), rate=rate,
                   source_step=out["ticket_source_step"])
    if "nowd" in variants:  # a controlled experiment: everything at wd 0, full budget
        rewind(model, theta0)
        train("dense_nowd", None, full=True, wd=0.0)
        for rate in cfg.nowd_rates:
            ticket(f"ticket_nowd_k{rate:g}", ticket_mask(src, rate, names=names, scope=cfg.scope), full=True,
                   wd=0.0, rate=rate, source_step=out["ticket_source_step"])
            rewind(model, theta0)
            rnd = prune_global(model, "random", rate, scope=cfg.scope, options={"seed": seed})
            ticket(f"random_nowd_k{rate:g}", rnd, full=True, wd=0.0, rate=rate)
    return out


def _figures(cfg: GrokkingTicketsConfig, results: list[dict[str, Any]], run: Run) -> None:
    r0 = results[0]
    curves = {v: x["history"] for v, x in r0["variants"].items() if not v.startswith(("sweep_", "ticket_at_"))}
    run.save_figure(accuracy_curves_figure(curves, threshold=cfg.threshold, linthresh=cfg.eval_every,
                                           title=f"seed {r0['seed']}, k={cfg.pruning_rate}"), "accuracy_curves",
                    caption="Train (dashed) and test (solid) accuracy per variant, first seed.")
    names = [v for v in r0["variants"] if not v.startswith("sweep_")]
    per = {v: [r["variants"][v]["t_gen"] for r in results if v in r["variants"]] for v in names}
    caps = {v: max(r["variants"][v]["cap"] for r in results if v in r["variants"]) for v in names}
    run.save_figure(t_gen_figure(per, caps, threshold=cfg.threshold), "t_gen_per_variant",
                    caption="Median t_gen per variant (dots: seeds); hatched: not reached within the run's cap.")
    sweep = sorted((float(v[len("sweep_k"):]), v) for v in r0["variants"] if v.startswith("sweep_k"))
    if sweep:
        med = {key: [median_steps([r["variants"][v][key] for r in results]) for _, v in sweep]
               for key in ("t_gen", "t_mem")}
        run.save_figure(rate_figure([a for a, _ in sweep], med["t_gen"], med["t_mem"], cap=max(caps.values()),
                                    dense_t_gen=median_steps(per.get("dense", []))), "t_gen_vs_rate",
                        caption="Median t_gen and t_mem of tickets vs the pruning rate k.")


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
                  "budget_rel": 1.0, "variants": "dense,ticket,dense_l2,random,snip"},
        "paper": {"seeds": (1, 2, 3)},
    },
    help="Grokking tickets: lottery tickets vs dense / norm-matched / pruning-at-init on modular addition",
    claim=("A magnitude-pruned, rewound subnetwork of the generalised network (a grokking ticket) generalises "
           "several times sooner than the dense network, sooner than norm-matched dense networks, while masks "
           "chosen at initialisation do not accelerate."),
    headline=("speedup_ticket_vs_dense", "t_gen/dense", "t_gen/ticket", "t_gen/dense_l2", "t_gen/random", "t_gen/snip"),
    goal="speedup_ticket_vs_dense >= 2",
    goal_text="the ticket reaches 95% test accuracy at least twice as fast as dense (paper: ~4x at 97%)",
    key_figure="t_gen_per_variant",
    paper={"speedup_ticket_vs_dense": "≈ 4 (to 97% test accuracy)"},
    paper_note="MLP 500/48, p = 67, 40% train, k = 0.6 (the paper's Fig. 1, read by eye)",
)
def run(cfg: GrokkingTicketsConfig, run: Run) -> dict[str, Any]:
    seeds = list(cfg.seeds) or [cfg.seed]
    results = [run.cached(f"seed{s}", lambda s=s: run_seed(cfg, s, run)) for s in seeds]
    variants = list(dict.fromkeys(v for r in results for v in r["variants"]))  # ticket_transition may be absent
    rows, summary = [], {}
    for v in variants:
        vals = [r["variants"][v] for r in results if v in r["variants"]]
        for key in ("t_gen", "t_mem", "tau"):
            summary[f"{key}/{v}"] = median_steps([x[key] for x in vals])
        # t_gen@hi only where it was measured (a run stopped early below threshold_hi never saw it)
        measured = all(x.get("t_gen99_measured", True) for x in vals)
        summary[f"t_gen99/{v}"] = median_steps([x["t_gen99"] for x in vals]) if measured else None
        summary[f"t_gen99_measured/{v}"] = measured
        summary[f"final_test_acc/{v}"] = statistics.median(x["final_test_acc"] for x in vals)
        summary[f"reached/{v}"] = sum(x["t_gen"] is not None for x in vals) / len(vals)
        summary[f"cap/{v}"] = max(x["cap"] for x in vals)
        summary[f"steps_run/{v}"] = [x["steps_run"] for x in vals]
        summary[f"capped/{v}"] = sum(bool(x["capped"]) for x in vals)
        # stage records written before ``capped99`` existed: the same rule from their stored fields
        summary[f"capped99/{v}"] = sum(bool(x.get("capped99", x["t_gen99"] is None and x["steps_run"] >= x["cap"]))
                                       for x in vals)
        if any("source_step" in x for x in vals):
            summary[f"source_step/{v}"] = [x.get("source_step") for x in vals]
        rows += [{"variant": v, "seed": r["seed"], **{k: r["variants"][v].get(k) for k in (
            "t_mem", "t_gen", "t_gen99", "tau", "final_test_acc", "steps_run", "cap", "capped", "capped99",
            "source_step", "norm_ratio")}}
            for r in results if v in r["variants"]]
    run.save_table("per_seed", rows, caption="t_mem / t_gen: first eval step with accuracy >= P; None with capped=True: "
                   "not reached within the cap (steps_run), None otherwise: not reached in the full budget; "
                   "capped99 the same at the higher threshold; source_step: the dense step the mask was taken at.")
    _figures(cfg, results, run)
    d, t = summary.get("t_gen/dense"), summary.get("t_gen/ticket")
    summary["speedup_ticket_vs_dense"] = (d / t) if (d is not None and t) else None
    ratios = [r["variants"]["dense"]["t_gen"] / r["variants"]["ticket"]["t_gen"] for r in results
              if "ticket" in r["variants"] and r["variants"]["ticket"]["t_gen"] and r["variants"]["dense"]["t_gen"]]
    summary["speedup_per_seed"] = ratios
    for v in ("dense_l1", "dense_l2"):
        if v in variants:
            summary[f"norm_ratio/{v}"] = statistics.median(r["variants"][v]["norm_ratio"] for r in results)
    skipped = {n: why for r in results for n, why in r.get("skipped", {}).items()}
    if skipped:
        summary["skipped"] = skipped
    summary.update(ticket_source_step=[r["ticket_source_step"] for r in results],
                   split_hash=[r["split_hash"] for r in results], seeds=seeds, pruning_rate=cfg.pruning_rate,
                   variants=variants)
    return summary
