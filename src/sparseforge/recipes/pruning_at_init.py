"""Recipe ``pruning-at-init``: five pruning-at-initialisation scorers on digits (MLP and LeNet-5).

Papers: SNIP (Lee, Ajanthan & Torr, arXiv 1810.02340), GraSP (Wang, Zhang & Grosse, arXiv 2002.07376),
SynFlow (Tanaka, Kunin, Yamins & Ganguli, arXiv 2006.05467); magnitude and random at init as in
Frankle et al. / the grokking-tickets controls (Minegishi et al., arXiv 2310.19470).

Procedure, for every model, method, sparsity k and seed:
1. build the model at init (seed), score it: magnitude |theta|, random U(0,1), SNIP |g theta| and GraSP
   theta * Hg on one batch of ``score_batch`` training images, SynFlow data-free (100 rounds,
   exponential schedule: density (1-k)^(j/100) after round j);
2. global top-k mask keeping exactly round((1 - k) N) weights (all weight matrices and kernels);
3. train the masked network (masks kept exactly zero through every step) with the same budget for
   every method: Adam, cosine LR, batch 64, ``epochs`` epochs;
4. report test accuracy (mean and spread over seeds) vs k, and the per-layer density each method chose.

Reconstructed defaults (the papers fix only the budget): ``optimizer="adam"``, ``lr=3e-3``,
``weight_decay=0``, ``batch_size=64``, ``threads=1``. Adam trains every masked LeNet-5 on 8x8 digits
(with SGD a strongly pruned one can stay at chance), so the comparison measures the masks.
``methods`` accepts every registered scorer, plugins included (``sparseforge list methods``).

Measured wall time (2 cores): ``smoke`` ~6 s (mostly imports); ``quick`` 34 s near idle, 47 s with
the machine shared by other jobs (2 models x (dense + 5 methods x 2 sparsities) x 20 epochs, 1 seed); ``paper`` roughly
40 min (5 sparsities, 100 epochs, 3 seeds).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from ..config import RecipeConfig
from ..engine import Run
from ..errors import ConfigError
from ..models import create_model
from ..pruning import density_by_layer, prune_global
from ..registry import DATASETS, METHODS
from . import recipe

MODELS_SUPPORTED = ("digits_mlp", "lenet5")


@dataclass
class PruningAtInitConfig(RecipeConfig):
    """Options of ``pruning-at-init``."""

    models: tuple[str, ...] = MODELS_SUPPORTED
    methods: tuple[str, ...] = ("magnitude", "random", "snip", "grasp", "synflow")
    sparsities: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95, 0.98)
    epochs: int = 100
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = 3e-3
    weight_decay: float = 0.0
    batch_size: int = 64
    score_batch: int = 256
    synflow_rounds: int = 100
    grasp_temperature: float = 200.0
    dense_baseline: bool = True
    seeds: tuple[int, ...] = (0, 1, 2)
    threads: int | None = 1  # tiny models: one intra-op thread is fastest
    limits: ClassVar[dict[str, Any]] = {"synflow_rounds": (1, 10_000)}

    def __post_init__(self) -> None:
        super().__post_init__()
        for m in self.models:
            if m not in MODELS_SUPPORTED:
                raise ConfigError(f"unknown model {m!r}; choose from {', '.join(MODELS_SUPPORTED)}")
        for m in self.methods:
            if m not in METHODS.names(family="scorer"):
                raise ConfigError(f"unknown scorer {m!r}; choose from {', '.join(METHODS.names(family='scorer'))}")
        for s in self.sparsities:
            if not 0 <= s < 1:
                raise ConfigError(f"sparsities must be in [0, 1), got {s}")
        if self.epochs < 1 or self.score_batch < 1 or self.batch_size < 1:
            raise ConfigError("epochs, batch_size and score_batch must be >= 1")


def _one(cfg: PruningAtInitConfig, data: Any, model_name: str, method: str | None, k: float, seed: int,
         run: Run | None) -> dict[str, Any]:
    from ..masks import attach
    from ._common import train_classifier

    torch.manual_seed(seed)
    model = create_model(model_name).to(cfg.device)
    masks = None
    if method is not None:
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(data.y_train), generator=g)[: cfg.score_batch]
        batch = (data.x_train[idx].to(cfg.device), data.y_train[idx].to(cfg.device))
        model.train()  # every scorer is offered the same options and takes the ones it defines
        masks = prune_global(model, method, k, batch=batch, options={
            "seed": seed, "temperature": cfg.grasp_temperature, "rounds": cfg.synflow_rounds})
    if cfg.optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    ms = attach(model, masks, optimizer=opt) if masks else None
    series = f"{model_name}/{method or 'dense'}/k{k:g}/s{seed}"
    res = train_classifier(model, data, epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, seed=seed,
                           optimizer=opt, run=run, series=series, device=cfg.device, eval_every=cfg.epochs)
    out = {"test_acc": res["test_acc"]}
    if ms is not None:
        params = dict(model.named_parameters())
        out["zeros_ok"] = all(bool((params[n][~m] == 0).all()) for n, m in ms.masks.items())
        out["density"] = density_by_layer(masks)  # type: ignore[arg-type]
        ms.detach()
    return out


def _figures(cfg: PruningAtInitConfig, acc: dict[tuple[str, str, float], list[float]],
             dens: dict[tuple[str, str], dict[str, float]], dense: dict[str, float], run: Run) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(cfg.models), figsize=(5.5 * len(cfg.models), 4), squeeze=False)
    for ax, mn in zip(axes[0], cfg.models):
        for i, meth in enumerate(cfg.methods):
            ks = sorted(cfg.sparsities)
            mean = [statistics.fmean(acc[(mn, meth, k)]) for k in ks]
            lo = [min(acc[(mn, meth, k)]) for k in ks]
            hi = [max(acc[(mn, meth, k)]) for k in ks]
            ax.plot(ks, mean, "o-", color=f"C{i}", label=meth)
            ax.fill_between(ks, lo, hi, color=f"C{i}", alpha=0.15)
        if mn in dense:
            ax.axhline(dense[mn], color="k", ls=":", lw=1, label="dense")
            ax.set_ylim(top=max(ax.get_ylim()[1], dense[mn] + 0.02))  # keep the dense reference in view
        ax.set(xlabel="sparsity (fraction removed)", ylabel="test accuracy", title=mn)
        ax.legend(fontsize=8)
    run.save_figure(fig, "accuracy_vs_sparsity",
                    caption="Test accuracy after training vs sparsity, per scorer (mean; band = min-max over seeds).")

    kmax = max(cfg.sparsities)
    fig, axes = plt.subplots(1, len(cfg.models), figsize=(5.5 * len(cfg.models), 4), squeeze=False)
    for ax, mn in zip(axes[0], cfg.models):
        layers = list(dens[(mn, cfg.methods[0])])
        w = 0.8 / len(cfg.methods)
        for i, meth in enumerate(cfg.methods):
            d = dens[(mn, meth)]
            xs = [j + i * w for j in range(len(layers))]
            ax.bar(xs, [d[n] for n in layers], width=w, color=f"C{i}", label=meth)
            for xj, n in zip(xs, layers):
                if d[n] == 0.0:  # layer collapse: the whole tensor pruned
                    ax.plot(xj, 0.0, marker="x", color=f"C{i}", ms=7, mew=2)
        ax.axhline(1 - kmax, color="k", ls=":", lw=1)
        ax.set_xticks([j + 0.4 - w / 2 for j in range(len(layers))], layers, rotation=45, ha="right", fontsize=7)
        ax.set(ylabel="fraction kept", title=f"{mn}, sparsity {kmax:g}")
        ax.legend(fontsize=7)
    run.save_figure(fig, "layer_density", caption=f"Per-layer density each scorer chose at sparsity {kmax:g} "
                    "(first seed); dotted = global density; x = a layer pruned entirely (layer collapse).")


@recipe(
    "pruning-at-init",
    config=PruningAtInitConfig,
    presets={
        "smoke": {"models": ("digits_mlp",), "sparsities": (0.9,), "epochs": 1, "seeds": (0,), "synflow_rounds": 5},
        "quick": {"sparsities": (0.8, 0.95), "epochs": 20, "seeds": (0,)},
        "paper": {},
    },
    help="Pruning at init: magnitude / random / SNIP / GraSP / SynFlow on digits MLP and LeNet-5 across sparsities",
    claim=("Scoring weights at initialisation (SNIP, GraSP, SynFlow) finds trainable sparse networks where magnitude "
           "and random pruning at init fail at high sparsity; SynFlow avoids layer collapse without data."),
    goal="acc/lenet5/synflow/0.95 > acc/lenet5/magnitude/0.95 and acc/lenet5/snip/0.95 > acc/lenet5/random/0.95",
    goal_text="at 95% removed on LeNet-5, SynFlow beats magnitude at init and SNIP beats random",
    key_figure="accuracy_vs_sparsity",
    headline=("dense_acc/lenet5", "acc/lenet5/synflow/0.95", "acc/lenet5/snip/0.95", "acc/lenet5/grasp/0.95",
              "acc/lenet5/random/0.95", "acc/lenet5/magnitude/0.95"),
)
def run(cfg: PruningAtInitConfig, run: Run) -> dict[str, Any]:
    seeds = list(cfg.seeds) or [cfg.seed]
    data = DATASETS.get("digits")(split_seed=0)
    acc: dict[tuple[str, str, float], list[float]] = {}
    dens: dict[tuple[str, str], dict[str, float]] = {}
    dense: dict[str, float] = {}
    rows = []
    zeros_ok = True
    for mn in cfg.models:
        if cfg.dense_baseline:
            vals = [run.cached(f"{mn}-dense-s{s}", lambda s=s, mn=mn: _one(cfg, data, mn, None, 0.0, s, run))["test_acc"]
                    for s in seeds]  # every training is a stage: --resume skips finished ones
            dense[mn] = statistics.fmean(vals)
            rows.append({"model": mn, "method": "dense", "sparsity": 0.0, "test_acc": round(dense[mn], 4)})
        for meth in cfg.methods:
            for k in cfg.sparsities:
                res = [run.cached(f"{mn}-{meth}-k{k:g}-s{s}", lambda s=s, mn=mn, meth=meth, k=k: _one(cfg, data, mn, meth, k, s, run))
                       for s in seeds]
                acc[(mn, meth, k)] = [r["test_acc"] for r in res]
                zeros_ok &= all(r["zeros_ok"] for r in res)
                if k == max(cfg.sparsities):
                    dens[(mn, meth)] = res[0]["density"]
                rows.append({"model": mn, "method": meth, "sparsity": k,
                             "test_acc": round(statistics.fmean(acc[(mn, meth, k)]), 4),
                             "spread": round(max(acc[(mn, meth, k)]) - min(acc[(mn, meth, k)]), 4)})
    run.save_table("accuracy", rows, caption="Test accuracy after training (mean over seeds) per model, scorer, sparsity.")
    _figures(cfg, acc, dens, dense, run)
    summary: dict[str, Any] = {"dense_acc": dense, "masked_weights_stay_zero": zeros_ok, "seeds": seeds}
    summary["acc"] = {mn: {meth: {f"{k:g}": round(statistics.fmean(acc[(mn, meth, k)]), 4) for k in cfg.sparsities}
                           for meth in cfg.methods} for mn in cfg.models}
    summary["layer_density_at_max_sparsity"] = {mn: {meth: dens[(mn, meth)] for meth in cfg.methods}
                                                for mn in cfg.models}
    return summary
