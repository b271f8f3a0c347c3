"""tqdm progress bars that switch themselves off when not on a terminal or under CI."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm


def progress_enabled() -> bool:
    if os.environ.get("CI") or os.environ.get("SPARSEFORGE_NO_PROGRESS"):
        return False
    from .distributed import is_main_process

    return sys.stderr.isatty() and is_main_process()


def progress(iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str = "", **kw: Any) -> tqdm:
    """``tqdm(...)`` with ``disable`` set by :func:`progress_enabled`."""
    return tqdm(iterable, total=total, desc=desc, disable=not progress_enabled(), leave=False, dynamic_ncols=True, **kw)
