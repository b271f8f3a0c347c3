"""MNIST-family IDX files (MNIST, Fashion-MNIST, KMNIST), raw or gzip-compressed.

Format (LeCun et al.'s IDX): a big-endian header of 32-bit integers.

- images: magic ``0x00000803`` (two zero bytes, type 0x08 = uint8, 3 dims), count, rows,
  cols, then ``count * rows * cols`` uint8 pixels, row-major;
- labels: magic ``0x00000801``, count, then ``count`` uint8 labels.

Gzip is detected by the magic bytes ``1f 8b``, never by the file name. Any missing,
truncated or malformed file raises :class:`~sparseforge.errors.DataFormatError` with one line
naming the path and what was expected. Nothing is ever downloaded: point the loaders at
files you already have.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..errors import DataFormatError, UserError
from ..registry import register_dataset
from .digits import DataSplits

__all__ = ["load_idx", "read_idx_images", "read_idx_labels", "load_mnist_dir", "mnist"]

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: str | Path) -> bytes:
    """The file's content, gunzipped when it starts with the gzip magic bytes."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataFormatError(f"{path}: file not found (expected an IDX file, raw or .gz)") from None
    except IsADirectoryError:
        raise DataFormatError(f"{path}: is a directory (expected an IDX file, raw or .gz)") from None
    except OSError as e:
        raise DataFormatError(f"{path}: cannot read ({e.strerror or e})") from None
    if raw[:2] == _GZIP_MAGIC:
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataFormatError(f"{path}: corrupt or truncated gzip data ({e})") from None
    return raw


def _header(path: Path, data: bytes, magic: int, n_ints: int, what: str) -> list[int]:
    """Check the magic number and return the ``n_ints`` big-endian header integers after it."""
    need = 4 * (1 + n_ints)
    if len(data) < 4:
        raise DataFormatError(f"{path}: file is {len(data)} bytes, too short for an IDX {what} header")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DataFormatError(f"{path}: wrong magic number 0x{found:08x}, expected 0x{magic:08x} (IDX {what}, uint8)")
    if len(data) < need:
        raise DataFormatError(f"{path}: truncated header, expected {need} bytes, found {len(data)}")
    return [int.from_bytes(data[4 * i : 4 * i + 4], "big") for i in range(1, 1 + n_ints)]


def read_idx_images(path: str | Path) -> torch.Tensor:
    """Read an IDX3 uint8 image file.

    Args:
        path: Raw or gzip-compressed ``*-images-idx3-ubyte`` file.

    Returns:
        uint8 tensor ``(N, rows, cols)``.

    Raises:
        DataFormatError: missing file, wrong magic, or data length not what the header promises.
    """
    path = Path(path)
    data = _read_bytes(path)
    count, rows, cols = _header(path, data, IMAGES_MAGIC, 3, "images")
    expected = count * rows * cols
    body = len(data) - 16
    if body != expected:
        kind = "truncated" if body < expected else "trailing bytes"
        raise DataFormatError(
            f"{path}: {kind}: header promises {count}x{rows}x{cols} = {expected} pixel bytes, found {body}"
        )
    arr = np.frombuffer(data, dtype=np.uint8, count=expected, offset=16).reshape(count, rows, cols)
    return torch.from_numpy(arr.copy())  # (N, rows, cols)


def read_idx_labels(path: str | Path) -> torch.Tensor:
    """Read an IDX1 uint8 label file.

    Args:
        path: Raw or gzip-compressed ``*-labels-idx1-ubyte`` file.

    Returns:
        int64 tensor ``(N,)``.

    Raises:
        DataFormatError: missing file, wrong magic, or data length not what the header promises.
    """
    path = Path(path)
    data = _read_bytes(path)
    (count,) = _header(path, data, LABELS_MAGIC, 1, "labels")
    body = len(data) - 8
    if body != count:
        kind = "truncated" if body < count else "trailing bytes"
        raise DataFormatError(f"{path}: {kind}: header promises {count} label bytes, found {body}")
    arr = np.frombuffer(data, dtype=np.uint8, count=count, offset=8)
    return torch.from_numpy(arr.astype(np.int64))  # (N,)


def load_idx(images_path: str | Path, labels_path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a pair of IDX image and label files (raw or gzip, detected by content).

    Args:
        images_path: IDX3 uint8 images.
        labels_path: IDX1 uint8 labels.

    Returns:
        ``(images, labels)``: uint8 ``(N, rows, cols)`` and int64 ``(N,)``.

    Raises:
        DataFormatError: a file is missing or malformed, or the two counts differ.
    """
    images = read_idx_images(images_path)
    labels = read_idx_labels(labels_path)
    if images.shape[0] != labels.shape[0]:
        raise DataFormatError(
            f"{labels_path}: {labels.shape[0]} labels, expected {images.shape[0]} to match {images_path}"
        )
    return images, labels


_PREFIX = {"train": "train", "test": "t10k"}


def _find(root: Path, stem: str) -> Path:
    """``root/stem`` or ``root/stem.gz`` (also the ``stem`` with a dot before ``idx``)."""
    candidates = [stem, stem + ".gz"]
    dotted = stem.replace("-idx", ".idx")
    candidates += [dotted, dotted + ".gz"]
    for name in candidates:
        if (root / name).is_file():
            return root / name
    raise DataFormatError(f"{root / stem}: file not found (expected {stem} or {stem}.gz in {root})")


def load_mnist_dir(root: str | Path, kind: Literal["train", "test"] = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Load one split of an MNIST-style directory with the standard file names.

    Looks for ``train-images-idx3-ubyte`` / ``train-labels-idx1-ubyte`` (``kind="train"``) or
    ``t10k-images-idx3-ubyte`` / ``t10k-labels-idx1-ubyte`` (``kind="test"``), each optionally
    with ``.gz``.

    Args:
        root: Directory holding the files.
        kind: ``"train"`` or ``"test"``.

    Returns:
        ``(x, y)``: float32 ``(N, 1, rows, cols)`` in [0, 1] (``(N, 1, 28, 28)`` for MNIST) and int64 ``(N,)``.
    """
    if kind not in _PREFIX:
        raise UserError(f"kind must be 'train' or 'test', got {kind!r}")
    root = Path(root)
    if not root.is_dir():
        raise DataFormatError(f"{root}: directory not found (expected MNIST-style IDX files in it)")
    pre = _PREFIX[kind]
    images, labels = load_idx(_find(root, f"{pre}-images-idx3-ubyte"), _find(root, f"{pre}-labels-idx1-ubyte"))
    x = images.unsqueeze(1).float().div_(255.0)  # (N, 1, rows, cols)
    return x, labels


@register_dataset("mnist", num_classes=10, input_shape=(1, 28, 28), needs_path=True)
def mnist(*, root: str | Path | None = None) -> DataSplits:
    """Registered builder for an MNIST-family IDX directory; needs ``root`` (``needs_path=True``).

    Args:
        root: Directory with the four standard IDX files (raw or ``.gz``).
    """
    if root is None:
        raise UserError("dataset 'mnist' needs a path: pass root=DIR holding the IDX files (nothing is downloaded)")
    x_tr, y_tr = load_mnist_dir(root, "train")
    x_te, y_te = load_mnist_dir(root, "test")
    return DataSplits(
        x_tr, y_tr, x_te, y_te,
        num_classes=10, input_shape=tuple(x_tr.shape[1:]), meta={"name": "mnist", "root": str(root)},
    )  # fmt: skip
