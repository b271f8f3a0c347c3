"""Shared test setup: deterministic seeds, no progress bars, a small thread count."""

from __future__ import annotations

import os

os.environ.setdefault("SPARSEFORGE_NO_PROGRESS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

# Tiny models gain nothing from intra-op threads, and a loaded 2-core machine thrashes with them.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
