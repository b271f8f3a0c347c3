"""Sparse distributed representations: Sparsey and its Code Selection Algorithm.

Rinkus & Leveille, "Superposed Episodic and Semantic Memory via Sparse Distributed
Representation", arXiv 1710.07829. See :mod:`sparseforge.sdr.sparsey` for the equations.

Public names (contract, ARCHITECTURE.md): :class:`Sparsey`, :class:`SparseyConfig`.
"""

from __future__ import annotations

from .readout import Readout
from .sparsey import Sparsey, SparseyConfig, codes_to_cells

__all__ = ["Readout", "Sparsey", "SparseyConfig", "codes_to_cells"]
