"""Recipe ``wgsef``: k-level structured sparsity with the weighted group sparse envelope.

Paper: "Learning k-Level Structured Sparse Neural Networks Using Group Envelope Regularization",
Y. Refael, I. Arbel, W. Huleihel, arXiv:2212.12921.

Objective (``exact=True``, reconstructed default: the exact k-level variant of the regularizer):
    min_θ  L(θ) + Σ_l λ_l · ( WGSEF_{k_l}(θ_l) − ½‖w ⊙ z(θ_l)‖² ),   WGSEF_k(θ) = s_k(w ⊙ z(θ)),
trained by proximal SGD: base SGD-momentum step, then θ_l ← prox_{γ R_l}(θ_l) with γ = η_t λ_l ρ_t
(ρ_t: :func:`sparseforge.optim.linear_ramp`). ``exact=False`` trains the literal envelope L + Σ λ_l WGSEF_{k_l}.

Stages (each cached with ``run.cached``, so ``--resume`` skips finished ones):

1. ``dense``: the same training without a regularizer (weight decay on all parameters).
2. ``wgsef``: proximal training with k_l = max(1, round((1 − target_group_sparsity)·m_l)) per target layer
   (:func:`sparseforge.targeting.structured_targets`: every Conv2d/Linear except the classifier, grouped
   convs and residual-joined convs; the bias and a following BN's γ/β are in each filter's group). Weight
   decay only on non-regularized tensors. The non-zero group count per layer is recorded *before* the
   final top-k projection (the "k-level at convergence" claim), then the projection is applied.
3. ``group_lasso``: the group-lasso baseline matched to the same group sparsity by a calibration search over
   its λ (:func:`sparseforge.optim.calibrate_strength` on the natural group sparsity), then a final top-k
   projection to exactly the same per-layer counts (``gl_match="search"``; ``"project"`` only projects).
4. Compaction (:func:`sparseforge.compact`) of both sparse models and measurement of parameters, FLOPs
   and CPU latency (interleaved medians, batch ``latency_batch``) against the dense model.

Defaults for digits (reconstructed defaults): SGD momentum 0.9, lr 0.05 cosine, batch 64,
λ_exact = 0.5/lr, λ_envelope = 5e-4, target group sparsity 0.5, a 20% dense warm-up before the λ ramp.

Presets (measured on a 2-core machine): ``smoke`` ≈ 5 s, ``quick`` ≈ 40 s. ``paper``: VGG-16 on CIFAR-10
(``--set data_dir=PATH allow_pickle=true``), 200 epochs, lr 0.1, batch 128; also ``--set model=resnet18`` /
``model=mobilenet_v1``, or ``--set model=lenet5 dataset=fashion_mnist data_dir=PATH``. Hours on a GPU.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

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
    project_top_k_,
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
        exact: True: the exact k-level penalty (reconstructed default); False: the envelope.
        lam: λ for every regularized layer; None = 0.5/lr (exact) or 5e-4 (envelope) (reconstructed defaults).
        ramp_frac: fraction of the training steps over which ρ_t ramps linearly from 0 to 1.
        warmup_frac: fraction of the steps trained dense (ρ = 0) before the ramp starts (reconstructed default
            0.2: on a random init the exact penalty acts like weight decay λ(m/k − 1) on every group and
            collapses small nets).
        group_weights: ``none`` (reconstructed default) or ``sqrt_size``.
        include_coupled: bias and following BN γ/β in each filter/row group.
        final_projection: keep exactly the top-k groups per layer at the end.
        reset_momentum_on_prune: zero the momentum of just-zeroed entries.
        kernel: ``select`` (linear time) or ``sort``.
        epochs / lr / batch_size / weight_decay / momentum: training (cosine LR schedule).
        gl_match: ``search`` (λ calibration then top-k projection) or ``project`` (projection only).
        gl_lambda: group-lasso λ (start of the search, or the value used by ``project``).
        gl_search_steps: number of group-lasso trainings in the calibration search.
        gl_epochs: epochs of each group-lasso training (None: ``epochs``).
        latency_batch / latency_repeats: latency measurement (median of repeats, interleaved).
        threads: intra-op CPU threads (1 for the digits runs; the paper preset uses PyTorch's default).
    """

    model: str = "lenet5"
    dataset: str = "digits"
    data_dir: str | None = None
    allow_pickle: bool = False
    grouping: str = "filter"
    target_group_sparsity: float = 0.5
    exact: bool = True
    lam: float | None = None
    ramp_frac: float = 0.3
    warmup_frac: float = 0.2
    group_weights: Literal["none", "sqrt_size"] = "none"
    include_coupled: bool = True
    final_projection: bool = True
    reset_momentum_on_prune: bool = True
    kernel: Literal["select", "sort"] = "select"
    epochs: int = 30
    lr: float = 0.05
    batch_size: int = 64
    weight_decay: float = 5e-4
    momentum: float = 0.9
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
        if self.lam is not None and self.lam < 0:
            raise ConfigError(f"lam must be >= 0, got {self.lam}")
        if self.epochs < 1 or (self.gl_epochs is not None and self.gl_epochs < 1):
            raise ConfigError("epochs and gl_epochs must be >= 1")
        if self.lr <= 0 or self.gl_lambda <= 0:
            raise ConfigError("lr and gl_lambda must be > 0")
        if not 0.0 <= self.ramp_frac <= 1.0:
            raise ConfigError(f"ramp_frac must be in [0, 1], got {self.ramp_frac}")
        if self.gl_search_steps < 1:
            raise ConfigError("gl_search_steps must be >= 1")


PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {"epochs": 3, "gl_search_steps": 1, "latency_repeats": 5},
    "quick": {"epochs": 24, "gl_search_steps": 4, "gl_epochs": 16},
    "paper": {"threads": None, "model": "vgg16", "dataset": "cifar10", "epochs": 200, "lr": 0.1, "batch_size": 128,
              "gl_search_steps": 4, "latency_repeats": 50},
}


@recipe(
    "wgsef",
    config=WgsefConfig,
    presets=PRESETS,
    help="LeNet-5 on digits: k-level filter sparsity with the group sparse envelope (WGSEF) vs group lasso, compacted",
    headline=("dense_acc", "wgsef_acc", "acc_drop", "groups_removed_frac", "latency_speedup", "group_lasso_acc"),
)
def run(cfg: WgsefConfig, run: Run) -> dict:
    data = load_classification(cfg.dataset, cfg.data_dir, allow_pickle=cfg.allow_pickle, seed=cfg.seed)
    kw = model_kwargs_for(data, cfg.model)
    augment = None
    if cfg.dataset == "cifar10":
        from ..data.cifar import random_crop_flip

        augment = lambda x, g: random_crop_flip(x, generator=g)  # noqa: E731
    lam = cfg.lam if cfg.lam is not None else (0.5 / cfg.lr if cfg.exact else 5e-4)
    keep_frac = 1.0 - cfg.target_group_sparsity
    steps_per_epoch = math.ceil(int(data.x_train.shape[0]) / cfg.batch_size)
    train_kw = dict(batch_size=cfg.batch_size, seed=cfg.seed, run=run, device=cfg.device, augment=augment)
    example = data.x_test[: cfg.latency_batch].to(cfg.device)

    def fresh() -> nn.Module:
        torch.manual_seed(cfg.seed)
        return create_model(cfg.model, **kw).to(cfg.device)

    targets = structured_targets(fresh(), example_inputs=example)
    prox_opts = {"wgsef": dict(k=keep_frac if keep_frac < 1 else 1.0, exact=cfg.exact, kernel=cfg.kernel),
                 "group_lasso": {}}

    def proximal_train(model: nn.Module, method: str, weight: float, epochs: int, series: str) -> dict:
        prox_map = build_prox_map(model, method, weight=weight, targets=targets, grouping=cfg.grouping,
                                  include_coupled=cfg.include_coupled, group_weights=cfg.group_weights,
                                  **prox_opts[method])
        base = torch.optim.SGD(weight_decay_groups(model, prox_map, cfg.weight_decay), lr=cfg.lr, momentum=cfg.momentum)
        ramp = linear_ramp(epochs * steps_per_epoch, cfg.ramp_frac, cfg.warmup_frac)
        opt = ProximalOptimizer(base, prox_map, weight_schedule=ramp, reset_momentum_on_prune=cfg.reset_momentum_on_prune)
        res = train_classifier(model, data, epochs=epochs, lr=cfg.lr, optimizer=opt, series=series, **train_kw)
        return {"prox_map": prox_map, "before": layer_group_stats(prox_map), "acc_before": res["test_acc"]}

    def dense_stage() -> dict:
        model = fresh()
        res = train_classifier(model, data, epochs=cfg.epochs, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay, series="dense", **train_kw)
        return {"state": model.state_dict(), "acc": res["test_acc"]}

    def wgsef_stage() -> dict:
        model = fresh()
        out = proximal_train(model, "wgsef", lam, cfg.epochs, "wgsef")
        if cfg.final_projection:
            project_top_k_(out["prox_map"])
        return {"state": model.state_dict(), "before": out["before"], "after": layer_group_stats(out["prox_map"]),
                "acc_before": out["acc_before"]}

    dense_res = run.cached("dense", dense_stage)
    wg = run.cached("wgsef", wgsef_stage)
    target_counts = [r["nonzero_groups"] for r in wg["after"]]
    target = overall_group_sparsity(wg["after"])

    def gl_stage() -> dict:
        n = cfg.gl_search_steps if cfg.gl_match == "search" else 1

        def train(weight: float, i: int) -> tuple[float, dict]:
            model = fresh()
            out = proximal_train(model, "group_lasso", weight, cfg.gl_epochs or cfg.epochs,
                                 f"group_lasso_{i}" if n > 1 else "group_lasso")
            return overall_group_sparsity(out["before"]), {"model": model, **out}

        best = calibrate_strength(train, target, start=cfg.gl_lambda, steps=n,
                                  record=lambda r: {"acc_before_projection": r["acc_before"]})
        project_to_counts_(best.result["prox_map"], target_counts)
        return {"state": best.result["model"].state_dict(), "lambda": best.weight, "natural": best.natural,
                "acc_before": best.result["acc_before"], "trials": best.trials}

    gl = run.cached("group_lasso", gl_stage)
    dense, sparse, gl_model = fresh(), fresh(), fresh()
    dense.load_state_dict(dense_res["state"])
    sparse.load_state_dict(wg["state"])
    gl_model.load_state_dict(gl["state"])
    wgsef_acc, gl_acc = accuracy(sparse, data, cfg.device), accuracy(gl_model, data, cfg.device)

    meas = _measure(dense, sparse, example, cfg.latency_repeats)
    small = meas.pop("_compact_model", None)
    gl_meas = _measure(dense, gl_model, example, cfg.latency_repeats)
    gl_meas.pop("_compact_model", None)
    compact_acc = accuracy(small, data, cfg.device) if small is not None else float("nan")

    run.save_figure(curves_figure(run, "test_acc", xkey="epoch"), "accuracy_curves",
                    "test accuracy per epoch: dense, WGSEF, group lasso")
    run.save_figure(_sparsity_bars(wg["before"], wg["after"]), "layer_group_sparsity",
                    f"per-layer {cfg.grouping} sparsity of WGSEF before/after the final projection (target {cfg.target_group_sparsity:.0%})")
    run.save_table("wgsef layers", [
        {**a, "nonzero_before_projection": b["nonzero_groups"]} for a, b in zip(wg["after"], wg["before"])
    ], caption="k = groups kept per layer; non-zero groups before and after the final top-k projection")
    run.save_table("group lasso calibration", [{"lambda": t["lambda"], "natural_group_sparsity": t["natural_sparsity"],
                                                "acc_before_projection": t["acc_before_projection"]} for t in gl["trials"]],
                   caption="natural (pre-projection) group sparsity per λ; the closest is then projected to the WGSEF counts")
    rows = [("dense", dense_res["acc"], meas, "dense"), ("wgsef", wgsef_acc, meas, "compact"),
            ("group lasso", gl_acc, gl_meas, "compact")]
    run.save_table("dense vs compact", [
        {"model": n, "accuracy": a, "params": m.get(f"params_{t}"), "flops": m.get(f"flops_{t}"),
         "latency_ms": m.get(f"latency_ms_{t}")} for n, a, m, t in rows
    ], caption=f"latency: median of {cfg.latency_repeats} interleaved runs at batch {example.shape[0]} on {cfg.device}")

    before_ok = [r["nonzero_groups"] <= r["k"] for r in wg["before"] if r["k"] is not None]
    exact_k = [r["nonzero_groups"] == r["k"] for r in wg["before"] if r["k"] is not None]
    summary: dict[str, Any] = {
        "dense_acc": dense_res["acc"],
        "wgsef_acc": wgsef_acc,
        "wgsef_acc_before_projection": wg["acc_before"],
        "wgsef_compact_acc": compact_acc,
        "acc_drop": round(100.0 * (dense_res["acc"] - wgsef_acc), 3),
        "acc_drop_unit": "percentage points",
        "lambda": lam,
        "exact": cfg.exact,
        "grouping": cfg.grouping,
        "target_group_sparsity": cfg.target_group_sparsity,
        "groups_removed_frac": target,
        "groups_removed_frac_before_projection": overall_group_sparsity(wg["before"]),
        "k_level_reached_before_projection": all(before_ok),
        "layers_exactly_k_before_projection": f"{sum(exact_k)}/{len(exact_k)}",
        "layer_group_sparsity": {r["layer"]: r["group_sparsity"] for r in wg["after"]},
        "latency_batch": int(example.shape[0]),
        "group_lasso_match": cfg.gl_match,
        "group_lasso_lambda": gl["lambda"],
        "group_lasso_natural_group_sparsity": gl["natural"],
        "group_lasso_acc_before_projection": gl["acc_before"],
        "group_lasso_acc": gl_acc,
        "group_lasso_groups_removed_frac": target,
        "wgsef_minus_group_lasso_acc": round(100.0 * (wgsef_acc - gl_acc), 3),
    }
    for key, src in (("params_dense", "params_dense"), ("params_compact", "params_compact"),
                     ("compression_ratio", "params_reduction"), ("flops_dense", "flops_dense"),
                     ("flops_compact", "flops_compact"), ("flops_reduction", "flops_reduction"),
                     ("latency_ms_dense", "latency_ms_dense"), ("latency_ms_compact", "latency_ms_compact"),
                     ("latency_speedup", "latency_speedup"), ("compact_max_abs_diff", "compact_max_abs_diff")):
        summary[key] = meas.get(src)
    for key, src in (("params_compact", "params_compact"), ("compression_ratio", "params_reduction"),
                     ("flops_reduction", "flops_reduction"), ("latency_speedup", "latency_speedup")):
        summary[f"group_lasso_{key}"] = gl_meas.get(src)
    if cfg.grouping in ("filter", "row"):
        summary["filters_removed_frac"] = target
    return summary


def _measure(dense: nn.Module, sparse: nn.Module, example: torch.Tensor, repeats: int) -> dict[str, Any]:
    try:
        return measure_dense_vs_compact(copy.deepcopy(dense), copy.deepcopy(sparse), example, repeats=repeats)
    except UserError as e:  # e.g. a grouping whose zeros cannot be physically removed by this model's graph
        warnings.warn(f"wgsef: compaction skipped: {e}", stacklevel=2)
        return {}


def _sparsity_bars(before: list[dict], after: list[dict]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["layer"] for r in after]
    x = list(range(len(names)))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.8 * len(names) + 2), 3.2))
    ax.bar([i - 0.2 for i in x], [r["group_sparsity"] for r in before], width=0.4, label="before projection")
    ax.bar([i + 0.2 for i in x], [r["group_sparsity"] for r in after], width=0.4, label="after projection")
    ax.plot(x, [1 - r["k"] / r["groups"] if r["k"] else 0 for r in after], "k_", ms=20, label="target (1 − k/m)")
    ax.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("group sparsity")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
