"""Measurements of a Sparsey memory: recall, familiarity, similarity preservation, capacity.

Paper: G. Rinkus, J. Leveille, "Superposed Episodic and Semantic Memory via Sparse Distributed
Representation", arXiv 1710.07829 (2017). Its claims are about single-trial storage: an item
stored once is retrieved by its code (episodic memory), familiarity
``G = (1/Q) sum_q max_{i in CM q} V_i`` is high for stored and low for novel inputs, similar
inputs get similar codes (SISC: code overlap ``|A ∩ B|`` grows with input overlap), and
sequences are stored as chains of codes linked by horizontal weights. This module measures each
of them so that every figure says what it counts:

- :func:`learn_items` / :func:`learn_sequences`: single-trial learning with the learned codes,
  the G each mac saw, which macs actually stored the item (active, not frozen, G < 1) and, if
  asked, recognition right after each item (immediate recall); learning time counts learning only.
- :func:`recall_metrics`: exact recall and per-CM match, immediately and at the end, over the
  (item, mac) pairs that stored the item and over all active pairs; item-level and top-level.
- :func:`familiarity_separation`: G of stored vs novel vs random inputs and the ROC AUC.
- :func:`overlap_pairs`: input vs code overlap (Jaccard) over random pairs, with Spearman's rho.
- :func:`sequence_capacity`: sequence recall against the number of stored sequences.
- :func:`accuracy_vs_items`: read-out accuracy against training items per class.
- :func:`image_memory`, :func:`recall_probe`, :func:`sequence_classification`: whole experiments.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..data.videos import displace_pixels
from ..errors import UserError
from .sparsey import LearnTrace, Sparsey, SparseyConfig

__all__ = [
    "StoreResult",
    "learn_items",
    "learn_sequences",
    "recall_metrics",
    "roc_auc",
    "familiarity_separation",
    "random_like",
    "random_sparse",
    "displace_pixels",
    "jaccard",
    "overlap_pairs",
    "sequence_capacity",
    "accuracy_vs_items",
    "image_memory",
    "recall_probe",
    "sequence_classification",
]


# ------------------------------------------------------------------------------------------------
# Inputs
# ------------------------------------------------------------------------------------------------
def random_sparse(n: int, shape: tuple[int, int], active: int, *, seed: int) -> Tensor:
    """``n`` binary images ``(n, H, W)`` with exactly ``active`` on-pixels each, uniformly placed."""
    H, W = shape
    if not 0 <= active <= H * W:
        raise UserError(f"active must be in [0, {H * W}] for a {H}x{W} image, got {active}")
    g = torch.Generator().manual_seed(seed)
    ranks = torch.rand(n, H * W, generator=g).argsort(1).argsort(1)  # a random permutation per row
    return (ranks < active).float().view(n, H, W)


def random_like(x: Tensor, n: int, *, seed: int) -> Tensor:
    """``n`` random binary images with ``x``'s shape ``(H, W)`` and mean on-pixel density."""
    x = torch.as_tensor(x).float()
    shape = tuple(x.shape[-2:])
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, *shape, generator=g) < float((x > 0).float().mean())).float()


