"""Every ```python block of the README runs."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_opens_with_the_two_commands():
    head = README.read_text().split("## ", 1)[0]
    assert "make demo" in head and "make test" in head


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_readme_block_runs(i, capsys):
    assert "assert " in BLOCKS[i], "every README example checks what it claims"
    ns: dict = {}
    exec(compile(BLOCKS[i], f"README.md block {i}", "exec"), ns)  # the block's own asserts must hold
    assert len(ns) > 1
