"""Binary video sequences for Sparsey's spatiotemporal path.

Paper context: Rinkus & Leveille, "Superposed Episodic and Semantic Memory via Sparse Distributed
Representation", arXiv 1710.07829; the authors' Weizmann-actions experiment used binary edge maps
of short snippets.

- :func:`moving_shapes`: generated offline default, deterministic from a seed. Four classes, one
  per motion direction (0 up, 1 down, 2 left, 3 right); each sequence moves a ``shape_size`` solid
  square one pixel per frame from a random valid start.
- :func:`random_sparse_sequences`: sequences of independent random sparse frames (exactly
  ``active`` on-pixels each), the memory-capacity probe: nothing but the stored chain of codes
  links one frame to the next.
- :func:`displace_pixels`: move a fraction of each frame's on-pixels (noisy test copies);
  :func:`frame_folder_splits`: frame folders as train and their noisy copies as test.
- :func:`load_frame_folders`: Weizmann-style data preprocessed offline, from a user path:
  ``root/<class>/<sequence>/`` folders of PNG or PGM frames (sorted by file name), or
  ``root/<class>/<sequence>.npy`` arrays ``[T, H, W]``. Frames are binarised (> half the maximum)
  and optionally area-resized. A missing or malformed path raises a one-line
  :class:`~sparseforge.errors.DataFormatError`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import DataFormatError, UserError
from ..registry import register_dataset

__all__ = [
    "moving_shapes",
    "moving_shapes_splits",
    "random_sparse_sequences",
    "displace_pixels",
    "load_frame_folders",
    "frame_folder_splits",
    "read_pgm",
    "DIRECTIONS",
]

DIRECTIONS = ("up", "down", "left", "right")
_STEP = {0: (-1, 0), 1: (1, 0), 2: (0, -1), 3: (0, 1)}
_FRAME_EXT = (".png", ".pgm")


def moving_shapes(
    n_per_class: int = 20, frames: int = 8, size: int = 16, seed: int = 0, *, shape_size: int = 3
) -> tuple[Tensor, Tensor]:
    """Generated moving-square videos.

    Args:
        n_per_class: Sequences per direction.
        frames: Frames per sequence (the square moves one pixel per frame).
        size: Frame side (square frames).
        seed: Seed of the start positions (same seed, same videos).
        shape_size: Side of the solid square.

    Returns:
        ``(X, y)``: float32 ``(4 * n_per_class, frames, size, size)`` in {0, 1} and int64 labels,
        classes interleaved (0, 1, 2, 3, 0, ...).
    """
    travel = frames - 1
    if n_per_class < 1 or frames < 1 or shape_size < 1:
        raise DataFormatError("moving_shapes needs n_per_class, frames and shape_size >= 1")
    if size < shape_size + travel:
        raise DataFormatError(f"moving_shapes: size {size} too small for a {shape_size}-square moving {travel} pixels")
    g = torch.Generator().manual_seed(seed)
    n = 4 * n_per_class
    X = torch.zeros(n, frames, size, size)
    y = torch.arange(n) % 4
    hi_free = size - shape_size  # largest top-left coordinate
    for i in range(n):
        dy, dx = _STEP[int(y[i])]
        # valid start ranges so that the whole path stays inside the frame
        lo_y, hi_y = (travel, hi_free) if dy < 0 else (0, hi_free - travel) if dy > 0 else (0, hi_free)
        lo_x, hi_x = (travel, hi_free) if dx < 0 else (0, hi_free - travel) if dx > 0 else (0, hi_free)
        r0 = int(torch.randint(lo_y, hi_y + 1, (1,), generator=g))
        c0 = int(torch.randint(lo_x, hi_x + 1, (1,), generator=g))
        for t in range(frames):
            r, c = r0 + dy * t, c0 + dx * t
            X[i, t, r : r + shape_size, c : c + shape_size] = 1.0
    return X, y.long()


def moving_shapes_splits(
    n_train_per_class: int = 20, n_test_per_class: int = 10, frames: int = 8, size: int = 16, seed: int = 0
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Train and test sets drawn with different seeds: ``(X_tr, y_tr, X_te, y_te)``."""
    X_tr, y_tr = moving_shapes(n_train_per_class, frames, size, seed)
    X_te, y_te = moving_shapes(n_test_per_class, frames, size, seed + 100_003)
    return X_tr, y_tr, X_te, y_te


