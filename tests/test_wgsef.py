"""The ``wgsef`` recipe end to end at its smoke preset, plus compaction of a WGSEF-sparse model."""

from __future__ import annotations

import json

import pytest
import torch

from sparseforge.errors import UserError
from sparseforge.recipes import run_recipe

METHODS = ("wgsef", "wgsef_envelope", "group_lasso")
KEYS = ("acc", "acc_before_projection", "acc_before_finetune", "groups_removed_before_projection", "groups_removed",
        "layers_at_k_before_projection", "params_compact", "flops_reduction", "latency_speedup", "lambda")


def test_smoke_preset_runs_and_reports(tmp_path):
    path, summary = run_recipe("wgsef", preset="smoke", out=tmp_path)
    for v in METHODS:
        for k in KEYS:
            assert f"{k}/{v}" in summary, f"{k}/{v}"
        # every method ends at exactly the per-layer counts, measured on its own model
        assert summary[f"groups_removed/{v}"] == pytest.approx(0.5, abs=0.02)
        assert summary[f"params_compact/{v}"] < summary["params/dense"]
        assert summary[f"compact_max_abs_diff/{v}"] <= 1e-5
    assert summary["layers_at_k_before_projection/wgsef"] == "4/4"  # the exact objective reaches k by itself
    assert summary["groups_removed_before_projection/wgsef"] == pytest.approx(0.5, abs=0.02)
    assert (path / "summary.json").exists() and (path / "figures" / "layer_group_sparsity.png").exists()
    saved = json.loads((path / "summary.json").read_text())
    assert saved["acc/wgsef"] == pytest.approx(summary["acc/wgsef"])


def test_the_exact_prox_reaches_k_groups_before_any_projection():
    """On a small problem where it must happen: with γ close to 1 the exact k-level prox keeps k groups."""
    from sparseforge.optim import ProximalOptimizer, build_prox_map, nonzero_groups

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    x, y = torch.randn(64, 10), torch.randint(0, 3, (64,))
    pm = build_prox_map(model, "wgsef", weight=9.99, k=0.25, targets=["0"])  # k = 4 of 16 neurons, γ = 0.999
    opt = ProximalOptimizer(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), pm)
    for _ in range(20):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        (nz, m, k), = nonzero_groups(pm)  # no projection anywhere
        assert nz == k == 4 and m == 16
    assert model[0].bias[model[0].weight.abs().sum(1) == 0].abs().max() == 0  # the bias is in the group


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
    from sparseforge.targeting import structured_targets

    torch.manual_seed(0)
    model = create_model("lenet5").eval()
    pm = build_prox_map(model, "wgsef", weight=1.0, k=0.5, targets=structured_targets(model, example_inputs=torch.randn(2, 1, 8, 8)))
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
    assert 0.0 <= s["acc/wgsef"] <= 1.0 and s["params_compact/wgsef"] < s["params/dense"]