def jaccard(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise Jaccard index of binary ``(N, D)`` tensors (0 where both are empty)."""
    a, b = (a > 0).float(), (b > 0).float()
    inter = (a * b).sum(1)
    return inter / (a.sum(1) + b.sum(1) - inter).clamp_min(1.0)


# ------------------------------------------------------------------------------------------------
# Learning with ground truth
# ------------------------------------------------------------------------------------------------
@dataclass
class StoreResult:
    """One single-trial pass.

    Attributes:
        trace: Learned codes, G and stored masks per level (:class:`~sparseforge.sdr.sparsey.LearnTrace`).
        immediate: Per level, recognition codes right after each item was learned (same shapes as
            ``trace.codes``), or None.
        learn_seconds: Time spent in learning calls only (immediate recall excluded).
    """

    trace: LearnTrace
    immediate: list[Tensor] | None
    learn_seconds: float


def learn_items(net: Sparsey, x: Tensor, *, immediate: bool = True) -> StoreResult:
    """Learn images one at a time (one presentation each); optionally recognise each at once."""
    parts: list[LearnTrace] = []
    now: list[list[Tensor]] = [[] for _ in net.n_macs]
    spent = 0.0
    for i in range(len(x)):
        t0 = time.perf_counter()
        parts.append(net.learn_trace(x[i : i + 1]))
        spent += time.perf_counter() - t0
        if immediate:
            codes, _ = net.encode_levels(x[i : i + 1])
            for lvl, c in enumerate(codes):
                now[lvl].append(c)
    return StoreResult(LearnTrace.cat(parts), [torch.cat(c) for c in now] if immediate else None, spent)


def learn_sequences(net: Sparsey, seqs: Tensor | Sequence[Tensor], *, immediate: bool = True) -> StoreResult:
    """Learn sequences ``(B, T, H, W)`` (or a list of ``(T, H, W)`` of one length) in order."""
    parts: list[LearnTrace] = []
    now: list[list[Tensor]] = [[] for _ in net.n_macs]
    spent = 0.0
    for s in seqs:
        t0 = time.perf_counter()
        parts.append(net.learn_sequence_trace(s))
        spent += time.perf_counter() - t0
        if immediate:
            codes, _ = net.encode_sequence_levels(s)
            for lvl, c in enumerate(codes):
                now[lvl].append(c)
    return StoreResult(LearnTrace.cat(parts), [torch.cat(c) for c in now] if immediate else None, spent)


def recall_metrics(
    trace: LearnTrace, recalled: list[Tensor], *, immediate: list[Tensor] | None = None
) -> dict[str, Any]:
    """Exact recall and per-CM match of learned codes.

    Args:
        trace: What learning did (codes ``(N, [T,] M_l, Q_l)`` per level, G, stored).
        recalled: Recognition codes at the end, shaped like ``trace.codes``.
        immediate: Recognition codes right after each item was learned (optional).

    Returns:
        A nested dict; per level ``L<l>``: ``stored_frac`` (stored among active (item, mac)
        pairs), ``exact_stored_end`` / ``cm_match_stored_end`` (over stored pairs),
        ``exact_active_end`` (over active pairs) and, with ``immediate``, ``exact_stored_now`` /
        ``exact_active_now``. ``items``: ``exact_end`` / ``exact_now`` (every active mac of every
        level reproduces its learned code) and ``top_exact_end`` / ``top_exact_now`` (the
        top-level code, what :meth:`Sparsey.encode` returns, equals the learned one). An empty
        selection gives NaN.
    """

    def frac(m: Tensor, sel: Tensor) -> float:
        return float(m[sel].float().mean()) if bool(sel.any()) else float("nan")

    out: dict[str, Any] = {}
    lead = trace.codes[0].shape[: trace.codes[0].dim() - 2]  # (N,) or (N, T)
    item_end = torch.ones(lead, dtype=torch.bool)
    item_now = torch.ones(lead, dtype=torch.bool)
    for lvl, (learned, rec) in enumerate(zip(trace.codes, recalled)):
        active = (learned >= 0).all(-1)  # (..., M)
        stored = trace.stored[lvl] & active
        same_end = (rec == learned).all(-1)
        row: dict[str, float] = {
            "stored_frac": frac(stored, active),
            "exact_stored_end": frac(same_end, stored),
            "cm_match_stored_end": float((rec == learned).float().mean(-1)[stored].mean())
            if bool(stored.any())
            else float("nan"),
            "exact_active_end": frac(same_end, active),
        }
        item_end &= (same_end | ~active).all(-1)
        if immediate is not None:
            same_now = (immediate[lvl] == learned).all(-1)
            row["exact_stored_now"] = frac(same_now, stored)
            row["exact_active_now"] = frac(same_now, active)
            item_now &= (same_now | ~active).all(-1)
        out[f"L{lvl + 1}"] = row
    top_l, top_r = trace.codes[-1].flatten(-2), recalled[-1].flatten(-2)
    items: dict[str, float] = {
        "exact_end": float(item_end.float().mean()),
        "top_exact_end": float((top_l == top_r).all(-1).float().mean()),
    }
    top_stored = trace.stored[-1].any(-1)
    items["top_exact_stored_end"] = frac((top_l == top_r).all(-1), top_stored)
    items["top_stored_frac"] = float(top_stored.float().mean())
    if immediate is not None:
        items["exact_now"] = float(item_now.float().mean())
        items["top_exact_now"] = float((top_l == immediate[-1].flatten(-2)).all(-1).float().mean())
    out["items"] = items
    return out


# ------------------------------------------------------------------------------------------------
# Familiarity and similarity
# ------------------------------------------------------------------------------------------------
def roc_auc(pos: Tensor, neg: Tensor) -> float:
    """P(score of a positive > score of a negative) + 0.5 P(tie): the ROC AUC (Mann-Whitney)."""
    pos, neg = torch.as_tensor(pos).double().flatten(), torch.as_tensor(neg).double().flatten()
    if pos.numel() == 0 or neg.numel() == 0:
        return float("nan")
    s = neg.sort().values
    below = torch.searchsorted(s, pos, right=False).double()  # negatives strictly below each positive
    ties = torch.searchsorted(s, pos, right=True).double() - below
    return float((below + 0.5 * ties).sum() / (pos.numel() * neg.numel()))


def familiarity_separation(g_seen: Tensor, g_novel: Tensor, g_random: Tensor | None = None) -> dict[str, float]:
    """Familiarity of stored vs novel (vs random) inputs.

    Returns:
        ``G_seen``, ``G_novel``, ``G_random`` (means), ``seen_full_frac`` (stored items with
        G = 1), ``auc_seen_vs_novel`` and ``auc_seen_vs_random`` (probability that a stored item
        is more familiar than a novel / random one; 0.5 = no separation).
    """
    out = {
        "G_seen": float(g_seen.float().mean()),
        "G_novel": float(g_novel.float().mean()),
        "seen_full_frac": float((g_seen >= 1.0).float().mean()),
        "auc_seen_vs_novel": roc_auc(g_seen, g_novel),
    }
    if g_random is not None:
        out["G_random"] = float(g_random.float().mean())
        out["auc_seen_vs_random"] = roc_auc(g_seen, g_random)
    return out


def overlap_pairs(x: Tensor, cells: Tensor, *, n_pairs: int, seed: int) -> tuple[Tensor, Tensor, float]:
    """Input overlap vs code overlap over random pairs (SISC).

    Args:
        x: Binary inputs ``(N, ...)``; cells: their active-cell vectors ``(N, n_cells)``.

    Returns:
        ``(input_jaccard, code_jaccard, spearman_rho)`` over ``n_pairs`` random pairs ``i != j``.
    """
    from scipy.stats import spearmanr

    n = x.shape[0]
    if n < 2:
        raise UserError("overlap_pairs needs at least 2 inputs")
    g = torch.Generator().manual_seed(seed)
    i = torch.randint(0, n, (n_pairs,), generator=g)
    j = (i + torch.randint(1, n, (n_pairs,), generator=g)) % n  # j != i
    xin = jaccard(x[i].flatten(1), x[j].flatten(1))
    cov = jaccard(cells[i], cells[j])
    rho = float(spearmanr(xin.tolist(), cov.tolist()).statistic)
    return xin, cov, rho


# ------------------------------------------------------------------------------------------------
# Capacity and few-shot curves
# ------------------------------------------------------------------------------------------------
def sequence_capacity(
    config: SparseyConfig,
    *,
    n_sequences: Sequence[int] = (1, 5, 10, 20, 40),
    frames: int = 6,
    active: int = 26,
    seeds: Sequence[int] = (0, 1, 2),
    make_sequences: Callable[[int, int], Tensor] | None = None,
) -> list[dict[str, float]]:
    """Sequence recall against the number of stored sequences.

    For each count n and seed, a fresh network (``config`` with that seed) learns n sequences of
    ``frames`` random sparse frames (``active`` on-pixels each, or ``make_sequences(n, seed)`` ->
    ``(n, T, H, W)``) once, then recognises each again after all n are stored.

    Returns:
        One row per n (means over seeds): ``top_recall`` (frames whose top-level code equals the
        learned one), ``top_recall_now`` (recognised right after their sequence), ``top_recall_stored``
        (over frames the top level stored), ``top_stored_frac``, ``top_cm_match``, ``L1_cm_match``,
        ``frozen_frac_L<l>`` (macs past their critical period at the end).
    """
    from dataclasses import replace

    from ..data.videos import random_sparse_sequences

    rows = []
    for n in n_sequences:
        acc: dict[str, list[float]] = {}
        for seed in seeds:
            if make_sequences is None:
                X = random_sparse_sequences(n, frames, config.input_shape, active, seed=1000 + seed)
            else:
                X = make_sequences(n, seed)
            net = Sparsey(replace(config, seed=seed))
            res = learn_sequences(net, X, immediate=True)
            rec, _ = net.encode_sequence_levels(X)
            m = recall_metrics(res.trace, rec, immediate=res.immediate)
            top_l, top_r = res.trace.codes[-1], rec[-1]
            vals = {
                "top_recall": m["items"]["top_exact_end"],
                "top_recall_now": m["items"]["top_exact_now"],
                "top_recall_stored": m["items"]["top_exact_stored_end"],
                "top_stored_frac": m["items"]["top_stored_frac"],
                "top_cm_match": float((top_l == top_r).float().mean()),
                "L1_cm_match": float((res.trace.codes[0] == rec[0]).float().mean()),
            }
            for lvl in range(config.n_levels):
                vals[f"frozen_frac_L{lvl + 1}"] = float(net.frozen_mask(lvl).float().mean())
            for k, v in vals.items():
                acc.setdefault(k, []).append(v)
        rows.append({"n_sequences": n, **{k: sum(v) / len(v) for k, v in acc.items()}})
    return rows


def accuracy_vs_items(
    make_net: Callable[[], Sparsey],
    xtr: Tensor,
    ytr: Tensor,
    xte: Tensor,
    yte: Tensor,
    *,
    per_class: Sequence[int],
    kinds: Sequence[str] = ("count", "binary", "nn_overlap", "svm"),
    levels: str | Sequence[int] = "all",
) -> list[dict[str, float]]:
    """Test accuracy after one pass over the first ``n`` training items of each class, per ``n``
    (a fresh network each), with 1-NN on raw pixels of the same items as the baseline."""
    from .readout import pixel_knn_accuracy, readout_accuracies

    rows = []
    n_cls = int(ytr.max()) + 1
    for n in per_class:
        keep = torch.cat([torch.nonzero(ytr == c).flatten()[:n] for c in range(n_cls)]).sort().values
        net = make_net()
        net.learn(xtr[keep])
        acc = readout_accuracies(
            net.cells(xtr[keep], levels=levels), ytr[keep], net.cells(xte, levels=levels), yte, kinds=kinds
        )
        rows.append({"per_class": n, **acc, "knn_pixels": pixel_knn_accuracy(xtr[keep], ytr[keep], xte, yte)})
    return rows


# ------------------------------------------------------------------------------------------------
# Whole experiments (what the ``sparsey`` recipe reports)
# ------------------------------------------------------------------------------------------------
def image_memory(
    net: Sparsey,
    xtr: Tensor,
    ytr: Tensor,
    xte: Tensor,
    yte: Tensor,
    *,
    readout_levels: str | Sequence[int] = (0,),
    kinds: Sequence[str] = ("count", "binary", "nn_overlap", "svm"),
    n_pairs: int = 300,
    seed: int = 0,
) -> dict[str, Any]:
    """One pass over ``xtr`` (single trial, in order), then every measurement of the images.

    Returns:
        ``acc`` (read-outs on the codes of ``readout_levels``), ``knn_pixels`` (1-NN on raw
        pixels), ``learn_seconds``, ``recall`` (:func:`recall_metrics`), ``familiarity``
        (:func:`familiarity_separation` of the top level's G), ``G`` (per-item G of ``seen`` /
        ``novel`` / ``random`` inputs), ``pairs`` (input and code Jaccard of random test pairs),
        ``sisc_spearman`` and ``summary`` (the headline figures, flat and rounded).
    """
    from .readout import pixel_knn_accuracy, readout_accuracies

    res = learn_items(net, xtr, immediate=True)
    codes_tr, _ = net.encode_levels(xtr)
    codes_te, _ = net.encode_levels(xte)
    a_tr, a_te = (
        net.codes_to_active(codes_tr, levels=readout_levels),
        net.codes_to_active(codes_te, levels=readout_levels),
    )
    G = {
        "seen": net.familiarity(xtr),
        "novel": net.familiarity(xte),
        "random": net.familiarity(random_like(xtr, len(xte), seed=seed)),
    }
    xin, cov, rho = overlap_pairs(xte, a_te, n_pairs=n_pairs, seed=seed + 7)
    acc = readout_accuracies(a_tr, ytr, a_te, yte, kinds=kinds)
    knn = pixel_knn_accuracy(xtr, ytr, xte, yte)
    rec = recall_metrics(res.trace, codes_tr, immediate=res.immediate)
    fam = familiarity_separation(G["seen"], G["novel"], G["random"])
    L1, items = rec["L1"], rec["items"]
    summary = {
        **{f"acc_{k}": v for k, v in acc.items()},
        "acc_knn_pixels": knn,
        "learn_time_s": res.learn_seconds,
        "recall_now_items": items["exact_now"],
        "recall_end_items": items["exact_end"],
        "recall_end_top": items["top_exact_end"],
        "recall_end_top_stored": items["top_exact_stored_end"],
        "recall_end_L1_stored": L1["exact_stored_end"],
        "cm_match_end_L1_stored": L1["cm_match_stored_end"],
        "L1_stored_frac": L1["stored_frac"],
        **{f"familiarity_{k}": v for k, v in fam.items()},
        "sisc_spearman": rho,
    }
    return {
        "acc": acc,
        "knn_pixels": knn,
        "learn_seconds": res.learn_seconds,
        "recall": rec,
        "familiarity": fam,
        "G": G,
        "pairs": (xin, cov),
        "sisc_spearman": rho,
        "summary": {k: round(float(v), 4) for k, v in summary.items()},
    }


def recall_probe(configs: dict[str, SparseyConfig], data: dict[str, Tensor]) -> list[dict[str, Any]]:
    """A new user's check: each config learns each data set once, item by item; recall of the
    top-level code right after each item (``now``) and after all of them (``end``)."""
    rows = []
    for dname, x in data.items():
        for cname, cfg in configs.items():
            net = Sparsey(cfg)
            res = learn_items(net, x)
            m = recall_metrics(res.trace, net.encode_levels(x)[0], immediate=res.immediate)["items"]
            rows.append(
                {"data": dname, "config": cname, "recall_now": m["top_exact_now"], "recall_end": m["top_exact_end"]}
            )
    return rows


def sequence_classification(
    net: Sparsey,
    train: Sequence[Tensor],
    y_train: Tensor,
    test: Sequence[Tensor],
    y_test: Tensor,
    *,
    kinds: Sequence[str] = ("count", "binary", "nn_overlap", "svm"),
) -> dict[str, Any]:
    """Learn each training sequence ``(T_i, H, W)`` once; classify from the last-frame codes of all
    levels. Returns ``acc`` per read-out and a flat ``summary`` (``chain_recall_frac``: training
    sequences whose every top-level code comes back; ``G_seen`` / ``G_test``: mean top G)."""
    from .readout import readout_accuracies

    res = [learn_sequences(net, s[None], immediate=False) for s in train]
    chain = [torch.equal(net.encode_sequence_levels(s)[0][-1], r.trace.codes[-1]) for s, r in zip(train, res)]

    def last_cells(seqs: Sequence[Tensor]) -> Tensor:
        return torch.stack([net.codes_to_active([c[0, -1] for c in net.encode_sequence_levels(s)[0]]) for s in seqs])

    g_seen, g_test = (float(torch.cat([net.familiarity_sequence(s)[0] for s in ss]).mean()) for ss in (train, test))
    acc = readout_accuracies(last_cells(train), y_train, last_cells(test), y_test, kinds=kinds)
    summary = {
        **{f"acc_{k}": v for k, v in acc.items()},
        "chance": 1.0 / (int(y_train.max()) + 1),
        "learn_time_s": sum(r.learn_seconds for r in res),
        "chain_recall_frac": sum(chain) / len(chain),
        "G_seen": g_seen,
        "G_test": g_test,
    }
    return {"acc": acc, "summary": {k: round(float(v), 4) for k, v in summary.items()}}