def random_sparse_sequences(
    n: int, frames: int, size: tuple[int, int] | int = 16, active: int = 26, *, seed: int = 0
) -> Tensor:
    """Sequences of independent random binary frames with exactly ``active`` on-pixels each.

    Args:
        n: Number of sequences.
        frames: Frames per sequence.
        size: Frame shape ``(H, W)`` (or one side).
        active: On-pixels per frame.
        seed: Seed (same seed, same sequences).

    Returns:
        float32 ``(n, frames, H, W)`` in {0, 1}.
    """
    H, W = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if n < 1 or frames < 1 or not 0 <= active <= H * W:
        raise DataFormatError(f"random_sparse_sequences needs n, frames >= 1 and 0 <= active <= {H * W}")
    g = torch.Generator().manual_seed(seed)
    ranks = torch.rand(n * frames, H * W, generator=g).argsort(1).argsort(1)  # a random permutation per frame
    return (ranks < active).float().view(n, frames, H, W)


def displace_pixels(x: Tensor, frac: float, *, generator: torch.Generator) -> Tensor:
    """Move ``round(frac * on)`` on-pixels of each image to random off positions (same density).

    Args:
        x: Binary images ``(..., H, W)``.
        frac: Fraction of each image's on-pixels to move, in [0, 1].
        generator: Seeded generator.
    """
    if not 0.0 <= frac <= 1.0:
        raise UserError(f"frac must be in [0, 1], got {frac}")
    shp = x.shape
    f = (x > 0).reshape(-1, shp[-2] * shp[-1])  # (N, P)
    on = f.sum(1)
    k = torch.minimum((frac * on.double()).round().long(), f.shape[1] - on)  # (N,)
    r = torch.rand(f.shape, generator=generator)

    def pick(mask: Tensor) -> Tensor:  # k random members of each row's mask
        rank = torch.where(mask, r, 2.0).argsort(1).argsort(1)  # members first, in random order
        return mask & (rank < k.unsqueeze(1))

    out = f & ~pick(f)
    out = out | pick(~f)
    return out.float().reshape(shp)


def frame_folder_splits(
    root: str | os.PathLike, *, size: tuple[int, int] | None = None, noise: float = 0.4, seed: int = 0
) -> tuple[list[Tensor], Tensor, list[Tensor], Tensor]:
    """Frame folders (:func:`load_frame_folders`) as train, and as test the same sequences with
    ``noise`` of each frame's on-pixels moved (the authors' Weizmann protocol):
    ``(train, y_train, test, y_test)``."""
    seqs, y, _ = load_frame_folders(root, size=size)
    g = torch.Generator().manual_seed(seed)
    return seqs, y, [displace_pixels(s, noise, generator=g) for s in seqs], y


@register_dataset("moving_shapes", num_classes=4, input_shape=(8, 16, 16), needs_path=False)
def moving_shapes_dataset(*, seed: int = 0):  # noqa: ANN201 - DataSplits (import kept lazy)
    """:func:`moving_shapes_splits` as a ``DataSplits`` (20 train / 10 test sequences per class)."""
    from .digits import DataSplits

    X_tr, y_tr, X_te, y_te = moving_shapes_splits(seed=seed)
    return DataSplits(
        X_tr, y_tr, X_te, y_te, num_classes=4, input_shape=(8, 16, 16),
        meta={"name": "moving_shapes", "label_names": list(DIRECTIONS)},
    )  # fmt: skip


def read_pgm(path: str | os.PathLike) -> Tensor:
    """Read a binary (P5) or ASCII (P2) PGM file -> float ``(H, W)`` scaled to [0, 1]."""
    data = Path(path).read_bytes()
    tokens: list[bytes] = []
    pos = 0
    while len(tokens) < 4:  # magic, width, height, maxval (comments start with '#')
        while pos < len(data) and data[pos : pos + 1].isspace():
            pos += 1
        if pos < len(data) and data[pos : pos + 1] == b"#":
            while pos < len(data) and data[pos : pos + 1] not in (b"\n", b"\r"):
                pos += 1
            continue
        start = pos
        while pos < len(data) and not data[pos : pos + 1].isspace():
            pos += 1
        if start == pos:
            raise DataFormatError(f"{path}: truncated PGM header")
        tokens.append(data[start:pos])
    magic = tokens[0]
    try:
        w, h, maxval = int(tokens[1]), int(tokens[2]), int(tokens[3])
    except ValueError:
        raise DataFormatError(f"{path}: malformed PGM header") from None
    if magic == b"P5":
        pos += 1  # single whitespace after maxval
        bpp = 2 if maxval > 255 else 1
        raw = data[pos : pos + w * h * bpp]
        if len(raw) != w * h * bpp:
            raise DataFormatError(f"{path}: PGM has {len(raw)} pixel bytes, expected {w * h * bpp}")
        if bpp == 1:
            arr = torch.frombuffer(bytearray(raw), dtype=torch.uint8).float()
        else:
            b = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(-1, 2).long()
            arr = (b[:, 0] * 256 + b[:, 1]).float()
    elif magic == b"P2":
        vals = data[pos:].split()
        if len(vals) < w * h:
            raise DataFormatError(f"{path}: PGM has {len(vals)} values, expected {w * h}")
        arr = torch.tensor([int(v) for v in vals[: w * h]], dtype=torch.float32)
    else:
        raise DataFormatError(f"{path}: not a PGM file (magic {magic[:2]!r}, expected P2 or P5)")
    return arr.view(h, w) / max(maxval, 1)


