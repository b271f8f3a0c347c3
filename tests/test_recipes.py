"""Every registered recipe runs at its smoke preset and honours the run-directory contract."""

import json

import pytest

from sparseforge.recipes import run_recipe
from sparseforge.registry import RECIPES


def test_registry_has_the_foundation_recipe():
    assert "magnitude" in RECIPES.names()
    for e in RECIPES.entries():
        assert e.obj.help and "\n" not in e.obj.help
        assert set(e.obj.presets) >= {"smoke", "quick", "paper"}
        for preset in ("smoke", "quick", "paper"):
            e.obj.build_config(preset)  # every preset builds a valid config


@pytest.mark.parametrize("name", RECIPES.names())
def test_recipe_smoke(name, tmp_path):
    path, summary = run_recipe(name, preset="smoke", out=tmp_path / name)
    assert summary and all(not isinstance(v, dict) for v in json.loads((path / "summary.json").read_text()).values())
    for f in ("config.json", "summary.json", "report.html"):
        assert (path / f).exists(), f
    assert json.loads((path / "config.json").read_text())["recipe"] == name
