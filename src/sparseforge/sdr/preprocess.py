"""Binary image preparation for Sparsey.

Paper: Rinkus & Leveille, "Superposed Episodic and Semantic Memory via Sparse Distributed
Representation", arXiv 1710.07829. Sparsey's inputs are binary: MNIST was scaled to 16x24,
binarised and skeletonised. This module holds our own implementations of

- ``digits_binary``: scikit-learn digits -> threshold (pixel >= 8 of 16) -> nearest x2 -> 16x16,
  optional Zhang-Suen thinning; 100 training items per class by a seeded permutation, rest test;
- ``digits_edges``: sparse edge input (bilinear x2, threshold 8/16, boundary pixels), so only a few
  pixels are on in any small receptive field;
- ``zhang_suen``: Zhang & Suen (1984) thinning (two sub-iterations until no change);
- ``boundary``: on-pixels with at least one 4-neighbour off;
- ``to_sparsey_format``: area-average resize -> threshold -> optional thinning (MNIST);
- ``load_sparsey_raw``: the authors' ``.raw`` files (24 rows x 16 columns, one byte per pixel);
- ``mnist_sparsey``: MNIST IDX files -> per-class train/test splits in the authors' format.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import DataFormatError

__all__ = [
    "boundary",
    "zhang_suen",
    "area_resize",
    "to_sparsey_format",
    "per_class_split",
    "digits_binary",
    "digits_edges",
    "load_sparsey_raw",
    "mnist_sparsey",
]


def boundary(x: Tensor) -> Tensor:
    """Boundary of binary images ``(..., H, W)``: on-pixels with an off 4-neighbour (outside = off)."""
    b = (x > 0).float()
    shp = b.shape
    b4 = b.reshape(-1, 1, *shp[-2:])
    p = F.pad(b4, (1, 1, 1, 1))
    nb_min = torch.minimum(
        torch.minimum(p[..., :-2, 1:-1], p[..., 2:, 1:-1]), torch.minimum(p[..., 1:-1, :-2], p[..., 1:-1, 2:])
    )
    return (b4 * (1 - nb_min)).reshape(shp)


def zhang_suen(img: Tensor) -> Tensor:
    """Zhang-Suen thinning of binary images ``(..., H, W)`` (vectorised; outside = off)."""
    x = (img > 0).float()
    shp = x.shape
    x = x.reshape(-1, *shp[-2:]).clone()
    while True:
        changed = False
        for step in (0, 1):
            p = F.pad(x, (1, 1, 1, 1))
            c = p[:, 1:-1, 1:-1]
            # neighbours P2..P9, clockwise from north
            n = [
                p[:, :-2, 1:-1], p[:, :-2, 2:], p[:, 1:-1, 2:], p[:, 2:, 2:],
                p[:, 2:, 1:-1], p[:, 2:, :-2], p[:, 1:-1, :-2], p[:, :-2, :-2],
            ]  # fmt: skip
            Bn = sum(n)
            An = sum(((n[i] == 0) & (n[(i + 1) % 8] == 1)).float() for i in range(8))
            p2, p4, p6, p8 = n[0], n[2], n[4], n[6]
            if step == 0:
                cond = (p2 * p4 * p6 == 0) & (p4 * p6 * p8 == 0)
            else:
                cond = (p2 * p4 * p8 == 0) & (p2 * p6 * p8 == 0)
            remove = (c == 1) & (Bn >= 2) & (Bn <= 6) & (An == 1) & cond
            if bool(remove.any()):
                x = x * (~remove).float()
                changed = True
        if not changed:
            return x.reshape(shp)


def area_resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Area-averaging resize of ``(..., H, W)`` images to ``size`` (our own, via adaptive pooling)."""
    shp = x.shape
    y = F.adaptive_avg_pool2d(x.reshape(-1, 1, *shp[-2:]).float(), size)
    return y.reshape(*shp[:-2], *size)


def to_sparsey_format(
    x: Tensor, *, resize: tuple[int, int] = (24, 16), threshold: float = 0.5, skeletonize: bool = True
) -> Tensor:
    """MNIST-style images in [0, 1] ``(N, [1,] H, W)`` -> binary ``(N, *resize)`` (the authors'
    16x24 binarised, skeletonised format)."""
    x = x.float()
    if x.dim() == 4:
        x = x[:, 0]
    if x.max() > 1.0:
        x = x / 255.0
    y = (area_resize(x, resize) >= threshold).float()
    return zhang_suen(y) if skeletonize else y


