"""Recipe ``compare``: one leaderboard of every compression method on the same network, measured the same way.

Every registered compressor (``sparseforge list methods``: magnitude per weight and per filter, iterative
magnitude pruning, pruning at init with every scorer — SNIP, GraSP, SynFlow, random, plugins —, group lasso,
WGSEF on filters and channels, Turbo-VBI, and Torch-Pruning's group-norm pruner when the ``[bench]`` extra is
installed) runs through :func:`sparseforge.compress.compress_and_finetune` on one model and dataset, at several
levels (``weight_levels``: the fraction of weights removed, for unstructured methods; ``filter_levels``: of
filters/neurons removed per layer, for structured ones, paired level by level), with one budget: ``epochs`` of
training with the method's own hooks, the exact level by the method's own importance (its natural sparsity
before that projection is reported), and the same masked fine-tune. Regularized methods with a strength option
get it from a short calibration search (``calibration_steps``) on their natural sparsity. Then every result goes
through the same measurement: :func:`sparseforge.compact` and :func:`sparseforge.metrics.summary` on the same
batch, the latency of all models timed interleaved in one process at ``latency_batch`` (median of blocks with its
spread), eagerly and through :func:`sparseforge.deploy` when ``deploy`` is on. Speed-ups come from those measured
latencies, never from FLOPs.

Each result is saved as a sparsity file with its weights (``sparsity/<method>_<level>.pt``,
:func:`sparseforge.masks.save_sparsity`) that reloads onto a freshly built model.

Presets: ``smoke`` (2 epochs, 1 level, a few methods) seconds; ``quick``: LeNet-5 on digits, 20 epochs, 2 levels,
every method, ~2-3 min on a 2-core machine; ``paper``: VGG-16 on CIFAR-10 from ``data_dir`` (``model=resnet18``
too), 160 epochs, hours on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from .. import masks as M
from ..compress import compressor_names, get_compressor
from ..compress.pipeline import Budget, calibrate, compress_and_finetune
from ..config import RecipeConfig
from ..engine import Run
from ..errors import ConfigError
from ..models import create_model
from ..targeting import structured_targets
from . import recipe
from ._common import accuracy, load_classification, model_kwargs_for


@dataclass
class CompareConfig(RecipeConfig):
    """Options of ``compare`` (see the module docstring).

    Attributes:
        methods: compressors to run (empty: every registered one, plugins included); ``dense`` always runs.
        weight_levels / filter_levels: the levels, paired by position (level i of the table).
        calibration_steps: trainings of a regularized method's strength search per level (0: its default).
        deploy: also time each model through :func:`sparseforge.deploy` (``deploy_strategy``).
    """

    file_datasets: ClassVar[tuple[str, ...]] = ("mnist", "fashion_mnist", "cifar10")
    limits: ClassVar[dict[str, Any]] = {"latency_repeats": (1, 10_000), "latency_blocks": (1, 100),
                                        "calibration_steps": (0, 20)}

    model: str = "lenet5"
    dataset: str = "digits"
    data_dir: str | None = None
    allow_pickle: bool = False
    methods: tuple[str, ...] = ()
    weight_levels: tuple[float, ...] = (0.5, 0.8)
    filter_levels: tuple[float, ...] = (0.25, 0.5)
    epochs: int = 20
    finetune_epochs: int = 5
    lr: float = 3e-3
    finetune_lr: float = 1e-3
    batch_size: int = 64
    weight_decay: float = 0.0
    optimizer: str = "adam"
    calibration_steps: int = 2
    latency_batch: int = 256
    latency_repeats: int = 30
    latency_blocks: int = 5
    deploy: bool = True
    deploy_strategy: str = "auto"
    threads: int | None = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.weight_levels) != len(self.filter_levels) or not self.weight_levels:
            raise ConfigError("weight_levels and filter_levels must be non-empty lists of the same length (paired)")
        for lv in (*self.weight_levels, *self.filter_levels):
            if not 0.0 < lv < 1.0:
                raise ConfigError(f"levels are fractions removed in (0, 1), got {lv}")
        known = compressor_names()
        bad = [m for m in self.methods if m not in known and m != "dense"]
        if bad:
            raise ConfigError(f"unknown compressor {bad[0]!r}; choose from {', '.join(known)}")
        if self.epochs < 1 or self.finetune_epochs < 0 or self.calibration_steps < 0:
            raise ConfigError("epochs must be >= 1, finetune_epochs and calibration_steps >= 0")
        if self.optimizer not in ("adam", "sgd"):
            raise ConfigError(f"optimizer must be adam or sgd, got {self.optimizer!r}")

    def method_list(self) -> list[str]:
        return [m for m in (self.methods or compressor_names()) if m != "dense"]


@recipe(
    "compare",
    config=CompareConfig,
    presets={
        "smoke": {"epochs": 2, "finetune_epochs": 1, "weight_levels": (0.5,), "filter_levels": (0.5,),
                  "methods": ("magnitude", "magnitude_filter", "snip", "wgsef_filter"), "calibration_steps": 0,
                  "latency_repeats": 4, "latency_blocks": 2, "deploy": False},
        "quick": {},
        "paper": {"threads": None, "model": "vgg16", "dataset": "cifar10", "epochs": 160, "finetune_epochs": 20,
                  "optimizer": "sgd", "lr": 0.05, "finetune_lr": 0.01, "batch_size": 128, "weight_decay": 5e-4,
                  "weight_levels": (0.5, 0.8, 0.9), "filter_levels": (0.25, 0.5, 0.75), "latency_batch": 64},
    },
    help="Every compression method on one network: accuracy, params, FLOPs and measured speed-up, one leaderboard",
    claim=("On one network, one budget and one measurement path, structured methods turn sparsity into measured "
           "speed-up, unstructured ones into fewer non-zero weights; the leaderboard says which method wins at each level."),
    headline=("acc/dense", "best_structured_within_1pt", "speedup_of_best_structured_within_1pt",
              "best_unstructured_within_1pt"),
    goal="speedup_of_best_structured_within_1pt > 1",
    goal_text="a structured method keeps accuracy within 1 point of dense and runs measurably faster",
    key_figure="pareto",
)
def run(cfg: CompareConfig, run: Run) -> dict[str, Any]:
    data = load_classification(cfg.dataset, cfg.data_dir, allow_pickle=cfg.allow_pickle, seed=cfg.seed)
    kw = model_kwargs_for(data, cfg.model)
    budget = Budget(cfg.epochs, cfg.finetune_epochs, cfg.lr, cfg.finetune_lr, cfg.batch_size, cfg.weight_decay,
                    cfg.optimizer)
    example = data.x_test[: cfg.latency_batch].to(cfg.device)

    def fresh() -> torch.nn.Module:
        torch.manual_seed(cfg.seed)
        return create_model(cfg.model, **kw).to(cfg.device)

    targets = structured_targets(fresh(), example_inputs=example)
    dense = run.cached("dense", lambda: _dense(fresh(), data, budget, cfg, run))
    outcomes: dict[tuple[str, float], Any] = {}
    skipped: dict[str, str] = {}
    for wl, fl in zip(cfg.weight_levels, cfg.filter_levels):
        for name in cfg.method_list():
            cls = get_compressor(name)
            if not cls.available():
                skipped[name] = "not installed"
                continue
            level = wl if cls.structure == "weights" else fl

            def stage(name=name, level=level, cls=cls) -> dict:
                cal = calibrate(name, fresh, data, level=level, targets=targets, budget=budget,
                                steps=cfg.calibration_steps, seed=cfg.seed, device=cfg.device)
                opts = {cal["option"]: cal["value"]} if cal["value"] is not None else {}
                o = compress_and_finetune(name, fresh(), data, level=level, targets=targets, budget=budget,
                                          options=opts, dense_state=dense["state_at_epochs"], seed=cfg.seed, run=run,
                                          device=cfg.device)
                return {"model": o.model, "masks": o.masks, "removed": o.removed, "natural": o.natural_sparsity,
                        "acc_before_finetune": o.acc_before_finetune, "acc": o.acc, "structure": o.structure,
                        "calibration": cal, "physical": cls.physically_pruned}

            outcomes[(name, level)] = run.cached(f"{name}_{level:g}", stage)
            r = outcomes[(name, level)]
            if not r["physical"]:  # a sparsity file with weights reloads onto a freshly built model
                M.save_sparsity(r["model"], run.path / "sparsity" / f"{name}_{level:g}.pt", masks=r["masks"],
                                weights=True, extra={"method": name, "level": level, "acc": r["acc"]})
    dense_model = fresh()
    dense_model.load_state_dict(dense["state"])
    models = {"dense": dense_model, **{f"{n}/{lv:g}": r["model"] for (n, lv), r in outcomes.items()}}
    meas = measure_all(models, example, cfg)
    rows, summary = [], {"acc/dense": dense["acc"], "targets": targets, "skipped": skipped}
    for key, mm in meas.items():
        n, _, lv = key.partition("/")
        r = outcomes.get((n, float(lv))) if lv else None
        acc = dense["acc"] if r is None else r["acc"]
        row = {"method": n, "level": float(lv) if lv else 0.0, "structure": r["structure"] if r else "-",
               "removed": r["removed"] if r else 0.0, "natural_sparsity": r["natural"] if r else None,
               "accuracy": acc, **{k: mm.get(k) for k in ("params", "nonzero_params", "effective_flops", "latency_ms",
                                                           "latency_spread_ms", "speedup", "deploy_latency_ms",
                                                           "deploy_speedup")}}
        rows.append(row)
        for k in ("accuracy", "removed", "natural_sparsity", "params", "nonzero_params", "effective_flops",
                  "latency_ms", "latency_spread_ms", "speedup", "deploy_speedup"):
            if r is not None and row.get(k) is not None:
                summary[f"{'acc' if k == 'accuracy' else k}/{n}/{lv}"] = row[k]
    summary.update(_winners(rows, dense["acc"], cfg))
    summary.update({f"{k}/dense": meas["dense"].get(k) for k in ("params", "latency_ms", "deploy_latency_ms")})
    for i, (wl, fl) in enumerate(zip(cfg.weight_levels, cfg.filter_levels)):
        level_rows = [r for r in rows if r["method"] == "dense" or _at_level(r, wl, fl)]
        run.save_table(f"level {i + 1}: {wl:.0%} of weights / {fl:.0%} of filters removed", level_rows,
                       caption="speed-up = measured latency of dense / of the method (interleaved, median of blocks); "
                               "natural_sparsity = how far the method got before the final projection")
    if skipped:
        run.save_table("skipped", [{"method": k, "why": v} for k, v in skipped.items()])
    run.save_figure(_pareto(rows, dense["acc"]), "pareto",
                    "accuracy vs measured speed-up and vs parameters, every method and level (compacted models)")
    return summary


def _dense(model: torch.nn.Module, data: Any, budget: Budget, cfg: CompareConfig, run: Run) -> dict:
    """The dense reference: ``epochs`` (the state dense-trained methods start from), then the fine-tune length."""
    from ..compress.pipeline import _train

    opt = budget.make_optimizer(model.parameters(), budget.lr)
    _train(model, data, opt, budget.epochs, budget, seed=cfg.seed, run=run, series="dense", device=cfg.device)
    at_epochs = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt = budget.make_optimizer(model.parameters(), budget.finetune_lr)
    _train(model, data, opt, budget.finetune_epochs, budget, seed=cfg.seed + 1, run=run, series="dense/finetune",
           device=cfg.device)
    return {"state_at_epochs": at_epochs, "state": model.state_dict(), "acc": accuracy(model, data, cfg.device)}


def measure_all(models: dict[str, torch.nn.Module], example: torch.Tensor, cfg: CompareConfig) -> dict[str, dict]:
    """Compact everything, then time every model interleaved (eager, and deployed when asked)."""
    from ..bayes.measure import compact_and_measure
    from ..metrics import summary

    out = compact_and_measure(models, example, repeats=cfg.latency_repeats, blocks=cfg.latency_blocks)
    for name, m in models.items():
        s = summary(m, example, latency=False)  # the masked model: non-zeros and effective FLOPs
        out[name].update(nonzero_params=s["nonzero_params"], effective_flops=s["effective_flops"],
                         params=out[name]["params_compact"])
    base = out["dense"]["latency_ms"]
    for v in out.values():
        v["speedup"] = base / max(v["latency_ms"], 1e-12)
    if cfg.deploy:
        try:
            from ..deployment import deploy
        except ImportError:
            return out
        deployed = {n: deploy(v["model"], example, strategy=cfg.deploy_strategy, compact=v["model"] is models[n])
                    for n, v in out.items()}  # already compacted models are not exported a second time
        lat = compact_and_measure(deployed, example, repeats=cfg.latency_repeats, blocks=cfg.latency_blocks,
                                  compact=False)  # measured as deployed: compacting again would re-export them
        for n, v in lat.items():
            out[n]["deploy_latency_ms"] = v["latency_ms"]
            out[n]["deploy_speedup"] = lat["dense"]["latency_ms"] / max(v["latency_ms"], 1e-12)
    return out


def _at_level(row: dict, weight_level: float, filter_level: float) -> bool:
    """Whether a row belongs to the paired level: unstructured rows by their weight level, structured by filters."""
    return row["level"] == (weight_level if row["structure"] == "weights" else filter_level)


def _winners(rows: list[dict], dense_acc: float, cfg: CompareConfig) -> dict[str, Any]:
    """Per level, the most accurate method and the fastest within 1 point of dense; overall, per method, the
    highest level within 1 point of dense and its speed-up."""
    out: dict[str, Any] = {}
    ok = [r for r in rows if r["method"] != "dense" and r["accuracy"] >= dense_acc - 0.01]
    for i, (wl, fl) in enumerate(zip(cfg.weight_levels, cfg.filter_levels), start=1):
        lv = [r for r in rows if r["method"] != "dense" and _at_level(r, wl, fl)]
        if lv:
            out[f"winner_acc/L{i}"] = max(lv, key=lambda r: r["accuracy"])["method"]
        fast = [r for r in ok if _at_level(r, wl, fl)]
        out[f"winner_speedup_within_1pt/L{i}"] = max(fast, key=lambda r: r["speedup"])["method"] if fast else None
    for structured, tag in ((True, "structured"), (False, "unstructured")):
        cand = [r for r in ok if (r["structure"] != "weights") == structured]
        best = max(cand, key=lambda r: (r["removed"], r["speedup"])) if cand else None
        out[f"best_{tag}_within_1pt"] = best["method"] if best else None
        out[f"speedup_of_best_{tag}_within_1pt"] = best["speedup"] if best else None
        out[f"removed_by_best_{tag}_within_1pt"] = best["removed"] if best else None
    per_method = {}
    for r in ok:
        cur = per_method.get(r["method"])
        if cur is None or r["level"] > cur["level"]:
            per_method[r["method"]] = r
    for m, r in per_method.items():
        out[f"max_level_within_1pt/{m}"] = r["level"]
        out[f"speedup_at_max_level/{m}"] = r["speedup"]
    return out


def _pareto(rows: list[dict], dense_acc: float):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), sharey=True)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cmap = plt.get_cmap("tab20")
    for i, m in enumerate(methods):
        pts = sorted((r for r in rows if r["method"] == m), key=lambda r: r["level"])
        mk = "*" if m == "dense" else ("s" if pts[0]["structure"] not in ("weights", "-") else "o")
        for ax, key in zip(axes, ("speedup", "nonzero_params")):
            ax.plot([r[key] for r in pts], [r["accuracy"] for r in pts], marker=mk, ms=7 if m != "dense" else 12,
                    color="k" if m == "dense" else cmap(i % 20), label=m, lw=0.8)
    for ax in axes:
        ax.axhline(dense_acc - 0.01, color="gray", ls=":", lw=0.8)
    axes[0].set(xlabel="measured speed-up over dense (compacted, eager)", ylabel="test accuracy")
    axes[1].set(xlabel="non-zero parameters", xscale="log")
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), title="squares: structured")
    fig.suptitle("dotted: 1 point below dense", fontsize=9)
    fig.tight_layout()
    return fig