def _read_frame(path: Path) -> Tensor:
    if path.suffix.lower() == ".pgm":
        return read_pgm(path)
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow ships with matplotlib
        raise DataFormatError("reading PNG frames needs Pillow (pip install pillow)") from None
    try:
        with Image.open(path) as im:
            arr = torch.tensor(list(im.convert("L").getdata()), dtype=torch.float32)
            w, h = im.size
    except Exception as e:  # noqa: BLE001 - any decoder failure is a data-format problem
        raise DataFormatError(f"{path}: cannot read PNG frame ({type(e).__name__})") from None
    return arr.view(h, w) / 255.0


def _binarise(frames: Tensor, size: tuple[int, int] | None) -> Tensor:
    frames = frames.float()
    if size is not None and tuple(frames.shape[-2:]) != tuple(size):
        frames = F.adaptive_avg_pool2d(frames[:, None], size)[:, 0]
    peak = frames.amax() if frames.numel() else torch.tensor(0.0)
    return (frames > peak / 2).float() if peak > 0 else torch.zeros_like(frames)


def load_frame_folders(
    root: str | os.PathLike, *, size: tuple[int, int] | None = None, max_frames: int | None = None
) -> tuple[list[Tensor], Tensor, list[str]]:
    """Load Weizmann-style binary frame sequences.

    Layout: ``root/<class>/<sequence>/*.png|*.pgm`` (frames sorted by name) or
    ``root/<class>/<sequence>.npy`` (``[T, H, W]``). Labels follow the sorted class-folder names.

    Args:
        root: The dataset folder.
        size: Area-resize every frame to ``(H, W)``; without it all frames must share one shape.
        max_frames: Keep at most this many frames per sequence (temporal decimation is the user's).

    Returns:
        ``(sequences, labels, class_names)``: a list of float ``(T_i, H, W)`` tensors in {0, 1},
        int64 labels, and the class names.

    Raises:
        DataFormatError: missing root, no sequences, unreadable frames or mismatched shapes.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataFormatError(f"no frame-sequence folder at {root}; pass root/<class>/<sequence>/ frames")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataFormatError(f"{root} has no class folders; expected root/<class>/<sequence>/*.png|*.pgm")
    seqs: list[Tensor] = []
    labels: list[int] = []
    for ci, cname in enumerate(classes):
        for item in sorted((root / cname).iterdir()):
            if item.is_dir():
                files = sorted(f for f in item.iterdir() if f.suffix.lower() in _FRAME_EXT)
                if not files:
                    continue
                frames = _stack_or_error([_read_frame(f) for f in files], item)
            elif item.suffix.lower() == ".npy":
                import numpy as np

                try:
                    frames = torch.from_numpy(np.load(item, allow_pickle=False)).float()
                except Exception as e:  # noqa: BLE001
                    raise DataFormatError(f"{item}: cannot read .npy ({type(e).__name__})") from None
                if frames.dim() != 3:
                    raise DataFormatError(f"{item}: expected a [T, H, W] array, got shape {tuple(frames.shape)}")
            else:
                continue
            if max_frames is not None:
                frames = frames[:max_frames]
            seqs.append(_binarise(frames, size))
            labels.append(ci)
    if not seqs:
        raise DataFormatError(f"no sequences under {root}; expected root/<class>/<sequence>/*.png|*.pgm or .npy")
    shapes = {tuple(s.shape[-2:]) for s in seqs}
    if len(shapes) > 1:
        raise DataFormatError(f"frames under {root} have different sizes {sorted(shapes)}; pass size=(H, W)")
    return seqs, torch.tensor(labels, dtype=torch.long), classes


def _stack_or_error(frames: list[Tensor], where: Path) -> Tensor:
    try:
        return torch.stack(frames)
    except RuntimeError:
        raise DataFormatError(f"{where}: frames of different sizes in one sequence") from None
