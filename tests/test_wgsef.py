"""The ``wgsef`` recipe end to end at its smoke preset, plus compaction of a WGSEF-sparse model."""

from __future__ import annotations

import json

import pytest
import torch

from sparseforge.errors import UserError
from sparseforge.recipes import run_recipe

KEYS = ("dense_acc", "wgsef_acc", "acc_drop", "groups_removed_frac", "filters_removed_frac", "params_dense",
        "params_compact", "compression_ratio", "flops_reduction", "latency_speedup", "group_lasso_acc",
        "group_lasso_lambda", "k_level_reached_before_projection")


def test_smoke_preset_runs_and_reports(tmp_path):
    path, summary = run_recipe("wgsef", preset="smoke", out=tmp_path)
    for k in KEYS:
        assert k in summary, k
    assert summary["k_level_reached_before_projection"] is True
    assert summary["groups_removed_frac"] == pytest.approx(0.5, abs=0.02)
    assert summary["params_compact"] < summary["params_dense"]
    assert summary["flops_reduction"] > 1.0
    assert summary["compact_max_abs_diff"] <= 1e-5
    assert (path / "summary.json").exists() and (path / "figures" / "layer_group_sparsity.png").exists()
    saved = json.loads((path / "summary.json").read_text())
    assert saved["wgsef_acc"] == pytest.approx(summary["wgsef_acc"])


def test_missing_data_path_is_one_line_user_error(tmp_path):
    with pytest.raises(UserError, match="data_dir"):
        run_recipe("wgsef", preset="smoke", overrides={"dataset": "cifar10", "data_dir": str(tmp_path / "nope")},
                   out=tmp_path / "r")
    with pytest.raises(UserError, match="grouping"):
        run_recipe("wgsef", preset="smoke", overrides={"grouping": "blocks"}, out=tmp_path / "r2")


def test_compaction_of_wgsef_model_is_exact():  # §7.23-7.24 on a WGSEF-pruned LeNet
    from sparseforge import compact
    from sparseforge.models import create_model
    from sparseforge.optim import build_prox_map, project_top_k_

    torch.manual_seed(0)
    model = create_model("lenet5").eval()
    pm = build_prox_map(model, "wgsef", weight=1.0, k=0.5)
    project_top_k_(pm)
    x = torch.randn(4, 1, 8, 8)
    small = compact(model, x)
    assert torch.allclose(small(x), model(x), atol=1e-5)
    n_before = sum(p.numel() for p in model.parameters())
    n_after = sum(p.numel() for p in small.parameters())
    # conv1 6->3 filters (3*(25+1)) and conv2 inputs; conv2 16->8 (8*(6*25+1)); fc 120->60, 84->42 + next slices
    assert n_after < n_before
    convs = [m for m in small.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [3, 8]


def test_recipe_runs_with_the_digits_mlp(tmp_path):
    from sparseforge.recipes import run_recipe

    _, s = run_recipe("wgsef", preset="smoke", overrides={"model": "digits_mlp"}, out=tmp_path / "mlp")
    assert 0.0 <= s["wgsef_acc"] <= 1.0 and s["params_compact"] < s["params_dense"]
