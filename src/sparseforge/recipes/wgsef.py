"""Recipe ``wgsef``: k-level structured sparsity with the weighted group sparse envelope.

Paper: "Learning k-Level Structured Sparse Neural Networks Using Group Envelope Regularization",
Y. Refael, I. Arbel, W. Huleihel, arXiv:2212.12921 (spec ``shared/methods/wgsef.md``).

Objective (spec §2.3, ``exact=True``, reconstructed default):
    min_θ  L(θ) + Σ_l λ_l · ( WGSEF_{k_l}(θ_l) − ½‖w ⊙ z(θ_l)‖² ),   WGSEF_k(θ) = s_k(w ⊙ z(θ)),
trained by proximal SGD (§2.7): base SGD-momentum step, then θ_l ← prox_{γ R_l}(θ_l) with
γ = η_t λ_l ρ_t (ρ_t: linear ramp 0 → 1 over the first ``ramp_frac`` of training).
``exact=False`` trains the literal envelope objective L + Σ λ_l WGSEF_{k_l}.

Stages (each cached with ``run.cached``, so ``--resume`` skips finished ones):

1. ``dense``: the same training without a regularizer (weight decay on all parameters).
2. ``wgsef``: proximal training with k_l = max(1, round((1 − target_group_sparsity)·m_l)) per
   regularized layer (every Conv2d/Linear except the classifier; bias and a following BN's γ/β are
   in each filter's group, ``include_coupled``). Weight decay only on non-regularized tensors.
   At the end, the non-zero group count per layer is recorded *before* the final top-k
   projection (the "k-level at convergence" claim), then the projection is applied.
3. ``group_lasso``: the group-lasso baseline (§2.9), matched to the same group sparsity by a short
   calibration search over its λ (``gl_search_steps`` trainings, geometric bisection on the
   natural group sparsity), followed by a final top-k projection to exactly the same per-layer
   counts (``gl_match="search"``; ``gl_match="project"`` skips the search and only projects the
   run at ``gl_lambda``).
4. Compaction (:func:`sparseforge.compact`) of both sparse models and measurement of parameters,
   FLOPs and CPU latency (interleaved medians, batch ``latency_batch``) against the dense model.

Defaults are the spec's §3 table for digits (reconstructed defaults: SGD momentum 0.9,
lr 0.05 cosine, batch 64, λ_exact = 0.5/lr, λ_envelope = 5e-4, target group sparsity 0.5).

Presets (measured on the shared 2-core machine): ``smoke`` ≈ 5 s, ``quick`` ≈ 40 s.
``paper``: VGG-16 on CIFAR-10 (``--set data_dir=PATH allow_pickle=true``), 200 epochs, lr 0.1,
batch 128; also ``--set model=resnet18`` / ``model=mobilenet_v1``, or
``--set model=lenet5 dataset=fashion_mnist data_dir=PATH lr=0.05 batch_size=64``. Hours on a GPU.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from ..config import RecipeConfig
from ..engine import Run
from ..errors import ConfigError, UserError
from ..groups import GROUPINGS
from ..models import create_model
from . import recipe
from ._common import load_classification, measure_dense_vs_compact, model_kwargs_for, train_classifier


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
        exact: True: exact k-level penalty (§2.3 "exact", reconstructed default); False: the envelope.
        lam: λ for every regularized layer; None = 0.5/lr (exact) or 5e-4 (envelope) (reconstructed defaults).
        ramp_frac: fraction of the training steps over which ρ_t ramps linearly from 0 to 1.
        warmup_frac: fraction of the steps trained dense (ρ = 0) before the ramp starts
            (reconstructed default 0.2; the spec's table has no warm-up: on a random init the exact
            penalty acts like weight decay λ(m/k − 1) on every group and collapses small nets).
        group_weights: ``none`` (reconstructed default) or ``sqrt_size`` (§2.3).
        include_coupled: bias and following BN γ/β in each filter/row group (§2.1).
        final_projection: keep exactly the top-k groups per layer at the end (§2.7).
        reset_momentum_on_prune: zero the momentum of just-zeroed entries (§2.7).
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


def residual_safe_exclude(model: nn.Module) -> list[str]:
    """Convs whose outputs join a residual addition (spec §2.8 default: prune only block internals).

    For blocks with a ``shortcut``/``downsample`` branch, only ``conv1`` (BasicBlock) or
    ``conv1``/``conv2`` (Bottleneck, which has a ``conv3``) are regularized; the stem conv that feeds
    the first residual stage is excluded too.
    """
    blocks = [(n, m) for n, m in model.named_modules() if hasattr(m, "shortcut") or hasattr(m, "downsample")]
    if not blocks:
        return []
    internal = set()
    for n, m in blocks:
        names = ["conv1", "conv2"] if hasattr(m, "conv3") else ["conv1"]
        internal |= {f"{n}.{c}" for c in names if hasattr(m, c)}
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and n not in internal]


def _lambda_ramp(total_steps: int, frac: float, warmup: float = 0.0):
    """ρ_t: 0 during the first ``warmup`` of the steps, then a linear ramp to 1 over ``frac``, then 1."""
    start = int(round(warmup * total_steps))
    ramp = max(1, int(round(frac * total_steps)))
    return lambda t: 0.0 if t < start else (min(1.0, (t - start + 1) / ramp) if frac > 0 else 1.0)


def _layer_stats(model: nn.Module, names: list[str], prox_map: dict, grouping: str) -> list[dict[str, Any]]:
    from ..optim import nonzero_groups

    counts = nonzero_groups(prox_map)
    if len(counts) != len(names):  # joint ("layer") operator: one summary row
        nz, m, k = counts[0]
        return [{"layer": "all (layer grouping)", "groups": m, "k": k, "nonzero_groups": nz, "group_sparsity": 1 - nz / m}]
    return [{"layer": n, "groups": m, "k": k, "nonzero_groups": nz, "group_sparsity": 1 - nz / m}
            for n, (nz, m, k) in zip(names, counts)]


@recipe(
    "wgsef",
    config=WgsefConfig,
    presets=PRESETS,
    help="LeNet-5 on digits: k-level filter sparsity with the group sparse envelope (WGSEF) vs group lasso, compacted",
    headline=("dense_acc", "wgsef_acc", "acc_drop", "groups_removed_frac", "latency_speedup", "group_lasso_acc"),
)
def run(cfg: WgsefConfig, run: Run) -> dict:
    return _run(cfg, run)


def _run(cfg: WgsefConfig, run: Run) -> dict:
    from ..optim import ProximalOptimizer, build_prox_map, project_top_k_, regularized_layers

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

    def fresh() -> nn.Module:
        torch.manual_seed(cfg.seed)
        return create_model(cfg.model, **kw).to(cfg.device)

    def layer_names(model: nn.Module) -> tuple[list[str], list[str]]:
        exclude = residual_safe_exclude(model)
        return [n for n, _ in regularized_layers(model, exclude=exclude)], exclude

    def make_prox(model: nn.Module, method: str, weight: float) -> dict:
        _, exclude = layer_names(model)
        if method == "wgsef":
            extra = dict(exact=cfg.exact, group_weights=cfg.group_weights, kernel=cfg.kernel)
            return build_prox_map(model, "wgsef", weight=weight, k=keep_frac if keep_frac < 1 else 1.0,
                                  grouping=cfg.grouping, exclude=exclude, include_coupled=cfg.include_coupled, **extra)
        return build_prox_map(model, method, weight=weight, grouping=cfg.grouping, exclude=exclude,
                              include_coupled=cfg.include_coupled, group_weights=cfg.group_weights)

    def proximal_train(model: nn.Module, method: str, weight: float, epochs: int, series: str) -> dict:
        prox_map = make_prox(model, method, weight)
        regularized = {id(p) for p in prox_map}
        for op in prox_map.values():
            regularized |= {id(c) for c in getattr(op, "coupled", ())}
        decay = [p for p in model.parameters() if id(p) not in regularized]
        nodecay = [p for p in model.parameters() if id(p) in regularized]
        base = torch.optim.SGD([{"params": decay, "weight_decay": cfg.weight_decay},
                                {"params": nodecay, "weight_decay": 0.0}], lr=cfg.lr, momentum=cfg.momentum)
        total = epochs * steps_per_epoch
        opt = ProximalOptimizer(base, prox_map, weight_schedule=_lambda_ramp(total, cfg.ramp_frac, cfg.warmup_frac),
                                reset_momentum_on_prune=cfg.reset_momentum_on_prune)
        res = train_classifier(model, data, epochs=epochs, lr=cfg.lr, optimizer=opt, series=series, **train_kw)
        names, _ = layer_names(model)
        before = _layer_stats(model, names, prox_map, cfg.grouping)
        acc_before = res["test_acc"]
        return {"prox_map": prox_map, "before": before, "acc_before": acc_before}

    # 1. dense ---------------------------------------------------------------------------------
    def dense_stage() -> dict:
        model = fresh()
        res = train_classifier(model, data, epochs=cfg.epochs, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay, series="dense", **train_kw)
        return {"state": model.state_dict(), "acc": res["test_acc"]}

    dense_res = run.cached("dense", dense_stage)
    dense = fresh()
    dense.load_state_dict(dense_res["state"])

    # 2. WGSEF ---------------------------------------------------------------------------------
    def wgsef_stage() -> dict:
        model = fresh()
        out = proximal_train(model, "wgsef", lam, cfg.epochs, "wgsef")
        if cfg.final_projection:
            project_top_k_(out["prox_map"])
        names, _ = layer_names(model)
        after = _layer_stats(model, names, out["prox_map"], cfg.grouping)
        return {"state": model.state_dict(), "before": out["before"], "after": after, "acc_before": out["acc_before"]}

    wg = run.cached("wgsef", wgsef_stage)
    sparse = fresh()
    sparse.load_state_dict(wg["state"])
    wgsef_acc = _accuracy(sparse, data, cfg.device)
    target_counts = [r["nonzero_groups"] for r in wg["after"]]

    # 3. group lasso matched to the same group sparsity ----------------------------------------
    gl_epochs = cfg.gl_epochs or cfg.epochs

    def gl_train(weight: float, series: str) -> dict:
        model = fresh()
        out = proximal_train(model, "group_lasso", weight, gl_epochs, series)
        natural = _overall_sparsity(out["before"])
        return {"model": model, "prox_map": out["prox_map"], "natural": natural, "acc_before": out["acc_before"]}

    def gl_stage() -> dict:
        target = _overall_sparsity(wg["after"])
        lo, hi = None, None
        weight = cfg.gl_lambda
        trials, best = [], None
        n = cfg.gl_search_steps if cfg.gl_match == "search" else 1
        for i in range(n):
            r = gl_train(weight, f"group_lasso_{i}" if n > 1 else "group_lasso")
            trials.append({"lambda": weight, "natural_group_sparsity": r["natural"], "acc_before_projection": r["acc_before"]})
            if best is None or abs(r["natural"] - target) < abs(best["natural"] - target) - 1e-9:
                best = {**r, "lambda": weight}
            if r["natural"] < target:
                lo = weight
            else:
                hi = weight
            weight = math.sqrt(lo * hi) if (lo and hi) else (weight * 4 if hi is None else weight / 4)
        model, prox_map = best["model"], best["prox_map"]
        _project_to_counts_(model, prox_map, cfg.grouping, target_counts)
        return {"state": model.state_dict(), "lambda": best["lambda"], "natural": best["natural"],
                "acc_before": best["acc_before"], "trials": trials}

    gl = run.cached("group_lasso", gl_stage)
    gl_model = fresh()
    gl_model.load_state_dict(gl["state"])
    gl_acc = _accuracy(gl_model, data, cfg.device)

    # 4. compaction and measurements ------------------------------------------------------------
    example = data.x_test[: cfg.latency_batch].to(cfg.device)
    meas = _measure(dense, sparse, example, cfg.latency_repeats)
    small = meas.pop("_compact_model", None)
    gl_meas = _measure(dense, gl_model, example, cfg.latency_repeats)
    gl_meas.pop("_compact_model", None)
    compact_acc = _accuracy(small, data, cfg.device) if small is not None else float("nan")

    # figures and tables
    run.save_figure(_curves_figure(run), "accuracy_curves", "test accuracy per epoch: dense, WGSEF, group lasso")
    run.save_figure(_sparsity_bars(wg["before"], wg["after"]), "layer_group_sparsity",
                    f"per-layer {cfg.grouping} sparsity of WGSEF before/after the final projection (target {cfg.target_group_sparsity:.0%})")
    run.save_table("wgsef layers", [
        {**a, "nonzero_before_projection": b["nonzero_groups"]} for a, b in zip(wg["after"], wg["before"])
    ], caption="k = groups kept per layer; non-zero groups before and after the final top-k projection")
    run.save_table("group lasso calibration", gl["trials"],
                   caption="natural (pre-projection) group sparsity per λ; the closest is then projected to the WGSEF counts")
    rows = [("dense", dense_res["acc"], meas, "dense"), ("wgsef", wgsef_acc, meas, "compact"),
            ("group lasso", gl_acc, gl_meas, "compact")]
    run.save_table("dense vs compact", [
        {"model": n, "accuracy": a, "params": m.get(f"params_{t}"), "flops": m.get(f"flops_{t}"),
         "latency_ms": m.get(f"latency_ms_{t}")} for n, a, m, t in rows
    ], caption=f"latency: median of {cfg.latency_repeats} interleaved runs at batch {example.shape[0]} on {cfg.device}")

    before_ok = [r["nonzero_groups"] <= r["k"] for r in wg["before"] if r["k"] is not None]
    exact_k = [r["nonzero_groups"] == r["k"] for r in wg["before"] if r["k"] is not None]
    groups_removed = _overall_sparsity(wg["after"])
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
        "groups_removed_frac": groups_removed,
        "groups_removed_frac_before_projection": _overall_sparsity(wg["before"]),
        "k_level_reached_before_projection": all(before_ok),
        "layers_exactly_k_before_projection": f"{sum(exact_k)}/{len(exact_k)}",
        "layer_group_sparsity": {r["layer"]: r["group_sparsity"] for r in wg["after"]},
        "params_dense": meas.get("params_dense"),
        "params_compact": meas.get("params_compact"),
        "compression_ratio": meas.get("params_reduction"),
        "flops_dense": meas.get("flops_dense"),
        "flops_compact": meas.get("flops_compact"),
        "flops_reduction": meas.get("flops_reduction"),
        "latency_ms_dense": meas.get("latency_ms_dense"),
        "latency_ms_compact": meas.get("latency_ms_compact"),
        "latency_speedup": meas.get("latency_speedup"),
        "latency_batch": int(example.shape[0]),
        "compact_max_abs_diff": meas.get("compact_max_abs_diff"),
        "group_lasso_match": cfg.gl_match,
        "group_lasso_lambda": gl["lambda"],
        "group_lasso_natural_group_sparsity": gl["natural"],
        "group_lasso_acc_before_projection": gl["acc_before"],
        "group_lasso_acc": gl_acc,
        "group_lasso_groups_removed_frac": groups_removed,
        "group_lasso_params_compact": gl_meas.get("params_compact"),
        "group_lasso_compression_ratio": gl_meas.get("params_reduction"),
        "group_lasso_flops_reduction": gl_meas.get("flops_reduction"),
        "group_lasso_latency_speedup": gl_meas.get("latency_speedup"),
        "wgsef_minus_group_lasso_acc": round(100.0 * (wgsef_acc - gl_acc), 3),
    }
    if cfg.grouping in ("filter", "row"):
        summary["filters_removed_frac"] = groups_removed
    return summary


# ----------------------------------------------------------------------------- helpers
def _overall_sparsity(rows: list[dict[str, Any]]) -> float:
    total = sum(r["groups"] for r in rows)
    return 1.0 - sum(r["nonzero_groups"] for r in rows) / max(total, 1)


@torch.no_grad()
def _project_to_counts_(model: nn.Module, prox_map: dict, grouping: str, counts: list[int]) -> None:
    """Keep the ``counts[i]`` largest groups of the i-th regularized tensor (ties: lowest index)."""
    from ..prox.base import lifted_sq_norms, scale_groups_
    from ..prox.envelope import top_k_groups

    params = list(prox_map)
    if grouping == "layer":
        keep_n = counts[0]
        norms = torch.stack([p.detach().double().norm() for p in params])
        keep = top_k_groups(norms, max(1, keep_n))
        for p, kp in zip(params, keep.tolist()):
            if not kp:
                p.zero_()
        return
    for p, c in zip(params, counts):
        op = prox_map[p]
        coupled = getattr(op, "coupled", ())
        sq = lifted_sq_norms(p, grouping, coupled).double()
        keep = top_k_groups(sq, max(1, min(c, sq.numel())))
        scale_groups_(p, keep.double(), grouping, coupled)


def _measure(dense: nn.Module, sparse: nn.Module, example: torch.Tensor, repeats: int) -> dict[str, Any]:
    try:
        return measure_dense_vs_compact(copy.deepcopy(dense), copy.deepcopy(sparse), example, repeats=repeats)
    except UserError as e:  # e.g. a grouping whose zeros cannot be physically removed by this model's graph
        import warnings

        warnings.warn(f"wgsef: compaction skipped: {e}", stacklevel=2)
        return {}


@torch.no_grad()
def _accuracy(model: nn.Module, data: Any, device: str) -> float:
    from ..engine import evaluate_accuracy, make_loader

    return evaluate_accuracy(model, make_loader(data.test, 512, shuffle=False), device)


def _curves_figure(run: Run):
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[float, float]]] = {}
    path = run.path / "metrics.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "test_acc" in rec:
                series.setdefault(rec.get("series", "?"), []).append((rec.get("epoch", rec.get("step", 0)), rec["test_acc"]))
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for name, pts in series.items():
        xs, ys = zip(*pts)
        ax.plot(xs, ys, label=name, lw=1.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _sparsity_bars(before: list[dict], after: list[dict]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["layer"] for r in after]
    x = list(range(len(names)))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.8 * len(names) + 2), 3.2))
    ax.bar([i - 0.2 for i in x], [r["group_sparsity"] for r in before], width=0.4, label="before projection")
    ax.bar([i + 0.2 for i in x], [r["group_sparsity"] for r in after], width=0.4, label="after projection")
    ax.plot([i for i in x], [1 - r["k"] / r["groups"] if r["k"] else 0 for r in after], "k_", ms=20, label="target (1 − k/m)")
    ax.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("group sparsity")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
