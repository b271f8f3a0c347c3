"""``sparseforge.compact``: physical compaction (implemented in :mod:`sparseforge.compaction`).

``sparseforge.compact(model, example_inputs)`` is the function (a lazy attribute of the
package); this module re-exports it so that ``from sparseforge.compact import compact`` works.
"""

from __future__ import annotations

from .compaction import CompactReport, LayerReport, compact, register_handler, structural_bound

__all__ = ["CompactReport", "LayerReport", "compact", "register_handler", "structural_bound"]
