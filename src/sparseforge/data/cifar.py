"""CIFAR-10 "python version" batches, normalisation statistics and standard augmentation.

Format (the "python version" of Krizhevsky's CIFAR-10): a directory with ``data_batch_1`` ... ``data_batch_5``,
``test_batch`` and ``batches.meta``, each a Python-2 pickle of a dict. Batches hold ``data``
(uint8 ``N x 3072``; the first 1,024 bytes of a row are the red 32x32 plane, row-major, then
green, then blue) and ``labels`` (N ints); ``batches.meta`` holds ``label_names``. Keys may be
``bytes`` or ``str``.

Unpickling can run arbitrary code, so :func:`load_cifar10` refuses unless called with
``allow_pickle=True`` (``--set allow_pickle=true`` on the command line). Use it only on files
you trust. Nothing is ever downloaded.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from ..errors import DataFormatError, UserError
from ..registry import register_dataset
from .digits import DataSplits

__all__ = [
    "CIFAR10_LABEL_NAMES",
    "Cifar10",
    "load_cifar10",
    "load_cifar_batch",
    "channel_stats",
    "normalize",
    "random_crop_flip",
    "cifar10",
]

CIFAR10_LABEL_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
_ROW = 3 * 32 * 32


class Cifar10(NamedTuple):
    """CIFAR-10 as tensors (unpacks as ``x_train, y_train, x_test, y_test, label_names``).

    Attributes:
        x_train: uint8 ``(N_train, 3, 32, 32)``.
        y_train: int64 ``(N_train,)``.
        x_test: uint8 ``(N_test, 3, 32, 32)``.
        y_test: int64 ``(N_test,)``.
        label_names: The 10 class names.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    label_names: tuple[str, ...]


def _refuse_pickle(what: str) -> None:
    raise DataFormatError(
        f"{what} is a pickle file, which can run arbitrary code when loaded; pass allow_pickle=True "
        "(CLI: --set allow_pickle=true) only for files you trust"
    )


