"""Compressors: every compression method behind one protocol (:class:`Compressor`), for one leaderboard.

See :mod:`sparseforge.compress.base` for the protocol and :mod:`sparseforge.compress.builtin` for the
built-in methods; ``sparseforge list methods`` lists them under ``compressor``.
"""

from __future__ import annotations

from .base import (
    Compressed,
    Compressor,
    compressor_names,
    get_compressor,
    group_masks,
    make_compressor,
    natural_group_sparsity,
    register_compressor,
    removed_fraction,
)
from .builtin import GroupLassoCompressor, IterativeMagnitude, Magnitude, PruneAtInit, WGSEFCompressor

__all__ = [
    "Compressed",
    "Compressor",
    "GroupLassoCompressor",
    "IterativeMagnitude",
    "Magnitude",
    "PruneAtInit",
    "WGSEFCompressor",
    "compressor_names",
    "get_compressor",
    "group_masks",
    "make_compressor",
    "natural_group_sparsity",
    "register_compressor",
    "removed_fraction",
]
