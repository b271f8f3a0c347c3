"""Sparse distributed representations: Sparsey and its Code Selection Algorithm.

Rinkus & Leveille, "Superposed Episodic and Semantic Memory via Sparse Distributed
Representation", arXiv 1710.07829. See :mod:`sparseforge.sdr.sparsey` for the equations,
:mod:`sparseforge.sdr.readout` for the read-outs and :mod:`sparseforge.sdr.evaluate` for the
measurements (recall of stored codes, familiarity, similarity preservation, sequence capacity).

Public names (contract, ARCHITECTURE.md): :class:`Sparsey`, :class:`SparseyConfig`.
"""

from __future__ import annotations

from .readout import Readout
from .sparsey import LearnTrace, Sparsey, SparseyConfig, codes_to_cells

__all__ = ["LearnTrace", "Readout", "Sparsey", "SparseyConfig", "codes_to_cells"]