def _unpickle(path: Path) -> dict[str, Any]:
    """Load one pickled dict with ``encoding='bytes'``; keys are returned as ``str``."""
    try:
        with path.open("rb") as f:
            obj = pickle.load(f, encoding="bytes")
    except FileNotFoundError:
        raise DataFormatError(f"{path}: file not found (expected a CIFAR-10 python pickle)") from None
    except IsADirectoryError:
        raise DataFormatError(f"{path}: is a directory (expected a CIFAR-10 python pickle)") from None
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a format error
        raise DataFormatError(f"{path}: not a readable CIFAR-10 pickle ({type(e).__name__})") from None
    if not isinstance(obj, dict):
        raise DataFormatError(f"{path}: expected a pickled dict, found {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def load_cifar_batch(path: str | Path, *, allow_pickle: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Load one CIFAR-10 batch file.

    Args:
        path: A ``data_batch_*`` or ``test_batch`` file.
        allow_pickle: Must be True (the file is a pickle; trusted files only).

    Returns:
        ``(images, labels)``: uint8 ``(N, 3, 32, 32)`` and int64 ``(N,)``.

    Raises:
        DataFormatError: ``allow_pickle`` is False, or missing file, missing keys, or wrong shapes / label values.
    """
    path = Path(path)
    if not allow_pickle:
        _refuse_pickle(str(path))
    d = _unpickle(path)
    for key in ("data", "labels"):
        if key not in d:
            raise DataFormatError(f"{path}: missing key {key!r} (expected a CIFAR-10 batch with 'data' and 'labels')")
    data = np.asarray(d["data"])
    if data.ndim != 2 or data.shape[1] != _ROW:
        raise DataFormatError(f"{path}: 'data' has shape {data.shape}, expected (N, {_ROW})")
    if data.dtype != np.uint8:
        if not np.issubdtype(data.dtype, np.integer) or (data.size and (data.min() < 0 or data.max() > 255)):
            raise DataFormatError(f"{path}: 'data' has dtype {data.dtype}, expected uint8 pixels")
        data = data.astype(np.uint8)
    labels = np.asarray(d["labels"])
    if labels.ndim != 1 or labels.shape[0] != data.shape[0] or not np.issubdtype(labels.dtype, np.integer):
        raise DataFormatError(f"{path}: 'labels' has shape {labels.shape}, expected {data.shape[0]} integer labels")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataFormatError(f"{path}: labels range {labels.min()}..{labels.max()}, expected 0..9")
    x = torch.from_numpy(np.ascontiguousarray(data).reshape(-1, 3, 32, 32).copy())  # (N, 3, 32, 32): R, G, B planes
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


def load_cifar10(root: str | Path, *, allow_pickle: bool = False) -> Cifar10:
    """Load the CIFAR-10 python batches from ``root``.

    Args:
        root: Directory with ``data_batch_1`` ... ``data_batch_5``, ``test_batch`` and (optionally)
            ``batches.meta``; without the meta file the standard class names are used.
        allow_pickle: Must be True: the files are pickles and can run code. Trusted files only.

    Returns:
        A :class:`Cifar10` (uint8 ``(N, 3, 32, 32)`` images, int64 labels, the label names).

    Raises:
        DataFormatError: ``allow_pickle`` is False, or a file is missing or malformed.
    """
    root = Path(root)
    if not allow_pickle:
        _refuse_pickle(f"CIFAR-10 in {root}")
    if not root.is_dir():
        raise DataFormatError(f"{root}: directory not found (expected CIFAR-10 python batches in it)")
    train = [load_cifar_batch(root / name, allow_pickle=True) for name in TRAIN_FILES]
    x_te, y_te = load_cifar_batch(root / TEST_FILE, allow_pickle=True)
    names: tuple[str, ...] = CIFAR10_LABEL_NAMES
    meta_path = root / META_FILE
    if meta_path.exists():
        meta = _unpickle(meta_path)
        if "label_names" not in meta:
            raise DataFormatError(f"{meta_path}: missing key 'label_names'")
        names = tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in meta["label_names"])
        if len(names) != 10:
            raise DataFormatError(f"{meta_path}: {len(names)} label names, expected 10")
    return Cifar10(
        torch.cat([x for x, _ in train]),
        torch.cat([y for _, y in train]),
        x_te,
        y_te,
        names,
    )


def channel_stats(x: torch.Tensor, *, chunk: int = 10_000) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of a uint8 (scaled by 1/255) or float image batch.

    Args:
        x: Images ``(N, C, H, W)``; uint8 values are divided by 255 first.
        chunk: Images per chunk (bounds the float64 temporary memory).

    Returns:
        ``(mean, std)``, float32 ``(C,)`` each (population std).
    """
    scale = 1.0 / 255.0 if x.dtype == torch.uint8 else 1.0
    c = x.shape[1]
    s = torch.zeros(c, dtype=torch.float64)
    s2 = torch.zeros(c, dtype=torch.float64)
    for i in range(0, x.shape[0], chunk):
        xc = x[i : i + chunk].to(torch.float64).mul_(scale)  # (n, C, H, W)
        s += xc.sum(dim=(0, 2, 3))
        s2 += xc.square().sum(dim=(0, 2, 3))
    n = x.shape[0] * x.shape[2] * x.shape[3]
    mean = s / n
    var = (s2 / n - mean.square()).clamp_min(0.0)
    return mean.float(), var.sqrt().float()


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``(x - mean) / std`` per channel; uint8 input is divided by 255 first. Returns float32."""
    xf = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    mean = mean.to(xf.device, torch.float32).view(1, -1, 1, 1)
    std = std.to(xf.device, torch.float32).view(1, -1, 1, 1)
    return (xf - mean) / std


def random_crop_flip(
    x: torch.Tensor, *, padding: int = 4, flip: bool = True, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Standard CIFAR augmentation on a whole batch: zero-pad, random crop back to size, random h-flip.

    Pure function (the input is not modified); each image gets its own offsets and flip.

    Args:
        x: Batch ``(B, C, H, W)`` of any dtype.
        padding: Zero padding on each side before cropping (4 for CIFAR).
        flip: Also flip each image horizontally with probability 1/2.
        generator: Source of randomness (on ``x``'s device) for reproducible augmentation.

    Returns:
        Augmented batch, same shape and dtype as ``x``.
    """
    if padding < 0:
        raise UserError(f"padding must be >= 0, got {padding}")
    b, _, h, w = x.shape
    dev = x.device
    out = x
    if padding > 0:
        padded = torch.nn.functional.pad(x, (padding, padding, padding, padding))  # (B, C, H+2p, W+2p)
        oy = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=dev)
        ox = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=dev)
        rows = oy[:, None] + torch.arange(h, device=dev)  # (B, H)
        cols = ox[:, None] + torch.arange(w, device=dev)  # (B, W)
        bidx = torch.arange(b, device=dev)[:, None, None]  # (B, 1, 1)
        out = padded.permute(0, 2, 3, 1)[bidx, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
        out = out.permute(0, 3, 1, 2).contiguous()  # (B, C, H, W)
    if flip:
        do_flip = torch.rand(b, generator=generator, device=dev) < 0.5  # (B,)
        out = torch.where(do_flip[:, None, None, None], out.flip(-1), out)
    return out


@register_dataset("cifar10", num_classes=10, input_shape=(3, 32, 32), needs_path=True)
def cifar10(*, root: str | Path | None = None, allow_pickle: bool = False, normalized: bool = True) -> DataSplits:
    """Registered builder for CIFAR-10 python batches; needs ``root`` (``needs_path=True``).

    Args:
        root: Directory with the CIFAR-10 python batches.
        allow_pickle: Must be True (trusted files only; see :func:`load_cifar10`).
        normalized: Return float32 inputs normalised with the training set's per-channel
            statistics (stored in ``meta["mean"]`` / ``meta["std"]``); else uint8.
    """
    if root is None:
        raise UserError("dataset 'cifar10' needs a path: pass root=DIR holding the CIFAR-10 python batches")
    data = load_cifar10(root, allow_pickle=allow_pickle)
    x_tr, x_te = data.x_train, data.x_test
    meta: dict[str, Any] = {"name": "cifar10", "root": str(root), "label_names": data.label_names}
    if normalized:
        mean, std = channel_stats(x_tr)
        x_tr, x_te = normalize(x_tr, mean, std), normalize(x_te, mean, std)
        meta.update(mean=mean, std=std)
    return DataSplits(x_tr, data.y_train, x_te, data.y_test, num_classes=10, input_shape=(3, 32, 32), meta=meta)
