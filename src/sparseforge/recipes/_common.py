"""Pieces shared by the supervised-classification recipes (magnitude, wgsef, pruning-at-init, compare).

* :func:`load_classification` — the built-in digits or a user dataset (MNIST/Fashion-MNIST IDX,
  CIFAR-10 pickles) as a :class:`~sparseforge.data.DataSplits`.
* :func:`train_classifier` — SGD-momentum training through :func:`sparseforge.engine.fit`, with
  per-epoch test accuracy logged under a series name.
* :func:`filter_prune_masks` — structured masks removing the lowest-norm filters/neurons per layer.
* :func:`accuracy`, :func:`curves_figure` — test accuracy, and one metric per series from ``metrics.jsonl``.
* :func:`measure_dense_vs_compact` — compaction + :func:`sparseforge.metrics.summary` on both
  models in one process, with an equality check of the outputs.
* :func:`layer_sparsity_figure` — per-layer bars of the fraction of weights and of groups removed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..engine import EvalCallback, Run, evaluate_accuracy, fit, make_loader
from ..errors import UserError
from ..targeting import Targets, select

DATASETS_SUPPORTED = ("digits", "mnist", "fashion_mnist", "cifar10")


def load_classification(dataset: str, data_dir: str | None = None, *, allow_pickle: bool = False, seed: int = 0) -> Any:
    """A :class:`~sparseforge.data.DataSplits` for ``dataset``.

    ``digits`` is built in; ``mnist`` / ``fashion_mnist`` read IDX files from ``data_dir``;
    ``cifar10`` reads the python pickles from ``data_dir`` (needs ``allow_pickle=True``).

    Raises:
        UserError: unknown dataset, or a user dataset without ``data_dir`` / with a missing path.
    """
    from .. import data as D

    if dataset == "digits":
        return _digits(seed)
    if dataset not in DATASETS_SUPPORTED:
        raise UserError(f"unknown dataset {dataset!r}; choose one of: {', '.join(DATASETS_SUPPORTED)}")
    if not data_dir:
        raise UserError(f"dataset {dataset!r} reads files from disk: pass --set data_dir=PATH")
    if not Path(data_dir).exists():
        raise UserError(f"data_dir {data_dir!r} does not exist")
    if dataset in ("mnist", "fashion_mnist"):
        xtr, ytr = D.load_mnist_dir(data_dir, "train")
        xte, yte = D.load_mnist_dir(data_dir, "test")
        return D.DataSplits(xtr, ytr, xte, yte, num_classes=10, input_shape=tuple(xtr.shape[1:]))
    from ..data.cifar import cifar10

    return cifar10(root=data_dir, allow_pickle=allow_pickle)


def _digits(seed: int) -> Any:
    from ..registry import DATASETS

    return DATASETS.get("digits")(split_seed=seed)


def model_kwargs_for(data: Any, model: str | None = None) -> dict[str, Any]:
    """``in_channels``, ``input_size`` and ``num_classes`` for an image :class:`DataSplits`.

    With ``model`` given, only the keywords its builder accepts are returned; a builder with a
    fixed input size (e.g. ``digits_mlp``) on data of another shape is a one-line ConfigError.
    """
    import inspect

    from ..errors import ConfigError
    from ..registry import MODELS

    shape = tuple(data.input_shape)
    kw = {"in_channels": int(shape[0]), "input_size": int(shape[-1]), "num_classes": int(data.num_classes)}
    if model is None:
        return kw
    entry = MODELS.entry(model)
    params = inspect.signature(entry.obj).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return kw
    fixed = tuple(entry.meta.get("input_shape", ()))
    dropped = [k for k in ("in_channels", "input_size") if k not in params]
    if dropped and fixed and fixed != shape:
        raise ConfigError(f"model {model!r} takes inputs of shape {fixed}, but the dataset has {shape}; choose another model")
    return {k: v for k, v in kw.items() if k in params}


def train_classifier(
    model: nn.Module,
    data: Any,
    *,
    epochs: int,
    lr: float,
    batch_size: int = 64,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    seed: int = 0,
    run: Run | None = None,
    series: str | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    wrap_optimizer: Callable[[torch.optim.Optimizer], torch.optim.Optimizer] | None = None,
    penalty_fn: Callable[[nn.Module], torch.Tensor] | None = None,
    device: str = "cpu",
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    eval_every: int = 1,
    extra_stateful: tuple[Any, ...] = (),
) -> dict[str, Any]:
    """Train with SGD (cosine LR) and evaluate test accuracy every ``eval_every`` epochs.

    Resumable mid-stage (``fit(stateful=...)``: the augmentation generator and ``extra_stateful``).
    Returns ``{"test_acc": final, "history": [...], "optimizer": opt}``.
    """
    loader = make_loader(data.train, batch_size, shuffle=True, seed=seed)
    test_loader = make_loader(data.test, 512, shuffle=False)
    if optimizer is None:
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    if wrap_optimizer is not None:
        optimizer = wrap_optimizer(optimizer)
    steps = epochs * len(loader)
    base = getattr(optimizer, "base_optimizer", optimizer)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(base, T_max=max(steps, 1))
    gen = torch.Generator().manual_seed(seed)

    def step_fn(m: nn.Module, batch: Any) -> torch.Tensor:
        x, y = batch
        if augment is not None:
            x = augment(x, gen)
        return F.cross_entropy(m(x), y)

    state = fit(
        model,
        loader,
        optimizer,
        step_fn=step_fn,
        penalty_fn=penalty_fn,
        epochs=epochs,
        scheduler=sched,
        callbacks=[EvalCallback(lambda m: {"test_acc": evaluate_accuracy(m, test_loader, device)}, every=eval_every)],
        run=run,
        series=series,
        device=device,
        desc=series or "train",
        stateful=(gen, *extra_stateful),
    )
    acc = evaluate_accuracy(model, test_loader, device)
    return {"test_acc": acc, "history": state.history, "optimizer": optimizer}


def filter_prune_masks(model: nn.Module, fraction: float, *, targets: Targets = None) -> dict[str, torch.Tensor]:
    """Masks zeroing the ``fraction`` lowest-L2-norm filters (neurons) of every target layer.

    ``targets``: module names or patterns (:func:`sparseforge.select`; default every Conv2d/Linear). The
    weight row and the bias entry of a pruned filter are both masked, so the filter is an all-zero group
    that :func:`sparseforge.compact` removes. At least one filter per layer is kept.
    """
    if not 0.0 <= fraction < 1.0:
        raise UserError(f"filter fraction must be in [0, 1), got {fraction}")
    from ..groups import group_norms
    from ..targeting import resolve_targets

    masks: dict[str, torch.Tensor] = {}
    for name in resolve_targets(model, targets, types=(nn.Conv2d, nn.Linear), family="filter pruning"):
        mod = model.get_submodule(name)
        w = mod.weight.detach()
        norms = group_norms(w, "filter")  # (out,)
        n_prune = min(int(round(fraction * norms.numel())), norms.numel() - 1)
        keep = torch.ones_like(norms, dtype=torch.bool)
        if n_prune > 0:
            keep[torch.argsort(norms)[:n_prune]] = False
        masks[f"{name}.weight"] = keep.view(-1, *([1] * (w.dim() - 1))).expand_as(w).clone()
        if getattr(mod, "bias", None) is not None:
            masks[f"{name}.bias"] = keep.clone()
    return masks


@torch.no_grad()
def accuracy(model: nn.Module, data: Any, device: str | torch.device | None = None) -> float:
    """Test accuracy of ``model`` on ``data.test`` (batches of 512)."""
    device = device if device is not None else next(model.parameters()).device
    return evaluate_accuracy(model, make_loader(data.test, 512, shuffle=False), device)


def curves_figure(run: Run, key: str, *, xkey: str = "step", ylabel: str | None = None, logy: bool = False,
                  skip_first: bool = False) -> Any:
    """One line per logged ``series`` of ``metrics.jsonl``: ``key`` against ``xkey`` (optionally log-scale, without
    each series' first point, e.g. the evaluation at initialisation that would flatten every other point)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[float, float]]] = {}
    for rec in run.read_metrics():
        if key in rec and rec[key] is not None:
            series.setdefault(rec.get("series", "?"), []).append((rec.get(xkey, rec.get("step", 0)), rec[key]))
    fig, ax = plt.subplots(figsize=(6.0, 3.4))
    for name, pts in series.items():
        pts = pts[1:] if skip_first and len(pts) > 1 else pts
        xs, ys = zip(*pts)
        ax.plot(xs, ys, label=name, lw=1.2)
    ax.set_xlabel(xkey)
    ax.set_ylabel(ylabel or key.replace("_", " "))
    if logy:
        ax.set_yscale("log")
    if series:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def measure_dense_vs_compact(
    dense: nn.Module, sparse: nn.Module, example: torch.Tensor, *, repeats: int = 30
) -> dict[str, Any]:
    """Compact ``sparse`` and measure dense, sparse and compact side by side (latency interleaved).

    Returns flat figures: ``params_*``, ``nonzero_params_*``, ``flops_*``, ``effective_flops_*``,
    ``latency_ms_*`` for ``dense`` and ``compact``, the ratios, and ``compact_max_abs_diff``.
    """
    from .. import metrics
    from ..compaction import compact

    dense.eval()
    sparse.eval()
    small = compact(sparse, example)
    small.eval()
    with torch.no_grad():
        diff = float((small(example) - sparse(example)).abs().max())
    lat = metrics.compare_latency({"dense": dense, "compact": small}, example, repeats=repeats)
    out: dict[str, Any] = {"compact_max_abs_diff": diff}
    for tag, m in (("dense", dense), ("sparse", sparse), ("compact", small)):
        s = metrics.summary(m, example, latency=False)
        for k in ("params", "nonzero_params", "flops", "effective_flops"):
            out[f"{k}_{tag}"] = s[k]
    out["latency_ms_dense"] = lat["dense"]
    out["latency_ms_compact"] = lat["compact"]
    out["params_reduction"] = out["params_dense"] / max(out["params_compact"], 1)
    out["flops_reduction"] = out["flops_dense"] / max(out["flops_compact"], 1)
    out["latency_speedup"] = lat["dense"] / max(lat["compact"], 1e-9)
    out["_compact_model"] = small
    return out


def layer_sparsity_figure(model: nn.Module, title: str, *, grouping: str = "filter") -> Any:
    """Bars per Conv/Linear layer: fraction of weights that are zero and of ``grouping`` groups that are zero."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..groups import zero_groups

    names, wz, gz = [], [], []
    for name in select(model, types=(nn.Conv2d, nn.Linear)):
        w = model.get_submodule(name).weight.detach()
        names.append(name)
        wz.append(float((w == 0).float().mean()))
        gz.append(float(zero_groups(w, grouping).float().mean()))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(names) + 2), 3.2))
    x = torch.arange(len(names)).numpy()
    ax.bar(x - 0.2, wz, width=0.4, label="weights zero")
    ax.bar(x + 0.2, gz, width=0.4, label=f"{grouping}s removed")
    ax.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("fraction")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def layer_rows(model: nn.Module, *, grouping: str = "filter") -> list[dict[str, Any]]:
    """Per-layer table rows: shape, weights, non-zero, groups, groups kept."""
    from ..groups import n_groups, zero_groups

    rows = []
    for name in select(model, types=(nn.Conv2d, nn.Linear)):
        w = model.get_submodule(name).weight.detach()
        rows.append(
            {
                "layer": name,
                "shape": "x".join(map(str, w.shape)),
                "weights": w.numel(),
                "nonzero": int((w != 0).sum()),
                f"{grouping}s": n_groups(w.shape, grouping),
                f"{grouping}s_kept": int((~zero_groups(w, grouping)).sum()),
            }
        )
    return rows
