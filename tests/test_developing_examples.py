"""The method examples of docs/DEVELOPING.md are complete files: each registers a method that passes its
family's contract checks (what a contributor copies must work)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sparseforge import testing

DOC = Path(__file__).resolve().parents[1] / "docs" / "DEVELOPING.md"
BLOCKS = {m.group(1): m.group(2) for m in re.finditer(r"### An? [^(]*\(family `(\w+)`\).*?```python\n(.*?)```",
                                                       DOC.read_text(), flags=re.S)}
NAMES = {"scorer": "grad_norm", "prox": "elastic_net", "spectral": "scaled", "compressor": "taylor_filter"}


@pytest.mark.parametrize("family", sorted(NAMES))
def test_the_example_registers_a_method_that_meets_its_contract(family):
    assert family in BLOCKS, f"docs/DEVELOPING.md has no {family} example"
    exec(compile(BLOCKS[family], f"DEVELOPING.md {family} example", "exec"), {})
    testing.CHECKS[family](NAMES[family])
