"""Recipe ``wgsef``: k-level structured sparsity with the weighted group sparse envelope.

Paper: "Learning k-Level Structured Sparse Neural Networks Using Group Envelope Regularization",
Y. Refael, I. Arbel, W. Huleihel, arXiv:2212.12921. Claims: a preset number k of groups per layer survives
at convergence, with negligible accuracy loss, and the compacted network runs faster; higher group sparsity
than group lasso at competitive accuracy.

Objectives (which one the paper trains is a reconstruction, so both run, labelled):
    ``wgsef`` (exact k-level variant):  L(θ) + Σ_l λ_l (WGSEF_{k_l}(θ_l) − ½‖w ⊙ z(θ_l)‖²)
    ``wgsef_envelope`` (the literal envelope):  L(θ) + Σ_l λ_l WGSEF_{k_l}(θ_l),  WGSEF_k(θ) = s_k(w ⊙ z(θ)),
trained by proximal SGD: base SGD-momentum step, then θ_l ← prox_{γ R_l}(θ_l) with γ = η_t λ_l ρ_t
(ρ_t: :func:`sparseforge.optim.linear_ramp`). With momentum μ the base step moves a weight by about
η/(1 − μ) per unit gradient while the prox step is η λ: ``prox_step="momentum"`` uses the consistent
γ = η λ ρ_t / (1 − μ).

Fair comparison: every regularized method (both objectives and the group-lasso baseline) trains for the same
``epochs``, then gets the same final projection to exactly k_l groups per layer by its own group norms
(:func:`sparseforge.optim.project_to_counts_`) and the same masked fine-tune (``finetune_epochs``); the group
lasso's λ is calibrated (:func:`sparseforge.optim.calibrate_strength`) so that its own natural group sparsity
comes closest to the target. The dense reference trains the same ``epochs`` plus ``finetune_epochs`` at the
fine-tune LR, the same budget. Each method's own measured group sparsity before and after the projection is
reported; so are the layers that reached exactly k_l groups by the prox alone, and those it over-pruned
(fewer than k_l alive; the projection cannot revive them).

Targets (:func:`sparseforge.targeting.structured_targets`): every Conv2d/Linear except the classifier,
grouped convs and residual-joined convs; the bias and a following BN's γ/β are in each filter's group.

Defaults for digits (reconstructed defaults): SGD momentum 0.9, lr 0.05 cosine, batch 64, λ_exact =
0.5/lr, λ_envelope = 5e-4, target group sparsity 0.5, a 20% dense warm-up before the λ ramp.

Presets (measured on a 2-core machine): ``smoke`` ≈ 6 s, ``quick`` ≈ 50 s. ``paper``: VGG-16 on CIFAR-10
(``--set data_dir=PATH allow_pickle=true``), 200 epochs, lr 0.1, batch 128; also ``--set model=resnet18`` /
``model=mobilenet_v1``, or ``--set model=lenet5 dataset=fashion_mnist data_dir=PATH``. Hours on a GPU.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from .. import masks as M
from ..config import RecipeConfig
from ..engine import Run
from ..errors import ConfigError, UserError
from ..groups import GROUPINGS
from ..models import create_model
from ..optim import (
    ProximalOptimizer,
    build_prox_map,
    calibrate_strength,
    layer_group_stats,
    linear_ramp,
    overall_group_sparsity,
    project_to_counts_,
    weight_decay_groups,
)
from ..targeting import structured_targets
from . import recipe
from ._common import (
    accuracy,
    curves_figure,
    load_classification,
    measure_dense_vs_compact,
    model_kwargs_for,
    train_classifier,
)

OBJECTIVES = {"exact": "wgsef", "envelope": "wgsef_envelope"}


@dataclass
class WgsefConfig(RecipeConfig):
    """Configuration of the ``wgsef`` recipe.

    Attributes:
        model: registered image model (``lenet5``, ``digits_cnn``, ``vgg16``, ``resnet18``, ``mobilenet_v1``).
        dataset: ``digits`` (built in), ``mnist`` / ``fashion_mnist`` (IDX files in ``data_dir``), ``cifar10``.
        data_dir: folder of a user dataset.
        allow_pickle: CIFAR-10 pickles execute code when loaded: set only for trusted files.
        grouping: ``filter`` (default; = ``row`` for Linear), ``channel``, ``shape``, ``layer``, ``element`` ...
        target_group_sparsity: fraction of groups removed per layer; k_l = max(1, round((1 − s)·m_l)).
        objectives: which WGSEF objectives to train: ``exact`` (series ``wgsef``) and/or ``envelope``.
        lam: λ of the exact objective; None = 0.5/lr (reconstructed default).
        lam_envelope: λ of the envelope objective (reconstructed default 5e-4).
        ramp_frac: fraction of the training steps over which ρ_t ramps linearly from 0 to 1.
        warmup_frac: fraction of the steps trained dense (ρ = 0) before the ramp starts (reconstructed default
            0.2: on a random init the exact penalty acts like weight decay λ(m/k − 1) on every group).
        group_weights: ``none`` (reconstructed default), ``sqrt_size`` or ``flops``: weigh each layer's λ by the
            cost of one of its groups relative to the costliest layer.
        prox_step: ``lr`` (γ = η λ ρ_t) or ``momentum`` (γ = η λ ρ_t / (1 − μ), consistent with SGD momentum).
        include_coupled: bias and following BN γ/β in each filter/row group.
        reset_momentum_on_prune: zero the momentum of just-zeroed entries.
        kernel: ``select`` (linear time) or ``sort``.
        epochs / lr / batch_size / weight_decay / momentum: training of every method (cosine LR schedule).
        finetune_epochs / finetune_lr_scale: the masked fine-tune every regularized method gets after the
            projection (lr × scale).
        gl_match: ``search`` (λ calibration) or ``project`` (train once at ``gl_lambda``); both are projected.
        gl_lambda: group-lasso λ (start of the search, or the value used by ``project``).
        gl_search_steps: number of group-lasso trainings in the calibration search.
        gl_epochs: epochs of each group-lasso training (None: ``epochs``, the same budget as WGSEF).
        latency_batch / latency_repeats: latency measurement (median of repeats, interleaved).
        threads: intra-op CPU threads (1 for the digits runs; the paper preset uses PyTorch's default).
    """

    file_datasets: ClassVar[tuple[str, ...]] = ("mnist", "fashion_mnist", "cifar10")
    limits: ClassVar[dict[str, Any]] = {"gl_search_steps": (1, 50), "latency_repeats": (1, 10_000)}

    model: str = "lenet5"
    dataset: str = "digits"
    data_dir: str | None = None
    allow_pickle: bool = False
    grouping: str = "filter"
    target_group_sparsity: float = 0.5
    objectives: tuple[str, ...] = ("exact", "envelope")
    lam: float | None = None
    lam_envelope: float = 5e-4
    ramp_frac: float = 0.3
    warmup_frac: float = 0.2
    group_weights: Literal["none", "sqrt_size", "flops"] = "none"
    prox_step: Literal["lr", "momentum"] = "lr"
    include_coupled: bool = True
    reset_momentum_on_prune: bool = True
    kernel: Literal["select", "sort"] = "select"
    epochs: int = 30
    lr: float = 0.05
    batch_size: int = 64
    weight_decay: float = 5e-4
    momentum: float = 0.9
    finetune_epochs: int = 4
    finetune_lr_scale: float = 0.2
    gl_match: Literal["search", "project"] = "search"
    gl_lambda: float = 0.1
    gl_search_steps: int = 3
    gl_epochs: int | None = None
    latency_batch: int = 64
    latency_repeats: int = 30
    threads: int | None = 1  # tiny digits models run ~10-100x faster on one thread on a shared CPU

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.grouping not in GROUPINGS:
            raise ConfigError(f"grouping must be one of {', '.join(GROUPINGS)}, got {self.grouping!r}")
        if not 0.0 <= self.target_group_sparsity < 1.0:
            raise ConfigError(f"target_group_sparsity must be in [0, 1), got {self.target_group_sparsity}")
        bad = [o for o in self.objectives if o not in OBJECTIVES]
        if bad or not self.objectives:
            raise ConfigError(f"objectives must be a non-empty subset of {', '.join(OBJECTIVES)}, got {bad or 'none'}")
        if (self.lam is not None and self.lam < 0) or self.lam_envelope < 0:
            raise ConfigError("lam and lam_envelope must be >= 0")
        if self.epochs < 1 or (self.gl_epochs is not None and self.gl_epochs < 1) or self.finetune_epochs < 0:
            raise ConfigError("epochs and gl_epochs must be >= 1, finetune_epochs >= 0")
        if self.lr <= 0 or self.gl_lambda <= 0 or self.finetune_lr_scale <= 0:
            raise ConfigError("lr, gl_lambda and finetune_lr_scale must be > 0")
        if not (0.0 <= self.ramp_frac <= 1.0 and 0.0 <= self.warmup_frac <= 1.0):
            raise ConfigError(f"ramp_frac and warmup_frac must be in [0, 1], got {self.ramp_frac}, {self.warmup_frac}")
        if self.gl_search_steps < 1:
            raise ConfigError("gl_search_steps must be >= 1")


PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {"epochs": 3, "gl_search_steps": 1, "finetune_epochs": 1, "latency_repeats": 5},
    "quick": {"epochs": 24, "gl_search_steps": 4},
    "paper": {"threads": None, "model": "vgg16", "dataset": "cifar10", "epochs": 200, "lr": 0.1, "batch_size": 128,
              "gl_search_steps": 4, "finetune_epochs": 20, "latency_repeats": 50},
}


@recipe(
    "wgsef",
    config=WgsefConfig,
    presets=PRESETS,
    help="LeNet-5 on digits: k-level filter sparsity with the group sparse envelope (WGSEF) vs group lasso, compacted",
    claim=("WGSEF reaches a preset number k of groups per layer at convergence, loses little accuracy, gets more "
           "group sparsity than group lasso at competitive accuracy, and the compacted network runs faster."),
    headline=("acc/dense", "acc/wgsef", "layers_at_k_before_projection/wgsef", "acc/group_lasso",
              "groups_removed_before_projection/group_lasso", "latency_speedup/wgsef"),
    goal="acc/wgsef >= acc/dense - 0.01 and acc/wgsef >= acc/group_lasso and latency_speedup/wgsef > 1",
    goal_text="WGSEF within 1 point of dense, at least group lasso's accuracy, and faster after compaction",
    key_figure="layer_group_sparsity",
    paper={"acc/wgsef": "≈ dense (negligible drop)"},
    paper_note="the paper's claims (abstract); its tables could not be read",
)
def run(cfg: WgsefConfig, run: Run) -> dict:
    data = load_classification(cfg.dataset, cfg.data_dir, allow_pickle=cfg.allow_pickle, seed=cfg.seed)
    kw = model_kwargs_for(data, cfg.model)
    augment = None
    if cfg.dataset == "cifar10":
        from ..data.cifar import random_crop_flip

        augment = lambda x, g: random_crop_flip(x, generator=g)  # noqa: E731
    keep_frac = 1.0 - cfg.target_group_sparsity
    steps_per_epoch = math.ceil(int(data.x_train.shape[0]) / cfg.batch_size)
    train_kw = dict(batch_size=cfg.batch_size, seed=cfg.seed, run=run, device=cfg.device, augment=augment)
    example = data.x_test[: cfg.latency_batch].to(cfg.device)

    def fresh() -> nn.Module:
        torch.manual_seed(cfg.seed)
        return create_model(cfg.model, **kw).to(cfg.device)

    targets = structured_targets(fresh(), example_inputs=example)
    lam = {"exact": cfg.lam if cfg.lam is not None else 0.5 / cfg.lr, "envelope": cfg.lam_envelope}

    def train_prox(method: str, weight: float, epochs: int, series: str, **opts: Any) -> dict:
        model = fresh()
        prox_map = build_prox_map(model, method, weight=weight, targets=targets, grouping=cfg.grouping,
                                  include_coupled=cfg.include_coupled, group_weights=cfg.group_weights,
                                  example_inputs=example, **opts)
        base = torch.optim.SGD(weight_decay_groups(model, prox_map, cfg.weight_decay), lr=cfg.lr, momentum=cfg.momentum)
        ramp = linear_ramp(epochs * steps_per_epoch, cfg.ramp_frac, cfg.warmup_frac)
        opt = ProximalOptimizer(base, prox_map, weight_schedule=ramp, reset_momentum_on_prune=cfg.reset_momentum_on_prune,
                                prox_step=cfg.prox_step)
        res = train_classifier(model, data, epochs=epochs, lr=cfg.lr, optimizer=opt, series=series, **train_kw)
        return {"model": model, "prox_map": prox_map, "before": layer_group_stats(prox_map), "acc_before": res["test_acc"]}

    def project_and_finetune(out: dict, series: str) -> dict:
        """The same end for every method: exactly k_l groups per layer by its own norms, then a masked fine-tune."""
        model, pm = out["model"], out["prox_map"]
        counts = [r["k"] if r["k"] is not None else max(1, round(keep_frac * r["groups"])) for r in out["before"]]
        project_to_counts_(pm, counts)
        after = layer_group_stats(pm)
        acc_projected = accuracy(model, data, cfg.device)
        if cfg.finetune_epochs > 0:
            ft_lr = cfg.lr * cfg.finetune_lr_scale
            opt = torch.optim.SGD(model.parameters(), lr=ft_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
            ms = M.attach(model, pm.masks(), opt)
            train_classifier(model, data, epochs=cfg.finetune_epochs, lr=ft_lr, optimizer=opt, series=series, **train_kw)
            ms.bake()
        return {"state": model.state_dict(), "before": out["before"], "after": after, "counts": counts,
                "acc_before": out["acc_before"],
                "acc_projected": acc_projected, "acc": accuracy(model, data, cfg.device)}

    def dense_stage() -> dict:
        """The same budget as every regularized method: ``epochs``, then ``finetune_epochs`` at the fine-tune LR."""
        model = fresh()
        res = train_classifier(model, data, epochs=cfg.epochs, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay, series="dense", **train_kw)
        if cfg.finetune_epochs > 0:
            ft_lr = cfg.lr * cfg.finetune_lr_scale
            opt = torch.optim.SGD(model.parameters(), lr=ft_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
            res = train_classifier(model, data, epochs=cfg.finetune_epochs, lr=ft_lr, optimizer=opt,
                                   series="dense_finetune", **train_kw)
        return {"state": model.state_dict(), "acc": res["test_acc"]}

    def wgsef_stage(objective: str) -> dict:
        name = OBJECTIVES[objective]
        out = train_prox("wgsef", lam[objective], cfg.epochs, name, k=keep_frac if keep_frac < 1 else 1.0,
                         exact=objective == "exact", kernel=cfg.kernel)
        return {**project_and_finetune(out, f"{name}_finetune"), "lambda": lam[objective]}

    def gl_stage() -> dict:
        n = cfg.gl_search_steps if cfg.gl_match == "search" else 1

        def train(weight: float, i: int) -> tuple[float, dict]:
            out = train_prox("group_lasso", weight, cfg.gl_epochs or cfg.epochs, f"group_lasso_{i}" if n > 1 else "group_lasso")
            return overall_group_sparsity(out["before"]), out

        best = calibrate_strength(train, cfg.target_group_sparsity, start=cfg.gl_lambda, steps=n,
                                  record=lambda r: {"acc_before_projection": r["acc_before"]})
        return {**project_and_finetune(best.result, "group_lasso_finetune"), "lambda": best.weight, "trials": best.trials}

    dense_res = run.cached("dense", dense_stage)
    results = {OBJECTIVES[o]: run.cached(OBJECTIVES[o], lambda o=o: wgsef_stage(o)) for o in cfg.objectives}
    results["group_lasso"] = run.cached("group_lasso", gl_stage)

    dense = fresh()
    dense.load_state_dict(dense_res["state"])
    summary: dict[str, Any] = {"acc/dense": dense_res["acc"], "target_group_sparsity": cfg.target_group_sparsity,
                               "grouping": cfg.grouping, "latency_batch": int(example.shape[0])}
    table = [{"method": "dense", "accuracy": dense_res["acc"]}]
    for v, r in results.items():
        sparse = fresh()
        sparse.load_state_dict(r["state"])
        meas = _measure(dense, sparse, example, cfg.latency_repeats)
        small = meas.pop("_compact_model", None)
        counts = r.get("counts") or [b["k"] or a["nonzero_groups"] for b, a in zip(r["before"], r["after"])]
        at_k = [b["nonzero_groups"] == c for b, c in zip(r["before"], counts)]  # exactly k_l groups alive
        below_k = [b["nonzero_groups"] < c for b, c in zip(r["before"], counts)]  # over-pruned: fewer than k_l
        summary.update({
            f"acc/{v}": r["acc"],
            f"acc_before_projection/{v}": r["acc_before"],
            f"acc_before_finetune/{v}": r["acc_projected"],
            f"acc_drop/{v}": round(100.0 * (dense_res["acc"] - r["acc"]), 3),
            f"lambda/{v}": r["lambda"],
            f"groups_removed_before_projection/{v}": overall_group_sparsity(r["before"]),
            f"groups_removed/{v}": overall_group_sparsity(r["after"]),
            f"layers_at_k_before_projection/{v}": f"{sum(at_k)}/{len(at_k)}",
            f"layers_below_k_before_projection/{v}": f"{sum(below_k)}/{len(below_k)}",
            f"compact_acc/{v}": accuracy(small, data, cfg.device) if small is not None else None,
        })
        for key, src in (("params_compact", "params_compact"), ("compression_ratio", "params_reduction"),
                         ("flops_compact", "flops_compact"), ("flops_reduction", "flops_reduction"),
                         ("latency_ms", "latency_ms_compact"), ("latency_speedup", "latency_speedup"),
                         ("compact_max_abs_diff", "compact_max_abs_diff")):
            summary[f"{key}/{v}"] = meas.get(src)
        for key in ("params_dense", "flops_dense", "latency_ms_dense"):
            summary.setdefault(key.replace("_dense", "/dense"), meas.get(key))
        table.append({"method": v, "lambda": r["lambda"], "groups_removed_before_projection":
                      summary[f"groups_removed_before_projection/{v}"], "groups_removed": summary[f"groups_removed/{v}"],
                      "acc_before_projection": r["acc_before"], "acc_projected": r["acc_projected"],
                      "accuracy": r["acc"], "params": meas.get("params_compact"), "flops": meas.get("flops_compact"),
                      "latency_ms": meas.get("latency_ms_compact")})
        run.save_table(f"{v} layers", [{**a, "nonzero_before_projection": b["nonzero_groups"]}
                                        for a, b in zip(r["after"], r["before"])],
                       caption=f"{v}: k = groups kept per layer; non-zero groups before and after the final projection")
    table[0].update(params=summary.get("params/dense"), flops=summary.get("flops/dense"),
                    latency_ms=summary.get("latency_ms/dense"))
    run.save_table("methods", table, caption=(
        f"same {cfg.epochs} epochs, projection to k per layer and {cfg.finetune_epochs}-epoch masked fine-tune for every "
        f"regularized method; latency: median of {cfg.latency_repeats} interleaved runs at batch {example.shape[0]}"))
    run.save_table("group lasso calibration", results["group_lasso"]["trials"],
                   caption="natural (pre-projection) group sparsity per λ; the closest to the target is projected")
    run.save_figure(_sparsity_bars(results), "layer_group_sparsity",
                    f"per-layer {cfg.grouping} sparsity each method reached on its own (before the projection); "
                    f"target {cfg.target_group_sparsity:.0%}")
    run.save_figure(curves_figure(run, "test_acc", xkey="epoch"), "accuracy_curves", "test accuracy per epoch")
    if cfg.grouping in ("filter", "row") and "wgsef" in results:
        summary["filters_removed_frac"] = summary["groups_removed/wgsef"]
    return summary


def _measure(dense: nn.Module, sparse: nn.Module, example: torch.Tensor, repeats: int) -> dict[str, Any]:
    try:
        return measure_dense_vs_compact(copy.deepcopy(dense), copy.deepcopy(sparse), example, repeats=repeats)
    except UserError as e:  # e.g. a grouping whose zeros cannot be physically removed by this model's graph
        warnings.warn(f"wgsef: compaction skipped: {e}", stacklevel=2)
        return {}


def _sparsity_bars(results: dict[str, dict]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(results.values()))
    names = [r["layer"] for r in first["after"]]
    x = list(range(len(names)))
    w = 0.8 / len(results)
    fig, ax = plt.subplots(figsize=(max(4.5, 0.9 * len(names) + 2.5), 3.4))
    for i, (v, r) in enumerate(results.items()):
        ax.bar([j - 0.4 + (i + 0.5) * w for j in x], [b["group_sparsity"] for b in r["before"]], width=w, label=v)
    ax.plot(x, [1 - a["k"] / a["groups"] if a["k"] else 1 - a["nonzero_groups"] / a["groups"] for a in first["after"]],
            "k_", ms=24, mew=2, label="target 1 − k/m")
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("group sparsity before projection")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig
