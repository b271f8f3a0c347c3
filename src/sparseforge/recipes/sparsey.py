"""Recipe ``sparsey``: single-pass SDR memory on images and sequences.

Paper: Rinkus & Leveille, "Superposed Episodic and Semantic Memory via Sparse Distributed
Representation", arXiv 1710.07829 (CSA equations: :mod:`sparseforge.sdr.sparsey`).

Stages:
1. **images** - one pass over the training split (``digits``: the spec's measured configuration:
   bilinear x2, threshold 8/16, boundary pixels; 100 items per class, 797 test; ``mnist`` at
   ``paper``: IDX files from ``data_dir``, 16x24 binarised and skeletonised, 200 per class as in
   the published 91% result), then test accuracy of the read-outs (count, binary, nn_overlap,
   svm) next to 1-NN on raw binary pixels; accuracy vs items per class; exact recall; familiarity
   of seen vs novel items; code overlap vs input overlap.
2. **sequences** - generated moving-shape videos (default) or Weizmann-style frame folders from
   ``video_dir`` (``paper``); single pass with U+H(+D), classify from the last-frame codes.

Measured on the shared 2-core dev machine (load ~6): ``smoke`` 7 s, ``quick`` 35 s wall (15 s CPU);
``paper`` needs MNIST IDX files and a frame-folder dataset (not run here).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import torch

from ..config import RecipeConfig
from ..engine.run import Run
from ..errors import ConfigError, UserError
from . import recipe


@dataclass
class SparseyRecipeConfig(RecipeConfig):
    """Config of the ``sparsey`` recipe (image-model defaults = the spec's measured digits setup).

    Attributes:
        image_data: "digits" (bundled) or "mnist" (IDX files under ``data_dir``), or "none".
        data_dir: Folder with MNIST IDX files (``train-images-idx3-ubyte`` ...).
        train_per_class: Training items per class (single pass).
        test_per_class: MNIST test items per class (digits: all remaining items).
        max_test: Cap on test items (0 = no cap).
        input_mode: "edges" (boundary pixels), "binary" or "skeleton" (Zhang-Suen).
        grid, window, Q, K, band, freeze_threshold, inflection, slope: the image model's level.
        per_class_curve: Items-per-class values for the accuracy curve (empty = skip).
        video_data: "moving_shapes" (generated), "frames" (``video_dir``) or "none".
        video_dir: Weizmann-style folders ``<class>/<sequence>/*.png|*.pgm`` (or ``.npy``).
        video_size: Frame size the videos are resized to.
        video_train_per_class, video_test_per_class, video_frames: moving-shapes sizes.
        video_noise: Fraction of on-pixels displaced in the frame-folder test copies.
        n_pairs: Random test pairs in the overlap scatter.
    """

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
    band: tuple[float, float] = (0.1, 0.3)
    freeze_threshold: float = 0.2
    inflection: float = 0.9
    slope: float = 32.0
    per_class_curve: tuple[int, ...] = (10, 50)
    video_data: Literal["moving_shapes", "frames", "none"] = "moving_shapes"
    video_dir: str | None = None
    video_size: tuple[int, int] = (16, 16)
    video_train_per_class: int = 20
    video_test_per_class: int = 10
    video_frames: int = 8
    video_noise: float = 0.4
    n_pairs: int = 300

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.train_per_class < 1 or self.test_per_class < 1:
            raise ConfigError("train_per_class and test_per_class must be >= 1")
        if self.grid < 1 or self.window < 1 or self.Q < 1 or self.K < 2:
            raise ConfigError("grid, window, Q must be >= 1 and K >= 2")
        if self.video_train_per_class < 1 or self.video_test_per_class < 1 or self.video_frames < 2:
            raise ConfigError("video_train_per_class, video_test_per_class >= 1 and video_frames >= 2")
        if not 0.0 <= self.video_noise <= 1.0:
            raise ConfigError(f"video_noise must be in [0, 1], got {self.video_noise}")


# ------------------------------------------------------------------------------------------------
def _image_data(cfg: SparseyRecipeConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from ..sdr import preprocess as P

    if cfg.image_data == "digits":
        if cfg.input_mode == "edges":
            data = P.digits_edges(cfg.seed, per_class=cfg.train_per_class)
        else:
            data = P.digits_binary(cfg.seed, per_class=cfg.train_per_class, skeletonize=cfg.input_mode == "skeleton")
    else:
        if not cfg.data_dir:
            raise UserError("image_data=mnist needs the MNIST IDX folder: add --set data_dir=/path/to/mnist")
        from ..data.idx import load_mnist_dir

        xtr, ytr = load_mnist_dir(cfg.data_dir, "train")
        xte, yte = load_mnist_dir(cfg.data_dir, "test")
        itr, _ = P.per_class_split(ytr, cfg.train_per_class, cfg.seed)
        ite, _ = P.per_class_split(yte, cfg.test_per_class, cfg.seed + 1)
        prep = (
            (lambda x: P.boundary(P.to_sparsey_format(x, skeletonize=False)))
            if cfg.input_mode == "edges"
            else (lambda x: P.to_sparsey_format(x, skeletonize=cfg.input_mode == "skeleton"))
        )
        data = prep(xtr[itr]), ytr[itr], prep(xte[ite]), yte[ite]
    xtr, ytr, xte, yte = data
    if cfg.max_test:
        xte, yte = xte[: cfg.max_test], yte[: cfg.max_test]
    return xtr, ytr, xte, yte


def _image_model(cfg: SparseyRecipeConfig, shape: tuple[int, int]):  # noqa: ANN202
    from ..sdr import Sparsey, SparseyConfig

    window = min(cfg.window, *shape)
    return Sparsey(
        SparseyConfig(
            input_shape=shape, grids=(cfg.grid,), windows=(window,), Q=cfg.Q, K=cfg.K,
            band_l1=cfg.band, freeze_threshold=cfg.freeze_threshold, inflection=cfg.inflection,
            slope=cfg.slope, use_h=False, use_d=False, seed=cfg.seed,
        )
    )  # fmt: skip


def _knn_pixels(xtr: torch.Tensor, ytr: torch.Tensor, xte: torch.Tensor, yte: torch.Tensor) -> float:
    from sklearn.neighbors import KNeighborsClassifier

    knn = KNeighborsClassifier(n_neighbors=1).fit(xtr.flatten(1).numpy(), ytr.numpy())
    return float((torch.as_tensor(knn.predict(xte.flatten(1).numpy())) == yte).float().mean())


def _readouts(Atr: torch.Tensor, ytr: torch.Tensor, Ate: torch.Tensor, yte: torch.Tensor) -> dict[str, float]:
    from ..sdr import Readout

    return {k: Readout(k).fit(Atr, ytr).accuracy(Ate, yte) for k in ("count", "binary", "nn_overlap", "svm")}


def _images_stage(cfg: SparseyRecipeConfig, run: Run) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import spearmanr

    xtr, ytr, xte, yte = _image_data(cfg)
    shape = (int(xtr.shape[-2]), int(xtr.shape[-1]))
    net = _image_model(cfg, shape)
    t0 = time.perf_counter()
    learned, stored = [], []  # stored[i]: macs that were active and not frozen when item i came
    for i in range(len(xtr)):
        frozen = net.frozen_U_0.clone()
        code = net.learn(xtr[i : i + 1]).view(net.n_macs[0], net.Q)
        learned.append(code)
        stored.append((code[:, 0] >= 0) & ~frozen)
    learn_s = time.perf_counter() - t0
    learned_t, stored_t = torch.stack(learned), torch.stack(stored)  # (N, M, Q), (N, M)
    t0 = time.perf_counter()
    codes_tr, g_tr = net.encode_levels(xtr)
    codes_te, g_te = net.encode_levels(xte)
    enc_s = time.perf_counter() - t0
    Atr, Ate = net.codes_to_active(codes_tr), net.codes_to_active(codes_te)
    acc = _readouts(Atr, ytr, Ate, yte)
    knn = _knn_pixels(xtr, ytr, xte, yte)
    same = (codes_tr[0] == learned_t).all(-1)  # (N, M) mac code reproduced
    recall = float(same[stored_t].float().mean()) if bool(stored_t.any()) else float("nan")
    recall_items = float((same | ~stored_t).all(1).float().mean())  # every storing mac recalled
    after_freeze = float((~stored_t & (learned_t[..., 0] >= 0)).all(1).float().mean())
    fam_seen = net.familiarity(xtr)
    fam_test = net.familiarity(xte)
    density = float(xtr.mean())
    rand = (torch.rand(len(xte), *shape, generator=torch.Generator().manual_seed(cfg.seed)) < density).float()
    fam_rand = net.familiarity(rand)
    stats = net.stats()
    # per-mac diagnostics (spec pitfalls: G near 1 early or saturation > 0.3 = collapse)
    sat = net.saturation(0)
    act = net.active_frames_0.clamp_min(1)
    g_mac = (net.g_sum_0 / act).float()
    for m in range(net.n_macs[0]):
        run.log(
            m, series="mac", mean_G=float(g_mac[m]), saturation=float(sat[m]), learn_frames=int(net.learn_frames_0[m])
        )
    # accuracy vs items per class (target d)
    curve = []
    for n in cfg.per_class_curve:
        if n >= cfg.train_per_class:
            continue
        keep = torch.cat([torch.nonzero(ytr == c).flatten()[:n] for c in range(int(ytr.max()) + 1)]).sort().values
        sub = _image_model(cfg, shape)
        sub.learn(xtr[keep])
        a_tr, a_te = sub.cells(xtr[keep]), sub.cells(xte)
        r = _readouts(a_tr, ytr[keep], a_te, yte)
        r["knn_pixels"] = _knn_pixels(xtr[keep], ytr[keep], xte, yte)
        curve.append({"per_class": n, **r})
        run.log(n, series="per_class", **r)
    full = {"per_class": cfg.train_per_class, **acc, "knn_pixels": knn}
    curve.append(full)
    run.log(cfg.train_per_class, series="per_class", **{k: v for k, v in full.items() if k != "per_class"})
    run.save_table("accuracy_vs_items", curve, caption="test accuracy after one pass vs training items per class")
    # scatter: code overlap vs input overlap over random test pairs
    g = torch.Generator().manual_seed(cfg.seed + 7)
    i = torch.randint(0, len(xte), (cfg.n_pairs,), generator=g)
    j = torch.randint(0, len(xte), (cfg.n_pairs,), generator=g)
    xin = (xte[i] * xte[j]).flatten(1).sum(1) / (xte[i] + xte[j] - xte[i] * xte[j]).flatten(1).sum(1).clamp_min(1)
    cov = (Ate[i] * Ate[j]).sum(1) / (Ate[i] + Ate[j] - Ate[i] * Ate[j]).sum(1).clamp_min(1)
    rho = float(spearmanr(xin.tolist(), cov.tolist()).statistic)
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    ax.scatter(xin, cov, s=8, alpha=0.6)
    ax.set_xlabel("input overlap (Jaccard of pixels)")
    ax.set_ylabel("code overlap (Jaccard of active cells)")
    ax.set_title(f"SISC: Spearman {rho:.2f}")
    run.save_figure(fig, "code_vs_input_overlap", caption="similar inputs get similar codes (random test pairs)")
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    bins = torch.linspace(0, 1, 26).tolist()
    ax.hist(fam_seen.tolist(), bins=bins, alpha=0.6, label="learned items")
    ax.hist(fam_test.tolist(), bins=bins, alpha=0.6, label="novel test items")
    ax.hist(fam_rand.tolist(), bins=bins, alpha=0.6, label="random images")
    ax.set_xlabel("familiarity G")
    ax.legend()
    run.save_figure(fig, "familiarity", caption="familiarity of seen vs novel items")
    rows = [{"method": f"sparsey + {k}", "test_acc": v} for k, v in acc.items()]
    rows.append({"method": "1-NN raw binary pixels", "test_acc": knn})
    run.save_table("image_results", rows, caption=f"{cfg.image_data}: one pass over {len(xtr)} training items")
    n = len(xtr) + len(xte)
    return {
        "n_train": len(xtr),
        "n_test": len(xte),
        **{f"acc_{k}": round(v, 4) for k, v in acc.items()},
        "acc_knn_pixels": round(knn, 4),
        "learn_time_s": round(learn_s, 3),
        "codes_per_s": round(n / max(enc_s, 1e-9), 1),
        "memory_bits": net.memory_bits(),
        "memory_kib": round(net.memory_bits() / 8 / 1024, 1),
        "exact_recall_frac": round(recall, 4),
        "exact_recall_items_frac": round(recall_items, 4),
        "G_storing_macs": round(float(g_tr[0][stored_t].mean()), 4) if bool(stored_t.any()) else 0.0,
        "items_after_all_frozen_frac": round(after_freeze, 4),
        "G_seen": round(float(fam_seen.mean()), 4),
        "G_novel_test": round(float(fam_test.mean()), 4),
        "G_random": round(float(fam_rand.mean()), 4),
        "sisc_spearman": round(rho, 4),
        **{k: round(v, 4) for k, v in stats.items()},
    }


def _noisy(seq: torch.Tensor, frac: float, g: torch.Generator) -> torch.Tensor:
    """Move ``frac`` of each frame's on-pixels to random off positions."""
    out = seq.clone()
    T = seq.shape[0]
    for t in range(T):
        f = out[t].flatten()
        on, off = torch.nonzero(f > 0).flatten(), torch.nonzero(f == 0).flatten()
        k = min(int(round(frac * len(on))), len(off))
        if k:
            f[on[torch.randperm(len(on), generator=g)[:k]]] = 0.0
            f[off[torch.randperm(len(off), generator=g)[:k]]] = 1.0
        out[t] = f.view_as(out[t])
    return out


def _videos_stage(cfg: SparseyRecipeConfig, run: Run) -> dict[str, Any]:
    from ..data.videos import load_frame_folders, moving_shapes_splits
    from ..sdr import Sparsey, SparseyConfig

    if cfg.video_data == "moving_shapes":
        Xtr, ytr, Xte, yte = moving_shapes_splits(
            cfg.video_train_per_class, cfg.video_test_per_class, cfg.video_frames, cfg.video_size[0], cfg.seed
        )
        train, test = list(Xtr), list(Xte)
    else:
        if not cfg.video_dir:
            raise UserError("video_data=frames needs Weizmann-style frame folders: add --set video_dir=/path")
        seqs, ytr, _ = load_frame_folders(cfg.video_dir, size=tuple(cfg.video_size))
        g = torch.Generator().manual_seed(cfg.seed)
        train, test, yte = seqs, [_noisy(s, cfg.video_noise, g) for s in seqs], ytr
    H, W = cfg.video_size
    net = Sparsey(SparseyConfig(input_shape=(H, W), grids=(4, 1), windows=(min(7, H, W), 0), seed=cfg.seed))
    t0 = time.perf_counter()
    learned = [net.learn_sequence(s)[0] for s in train]  # (T, Q) each
    learn_s = time.perf_counter() - t0
    chain = [torch.equal(net.encode_sequence(s)[0], c) for s, c in zip(train, learned)]

    def last_cells(seqs: list[torch.Tensor]) -> torch.Tensor:
        out = []
        for s in seqs:
            codes, _ = net.encode_sequence_levels(s)
            out.append(net.codes_to_active([c[:, -1] for c in codes])[0])
        return torch.stack(out)

    acc = _readouts(last_cells(train), ytr, last_cells(test), yte)
    g_seen = float(torch.stack([net.familiarity_sequence(s)[0].mean() for s in train]).mean())
    g_test = float(torch.stack([net.familiarity_sequence(s)[0].mean() for s in test]).mean())
    run.save_table(
        "sequence_results",
        [{"method": f"sparsey last-frame codes + {k}", "test_acc": v} for k, v in acc.items()],
        caption=f"{cfg.video_data}: {len(train)} training sequences, {len(test)} test",
    )
    return {
        "n_train": len(train),
        "n_test": len(test),
        **{f"acc_{k}": round(v, 4) for k, v in acc.items()},
        "chance": round(1.0 / (int(ytr.max()) + 1), 4),
        "learn_time_s": round(learn_s, 3),
        "chain_recall_frac": round(sum(chain) / len(chain), 4),
        "G_seen": round(g_seen, 4),
        "G_test": round(g_test, 4),
        "memory_bits": net.memory_bits(),
    }


@recipe(
    "sparsey",
    config=SparseyRecipeConfig,
    presets={
        "smoke": {
            "train_per_class": 8,
            "max_test": 120,
            "per_class_curve": (),
            "n_pairs": 100,
            "video_train_per_class": 3,
            "video_test_per_class": 2,
            "video_frames": 4,
        },
        "quick": {},
        "paper": {
            "image_data": "mnist",
            "train_per_class": 200,
            "test_per_class": 100,
            "input_mode": "skeleton",
            "video_data": "frames",
            "video_size": (30, 21),
            "per_class_curve": (10, 50, 100),
        },
    },  # fmt: skip
    help="Sparsey SDR memory: single-pass learning on digits (MNIST at paper) and moving-shape videos",
    headline=("images/acc_svm", "images/acc_nn_overlap", "images/acc_count", "images/acc_knn_pixels",
              "images/learn_time_s", "videos/acc_svm"),
)
def run(cfg: SparseyRecipeConfig, run: Run) -> dict[str, Any]:
    torch.set_grad_enabled(False)
    try:
        out: dict[str, Any] = {}
        if cfg.image_data != "none":
            out["images"] = _images_stage(cfg, run)
        if cfg.video_data != "none":
            out["videos"] = _videos_stage(cfg, run)
    finally:
        torch.set_grad_enabled(True)
    return out