def per_class_split(y: Tensor, per_class: int, seed: int) -> tuple[Tensor, Tensor]:
    """Indices: ``per_class`` training items per class by a seeded permutation, the rest for test."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y), generator=g)
    train: list[int] = []
    counts: dict[int, int] = {}
    for i in perm.tolist():
        c = int(y[i])
        if counts.get(c, 0) < per_class:
            counts[c] = counts.get(c, 0) + 1
            train.append(i)
    mask = torch.zeros(len(y), dtype=torch.bool)
    mask[train] = True
    tr = perm[mask[perm]]  # training order = the seeded permutation order
    te = torch.nonzero(~mask).flatten()
    return tr, te


def _all_digits() -> tuple[Tensor, Tensor]:
    from ..data.digits import load_digits_builtin

    x_tr, y_tr, x_te, y_te = load_digits_builtin(0)
    return torch.cat([x_tr, x_te])[:, 0], torch.cat([y_tr, y_te])  # (1797, 8, 8) in [0, 1]


def digits_binary(
    split_seed: int = 0, *, upsample: int = 2, threshold: float = 8, skeletonize: bool = False, per_class: int = 100
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """scikit-learn digits: pixel >= threshold (of 16) -> nearest upsample -> 16x16 {0, 1}."""
    x, y = _all_digits()
    b = (x * 16.0 >= threshold).float()
    b = b.repeat_interleave(upsample, -2).repeat_interleave(upsample, -1)
    if skeletonize:
        b = zhang_suen(b)
    tr, te = per_class_split(y, per_class, split_seed)
    return b[tr], y[tr], b[te], y[te]


def digits_edges(
    split_seed: int = 0, *, size: int = 16, threshold: float = 8, per_class: int = 100
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Sparse digits input: bilinear upsample to ``size``, threshold (of 16), boundary pixels."""
    x, y = _all_digits()
    up = F.interpolate(x[:, None] * 16.0, size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    b = boundary((up >= threshold).float())
    tr, te = per_class_split(y, per_class, split_seed)
    return b[tr], y[tr], b[te], y[te]


def load_sparsey_raw(root: str | os.PathLike, shape: tuple[int, int] = (24, 16)) -> tuple[Tensor, Tensor]:
    """Read ``root/<label>_16x24/*.raw`` (one byte per pixel, ``shape`` rows x cols, row-major).

    Labels come from the folder-name prefix. Values > 0 are on.

    Raises:
        DataFormatError (a ValueError): missing root, no files, or a file of the wrong size.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataFormatError(f"no .raw dataset folder at {root}; pass the folder holding <digit>_16x24/ folders")
    xs, ys = [], []
    n = shape[0] * shape[1]
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        prefix = folder.name.split("_", 1)[0]
        if not prefix.isdigit():
            continue
        for f in sorted(folder.glob("*.raw")):
            data = f.read_bytes()
            if len(data) != n:
                raise DataFormatError(f"{f} has {len(data)} bytes, expected {n} ({shape[0]} rows x {shape[1]} columns)")
            xs.append((torch.frombuffer(bytearray(data), dtype=torch.uint8).reshape(shape) > 0).float())
            ys.append(int(prefix))
    if not xs:
        raise DataFormatError(f"no <label>_*/ *.raw files under {root}")
    return torch.stack(xs), torch.tensor(ys, dtype=torch.long)


def mnist_sparsey(
    data_dir: str | os.PathLike,
    *,
    train_per_class: int = 200,
    test_per_class: int = 100,
    seed: int = 0,
    input_mode: str = "skeleton",
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """MNIST IDX files under ``data_dir`` -> ``(x_train, y_train, x_test, y_test)``, 16x24 binary.

    Args:
        train_per_class / test_per_class: items per class drawn by a seeded permutation.
        input_mode: "skeleton" (Zhang-Suen, the authors' format), "binary" or "edges" (boundary).
    """
    from ..data.idx import load_mnist_dir

    (xtr, ytr), (xte, yte) = load_mnist_dir(data_dir, "train"), load_mnist_dir(data_dir, "test")
    itr = per_class_split(ytr, train_per_class, seed)[0]
    ite = per_class_split(yte, test_per_class, seed + 1)[0]

    def prep(x: Tensor) -> Tensor:
        y = to_sparsey_format(x, skeletonize=input_mode == "skeleton")
        return boundary(y) if input_mode == "edges" else y

    return prep(xtr[itr]), ytr[itr], prep(xte[ite]), yte[ite]
