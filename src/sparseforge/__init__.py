"""sparseforge: learning sparse neural networks, with sparsity that is real.

Curated re-exports; importing this package has no side effects (registries are filled
lazily by :func:`sparseforge.registry.load_all`).
"""

from __future__ import annotations

__version__ = "0.1.0"

from typing import Any

_LAZY = {
    "compact": ("sparseforge.compaction", "compact"),
    "deploy": ("sparseforge.deployment", "deploy"),
    "select": ("sparseforge.targeting", "select"),
    "Run": ("sparseforge.engine.run", "Run"),
    "fit": ("sparseforge.engine.fit", "fit"),
    "run_recipe": ("sparseforge.recipes", "run_recipe"),
    "create_model": ("sparseforge.models", "create_model"),
}


def __getattr__(name: str) -> Any:
    # Lazy so `import sparseforge` stays light; `sparseforge.compact` is the function
    # (the module is importable as `sparseforge.compact` through sys.modules as well).
    if name in _LAZY:
        import importlib

        mod_name, attr = _LAZY[name]
        mod = importlib.import_module(mod_name)
        value = getattr(mod, attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sparseforge' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
