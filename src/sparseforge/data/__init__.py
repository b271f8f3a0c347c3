"""Datasets: offline defaults that ship with a dependency or are generated, and loaders for
the usual on-disk formats (never any download).

Offline, registered in ``sparseforge.registry.DATASETS`` (builders callable with no arguments,
returning a :class:`DataSplits`):

- ``digits``: scikit-learn's bundled 8x8 digits, stratified 1,437 / 360 split.
- ``modular``: modular-arithmetic tables for grokking.

Loaders for user files (plain functions; their registry entries, if any, carry
``needs_path=True`` and must be given ``root=...``):

- :func:`load_idx` / :func:`load_mnist_dir`: MNIST-family IDX files, raw or gzip.
- :func:`load_cifar10`: CIFAR-10 python pickles (``allow_pickle=True`` required; trusted files only).

Text corpora and other datasets live in their own modules of this package and register themselves.
"""

from __future__ import annotations

from .cifar import CIFAR10_LABEL_NAMES, Cifar10, channel_stats, load_cifar10, normalize, random_crop_flip
from .digits import DataSplits, load_digits_builtin
from .idx import load_idx, load_mnist_dir, read_idx_images, read_idx_labels
from .modular import MODULAR_OPS, ModularData, modular_arithmetic, modular_labels

__all__ = [
    "DataSplits",
    "load_digits_builtin",
    "load_idx",
    "load_mnist_dir",
    "read_idx_images",
    "read_idx_labels",
    "CIFAR10_LABEL_NAMES",
    "Cifar10",
    "load_cifar10",
    "channel_stats",
    "normalize",
    "random_crop_flip",
    "MODULAR_OPS",
    "ModularData",
    "modular_arithmetic",
    "modular_labels",
]
