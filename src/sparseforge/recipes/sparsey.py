"""Recipe ``sparsey``: single-trial SDR memory on images and sequences.

Paper: Rinkus & Leveille, "Superposed Episodic and Semantic Memory via Sparse Distributed
Representation", arXiv 1710.07829 (the CSA: :mod:`sparseforge.sdr.sparsey`; every measurement:
:mod:`sparseforge.sdr.evaluate`). The authors' MNIST result (sparsey.com): a 2-level model learning
single-trial from 200 images per class reaches 91% in 220 s on one thread. Nearest here by default:
scikit-learn digits (100 per class, 797 test, edge input); ``paper`` reads MNIST IDX files.

Stages (each resumable): **images** (one pass through level 1, 12x12 macs with 5x5 RFs, and a top
mac over all of level 1 with lambda_U > 1 and many cells per CM; read-outs on level-1 codes next to
1-NN on raw pixels; recall of learned codes just after learning and at the end; top-mac familiarity
of stored vs novel vs random images; code vs input overlap; accuracy vs items per class),
**probe** (a new user's check with the default ``SparseyConfig``: random sparse patterns and
binarised digits learned once and presented again at once, before / after the tie-break fix),
**sequences** (recall of stored random-frame sequences against their number), **videos**
(moving shapes or frame folders: direction of motion from the last-frame codes, chain recall).

Measured at threads=1 on the shared 2-core machine (load ~5): ``smoke`` 13 s wall (5 s CPU), ``quick``
63 s wall (28 s CPU, so about 30 s on an idle machine); ``paper`` needs MNIST and frame folders.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from ..config import RecipeConfig
from ..engine.run import Run
from ..errors import ConfigError, UserError
from ..sdr import Sparsey, SparseyConfig
from ..sdr import evaluate as E
from ..sdr import preprocess as P
from . import recipe

BEFORE_FIX = {"tie_break": "sample", "frozen_winners": "sample", "tie_order": "priority"}
CAPACITY_VARIANTS = {"before": ("sampled ties (before)", BEFORE_FIX), "priority": ("recalled ties, priority order",
                     {"tie_order": "priority"}), "default": ("recalled ties, fewest links (default)", {}),
                     "K16": ("default, K=16 cells per CM", {"K": 16})}  # fmt: skip


@dataclass
class SparseyRecipeConfig(RecipeConfig):
    """Config of the ``sparsey`` recipe (defaults: the digits setup tuned on this machine class).

    Attributes:
        image_data: "digits" (bundled), "mnist" (IDX files under ``data_dir``) or "none".
        data_dir: Folder with MNIST IDX files (``train-images-idx3-ubyte`` ...).
        train_per_class / test_per_class / max_test: split sizes (digits: all remaining items test).
        input_mode: "edges" (boundary pixels), "binary" or "skeleton" (Zhang-Suen).
        grid, window, Q, K, band, freeze_threshold, inflection, slope, tie_order: level 1.
        top_Q, top_K, top_lambda, top_freeze: the top mac (``top_K = 0``: no top mac).
        per_class_curve: items-per-class values for the accuracy curve (empty = skip).
        probe_items / probe_active: patterns of the new-user recall check and their on-pixels.
        capacity_counts / capacity_frames / capacity_seeds: the sequence capacity curve.
        video_*: moving-shapes sizes, frame-folder input, its test noise, and the video model's Q and K
            per level (more cells than the generic default: 80 sequences of 8 frames overflow 8x8 macs).
        n_pairs: random test pairs of the overlap scatter.
    """

    data_dirs: ClassVar[dict[str, tuple[str, tuple[str, ...]]]] = {
        "data_dir": ("image_data", ("mnist",)),
        "video_dir": ("video_data", ("frames",)),
    }
    limits: ClassVar[dict[str, Any]] = {
        **dict.fromkeys(("train_per_class", "test_per_class", "grid", "window", "Q", "top_Q", "per_class_curve",
                         "probe_active", "capacity_counts", "capacity_frames", "capacity_seeds", "n_pairs",
                         "video_train_per_class", "video_test_per_class", "video_Q"), (1, None)),
        **dict.fromkeys(("K", "probe_items", "video_frames", "video_K"), (2, None)),
        **dict.fromkeys(("max_test", "top_K"), (0, None)),
        **dict.fromkeys(("video_noise", "inflection"), (0.0, 1.0)),
        **dict.fromkeys(("freeze_threshold", "top_freeze"), (1e-9, 1.0)),
    }  # fmt: skip
    threads: int | None = 1  # the CSA runs many tiny ops: one thread is fastest (and fair on shared CPUs)
    image_data: Literal["digits", "mnist", "none"] = "digits"
    data_dir: str | None = None
    train_per_class: int = 100
    test_per_class: int = 100
    max_test: int = 0
    input_mode: Literal["edges", "binary", "skeleton"] = "edges"
    grid: int = 12
    window: int = 5
    Q: int = 16
    K: int = 10
    band: tuple[float, float] = (0.08, 0.3)
    freeze_threshold: float = 0.2
    inflection: float = 0.9
    slope: float = 32.0
    tie_order: Literal["priority", "fewest_links"] = "fewest_links"
    top_Q: int = 4
    top_K: int = 64
    top_lambda: float = 10.0
    top_freeze: float = 1.0
    per_class_curve: tuple[int, ...] = (10, 50)
    probe_items: int = 200
    probe_active: int = 26
    capacity_counts: tuple[int, ...] = (1, 5, 10, 20, 40)
    capacity_frames: int = 6
    capacity_seeds: int = 3
    video_data: Literal["moving_shapes", "frames", "none"] = "moving_shapes"
    video_dir: str | None = None
    video_size: tuple[int, int] = (16, 16)
    video_train_per_class: int = 20
    video_test_per_class: int = 10
    video_frames: int = 8
    video_noise: float = 0.4
    video_Q: tuple[int, ...] = (8, 8)
    video_K: tuple[int, ...] = (16, 64)
    n_pairs: int = 300

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.top_K == 1:
            raise ConfigError("top_K must be 0 (no top mac) or >= 2")


def image_data(cfg: SparseyRecipeConfig) -> tuple[torch.Tensor, ...]:
    """``(x_train, y_train, x_test, y_test)`` of the configured image set."""
    if cfg.image_data == "mnist":
        if not cfg.data_dir:
            raise UserError("image_data=mnist needs the MNIST IDX folder: add --set data_dir=/path/to/mnist")
        data = P.mnist_sparsey(cfg.data_dir, train_per_class=cfg.train_per_class, test_per_class=cfg.test_per_class,
                               seed=cfg.seed, input_mode=cfg.input_mode)  # fmt: skip
    elif cfg.input_mode == "edges":
        data = P.digits_edges(cfg.seed, per_class=cfg.train_per_class)
    else:
        data = P.digits_binary(cfg.seed, per_class=cfg.train_per_class, skeletonize=cfg.input_mode == "skeleton")
    xtr, ytr, xte, yte = data
    return (xtr, ytr, xte[: cfg.max_test], yte[: cfg.max_test]) if cfg.max_test else data


def image_model(cfg: SparseyRecipeConfig, shape: tuple[int, int], *, top: bool = True) -> Sparsey:
    """Level 1 (+ the top mac over all of level 1 when ``top`` and ``cfg.top_K``)."""
    w = min(cfg.window, *shape)
    lv = dict(grids=(cfg.grid,), windows=(w,), Q=cfg.Q, K=cfg.K, freeze_threshold=cfg.freeze_threshold)
    if top and cfg.top_K:
        lv = dict(grids=(cfg.grid, 1), windows=(w, 0), Q=(cfg.Q, cfg.top_Q), K=(cfg.K, cfg.top_K),
                  freeze_threshold=(cfg.freeze_threshold, cfg.top_freeze), lambda_u=(1.0, cfg.top_lambda))  # fmt: skip
    return Sparsey(SparseyConfig(input_shape=shape, band_l1=cfg.band, inflection=cfg.inflection, slope=cfg.slope,
                                 tie_order=cfg.tie_order, use_h=False, use_d=False, seed=cfg.seed, **lv))  # fmt: skip


def _images_stage(cfg: SparseyRecipeConfig, run: Run) -> dict[str, Any]:
    import matplotlib.pyplot as plt

    xtr, ytr, xte, yte = image_data(cfg)
    shape = (int(xtr.shape[-2]), int(xtr.shape[-1]))
    net = image_model(cfg, shape)
    r = E.image_memory(net, xtr, ytr, xte, yte, n_pairs=cfg.n_pairs, seed=cfg.seed)
    per_mac = net.stats_per_mac(0)
    for m in range(net.n_macs[0]):
        run.log(m, series="mac", **{k: float(per_mac[k][m]) for k in ("mean_G", "saturation", "learn_frames")})
    sub = [n for n in cfg.per_class_curve if n < cfg.train_per_class]
    make = lambda: image_model(cfg, shape, top=False)  # noqa: E731
    curve = E.accuracy_vs_items(make, xtr, ytr, xte, yte, per_class=sub, levels=[0])
    curve.append({"per_class": cfg.train_per_class, **r["acc"], "knn_pixels": r["knn_pixels"]})
    for row in curve:
        run.log(row["per_class"], series="per_class", **{k: v for k, v in row.items() if k != "per_class"})
    run.save_table("accuracy_vs_items", curve, caption="test accuracy after one pass vs training items per class")
    fam, rec = r["familiarity"], r["recall"]
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    for k, lab in (("seen", "stored items"), ("novel", "novel test items"), ("random", "random images")):
        ax.hist(r["G"][k].tolist(), bins=torch.linspace(0, 1, 26).tolist(), alpha=0.6, label=lab)
    ax.set(xlabel="top-mac familiarity G", title=f"AUC stored vs novel {fam['auc_seen_vs_novel']:.3f}")
    ax.legend()
    run.save_figure(fig, "familiarity", caption="familiarity of the top mac: stored vs novel vs random inputs")
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    ax.scatter(*r["pairs"], s=8, alpha=0.6)
    ax.set(xlabel="input overlap (Jaccard of pixels)", ylabel="code overlap (Jaccard of level-1 cells)",
           title=f"SISC: Spearman {r['sisc_spearman']:.2f}")  # fmt: skip
    run.save_figure(fig, "code_vs_input_overlap", caption="similar inputs get similar codes (random test pairs)")
    run.save_table("recall", [{"level": k, **v} for k, v in rec.items()],
                   caption="exact recall of learned codes over (item, mac) pairs that stored the item (G < 1, not frozen) "
                           "and over all active pairs, just after learning (now) and after the whole pass (end)")  # fmt: skip
    return {"n_train": len(xtr), "n_test": len(xte), **r["summary"], "memory_bits": net.memory_bits(),
            **{k: round(v, 4) for k, v in net.stats().items()}}  # fmt: skip


def _probe_stage(cfg: SparseyRecipeConfig, run: Run) -> dict[str, Any]:
    data = {"random": E.random_sparse(cfg.probe_items, (16, 16), cfg.probe_active, seed=cfg.seed),
            "digits": P.digits_binary(cfg.seed)[0][: cfg.probe_items]}  # fmt: skip
    configs = {"before": SparseyConfig(seed=cfg.seed, **BEFORE_FIX), "after": SparseyConfig(seed=cfg.seed)}
    rows = E.recall_probe(configs, data)
    run.save_table("probe", rows, caption=f"default SparseyConfig, {cfg.probe_items} items each learned once: top-level "
                   "code recalled right after the item (now) and after all items (end); before/after the tie-break fix")  # fmt: skip
    return {f"recall_{k}_{r['data']}_{r['config']}": round(r[f"recall_{k}"], 4) for r in rows for k in ("now", "end")}


def _sequences_stage(cfg: SparseyRecipeConfig, run: Run) -> dict[str, Any]:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    out, rows = {}, []
    seeds = tuple(range(cfg.seed, cfg.seed + cfg.capacity_seeds))
    for key, (label, kw) in CAPACITY_VARIANTS.items():
        cfg_k = SparseyConfig(**kw)
        curve = E.sequence_capacity(cfg_k, n_sequences=cfg.capacity_counts, frames=cfg.capacity_frames, seeds=seeds)
        rows += [{"variant": label, **{k: round(v, 4) for k, v in c.items()}} for c in curve]
        ax.plot([c["n_sequences"] for c in curve], [c["top_recall"] for c in curve], marker="o", label=label)
        out.update({f"recall_{key}_n{c['n_sequences']}": round(c["top_recall"], 4) for c in curve})
    ax.set(xscale="log", xlabel="stored sequences", ylabel="frames recalled exactly (top code)", ylim=(0, 1.05))
    ax.legend(fontsize=7)
    run.save_figure(fig, "sequence_capacity", caption=f"sequence recall vs stored sequences ({cfg.capacity_frames} random "
                    "sparse 16x16 frames each, default SparseyConfig, mean over seeds)")  # fmt: skip
    run.save_table("sequence_capacity", rows, caption="recall after all sequences are stored; now = right after its own "
                   "sequence; stored = over frames the top mac stored (G < 1)")  # fmt: skip
    return out


def _videos_stage(cfg: SparseyRecipeConfig, run: Run) -> dict[str, Any]:
    from ..data.videos import frame_folder_splits, moving_shapes_splits

    if cfg.video_data == "moving_shapes":
        Xtr, ytr, Xte, yte = moving_shapes_splits(cfg.video_train_per_class, cfg.video_test_per_class, cfg.video_frames,
                                                  cfg.video_size[0], cfg.seed)  # fmt: skip
        train, test = list(Xtr), list(Xte)
    else:
        if not cfg.video_dir:
            raise UserError("video_data=frames needs Weizmann-style frame folders: add --set video_dir=/path")
        train, ytr, test, yte = frame_folder_splits(
            cfg.video_dir, size=tuple(cfg.video_size), noise=cfg.video_noise, seed=cfg.seed
        )
    H, W = cfg.video_size
    net = Sparsey(SparseyConfig(input_shape=(H, W), grids=(4, 1), windows=(min(7, H, W), 0), Q=cfg.video_Q, K=cfg.video_K,
                                seed=cfg.seed))  # fmt: skip
    r = E.sequence_classification(net, train, ytr, test, yte)
    run.save_table("sequence_results", [{"method": f"sparsey last-frame codes + {k}", "test_acc": v} for k, v in r["acc"].items()],
                   caption=f"{cfg.video_data}: {len(train)} training sequences, {len(test)} test")  # fmt: skip
    return {"n_train": len(train), "n_test": len(test), **r["summary"], "memory_bits": net.memory_bits()}


# fmt: off
PRESETS = {
    "smoke": {"train_per_class": 8, "max_test": 120, "per_class_curve": (), "n_pairs": 100, "probe_items": 30,
              "capacity_counts": (1, 4), "capacity_seeds": 1, "video_train_per_class": 3, "video_test_per_class": 2,
              "video_frames": 4},
    "quick": {},
    "paper": {"image_data": "mnist", "train_per_class": 200, "test_per_class": 100, "input_mode": "skeleton",
              "video_data": "frames", "video_size": (30, 21), "per_class_curve": (10, 50, 100),
              "capacity_counts": (1, 5, 10, 20, 40, 80), "capacity_seeds": 5},
}
HEADLINE = ("images/acc_svm", "images/acc_nn_overlap", "images/acc_knn_pixels", "images/learn_time_s",
            "images/recall_now_items", "images/familiarity_auc_seen_vs_novel", "sequences/recall_default_n10",
            "videos/acc_svm")
# fmt: on


@recipe(
    "sparsey",
    config=SparseyRecipeConfig,
    presets=PRESETS,
    help="Sparsey SDR memory: single-trial learning on digits (MNIST at paper), recall, familiarity, sequence capacity",
    claim="Single-trial learning (one presentation per item, no gradients) on one CPU thread; the authors report 91% "
    "on MNIST after one pass over 200 images per class in 220 s. Here: scikit-learn digits, one pass over 100 per class.",
    headline=HEADLINE,
    goal="images/acc_svm >= 0.95 and images/acc_nn_overlap >= 0.85 and images/recall_now_items >= 0.9",
    key_figure="familiarity",
    paper={"images/acc_svm": "91% (MNIST, 200/class)", "images/learn_time_s": "220 s (MNIST, 2,000 items)"},
    paper_note="sparsey.com's MNIST result (not the arXiv paper); digits are smaller and easier than MNIST",
)
def run(cfg: SparseyRecipeConfig, run: Run) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    with torch.no_grad():
        out: dict[str, Any] = {}
        if cfg.image_data != "none":
            out["images"] = run.cached("images", lambda: _images_stage(cfg, run))
        out["probe"] = run.cached("probe", lambda: _probe_stage(cfg, run))
        out["sequences"] = run.cached("sequences", lambda: _sequences_stage(cfg, run))
        if cfg.video_data != "none":
            out["videos"] = run.cached("videos", lambda: _videos_stage(cfg, run))
    return out
