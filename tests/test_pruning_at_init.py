"""Recipe ``pruning-at-init``: smoke preset, summary keys, masks kept through SGD training."""

from __future__ import annotations

import json

import pytest
import torch

from sparseforge.errors import ConfigError
from sparseforge.recipes.pruning_at_init import PruningAtInitConfig


def test_config_rejects_unknown_names():
    with pytest.raises(ConfigError):
        PruningAtInitConfig(methods=("snip", "bogus"))
    with pytest.raises(ConfigError):
        PruningAtInitConfig(models=("vgg16",))
    with pytest.raises(ConfigError):
        PruningAtInitConfig(sparsities=(1.0,))


def test_recipe_smoke(tmp_path):
    from sparseforge.recipes import run_recipe

    old = torch.get_num_threads()
    path, _ = run_recipe("pruning-at-init", preset="smoke", out=tmp_path)
    assert torch.get_num_threads() == old  # the recipe restores the thread count
    s = json.loads((path / "summary.json").read_text())
    assert s["masked_weights_stay_zero"] is True
    for meth in ("magnitude", "random", "snip", "grasp", "synflow"):
        acc = s[f"acc/digits_mlp/{meth}/0.9"]
        assert 0.0 <= acc <= 1.0
        dens = {k: v for k, v in s.items() if k.startswith(f"layer_density_at_max_sparsity/digits_mlp/{meth}/")}
        assert len(dens) == 3 and all(0.0 <= v <= 1.0 for v in dens.values())
    assert 0.0 <= s["dense_acc/digits_mlp"] <= 1.0
    assert (path / "figures" / "accuracy_vs_sparsity.png").exists()
    assert (path / "figures" / "layer_density.png").exists()
    table = json.loads((path / "tables.json").read_text())["accuracy"]["rows"]
    assert len(table) == 1 + 5  # dense + 5 scorers x 1 sparsity
