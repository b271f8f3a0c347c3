"""Grokking tickets: models, metrics, frequency entropy, float64 loss, and the recipe's smoke preset."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from sparseforge.models.grokking import (
    ModMLP,
    ModTransformer,
    float64_cross_entropy,
    grokking_mlp,
    grokking_transformer,
)
from sparseforge.pruning.grokking import frequency_entropy, grokking_metrics
from sparseforge.recipes.grokking_tickets import GrokkingTicketsConfig


def test_models_have_the_spec_weight_counts_and_shapes():
    m = grokking_mlp()
    assert sum(p.numel() for p in m.parameters()) == 115_000
    assert all(p.dim() == 2 for p in m.parameters())  # no biases
    t = grokking_transformer()
    assert sum(p.numel() for p in t.parameters()) == 115_456
    x = torch.randint(0, 67, (5, 2))
    assert m(x).shape == (5, 67) and t(x).shape == (5, 67)


def test_mlp_init_scale_follows_fan_in():
    torch.manual_seed(0)
    m = ModMLP(67, d_emb=500, d_hidden=48)
    for p, fan_in in ((m.embed, 67), (m.w_in, 500), (m.w_out, 48), (m.unembed, 500)):
        assert float(p.detach().std()) == pytest.approx(1 / math.sqrt(fan_in), rel=0.05)


@pytest.mark.parametrize("cls", [ModMLP, ModTransformer])
def test_onehot_forward_matches_token_forward(cls):
    torch.manual_seed(0)
    m = cls(13) if cls is ModMLP else cls(13, d_model=16, d_mlp=16)
    x = torch.randint(0, 13, (7, 2))
    torch.testing.assert_close(m.forward_onehot(F.one_hot(x, 13).float()), m(x), rtol=1e-5, atol=1e-5)


def test_transformer_is_causal_and_reads_the_last_position():
    torch.manual_seed(0)
    t = ModTransformer(11, d_model=16, d_mlp=16)
    a = torch.tensor([[3, 4]])
    b = torch.tensor([[5, 4]])
    assert not torch.allclose(t(a), t(b))  # the first token matters through attention


def test_grokking_metrics_first_crossing_and_never():
    hist = [{"step": s, "train_acc": tr, "test_acc": te} for s, tr, te in
            [(0, 0.0, 0.0), (10, 0.5, 0.1), (20, 0.96, 0.2), (30, 1.0, 0.94), (40, 1.0, 0.95), (50, 1.0, 0.99)]]
    m = grokking_metrics(hist, 0.95)
    assert m == {"t_mem": 20, "t_gen": 40, "tau": 2.0, "gap": 20}
    assert grokking_metrics(hist, 0.99)["t_gen"] == 50
    never = grokking_metrics(hist[:4], 0.95)
    assert never["t_gen"] is None and never["tau"] is None and never["t_mem"] == 20


def test_frequency_entropy_extremes():
    p = 31
    t = torch.arange(p, dtype=torch.float64)
    cos = torch.cos(2 * math.pi * 3 * t / p)[None]
    assert frequency_entropy(cos) == pytest.approx(0.0, abs=1e-12)
    # a flat power spectrum over f = 1..floor(p/2): a sum of all cosines with equal amplitude
    flat = sum(torch.cos(2 * math.pi * f * t / p) for f in range(1, p // 2 + 1))[None]
    assert frequency_entropy(flat) == pytest.approx(math.log(p // 2), rel=1e-9)


def test_float64_cross_entropy_matches_torch():
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(50, 67, generator=g), torch.randint(0, 67, (50,), generator=g)
    assert float(float64_cross_entropy(logits, y)) == pytest.approx(float(F.cross_entropy(logits, y)), abs=1e-6)
    assert float64_cross_entropy(logits, y).dtype == torch.float64


def test_config_validates_variants():
    from sparseforge.errors import ConfigError

    cfg = GrokkingTicketsConfig(variants="ticket,snip")
    assert cfg.variant_list() == ["dense", "ticket", "snip"]
    with pytest.raises(ConfigError):
        GrokkingTicketsConfig(variants="ticket,nope")
    with pytest.raises(ConfigError):
        GrokkingTicketsConfig(ticket_source="later")


def test_recipe_smoke(tmp_path):
    from sparseforge.recipes import run_recipe

    path, _ = run_recipe("grokking-tickets", preset="smoke", out=tmp_path)
    s = json.loads((path / "summary.json").read_text())  # flat keys
    for key in ("t_gen/dense", "t_gen/ticket", "t_mem/dense", "speedup_ticket_vs_dense", "norm_ratio/dense_l2",
                "final_test_acc/dense", "split_hash", "ticket_source_step"):
        assert key in s, key
    assert 0 < s["norm_ratio/dense_l2"] < 1
    assert "t_gen/synflow" in s and "t_gen/sweep_k0.3" in s
    assert (path / "figures" / "t_gen_per_variant.png").exists()
    assert (path / "figures" / "t_gen_vs_rate.png").exists()
    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    series = {r.get("series") for r in rows}
    assert {"dense/s0", "ticket/s0", "random/s0"} <= series
    # the ticket shares the dense run's split: one split hash per seed
    assert len(s["split_hash"]) == 1


def test_ticket_and_dense_share_split_and_ticket_keeps_mask(tmp_path):
    from sparseforge.engine import Run
    from sparseforge.recipes.grokking_tickets import run_seed

    cfg = GrokkingTicketsConfig(p=11, frac_train=0.5, d_emb=16, d_hidden=8, lr=3e-3, steps=30, ticket_steps=20,
                                eval_every=10, checkpoint_every=10, variants="dense,ticket,ticket_mem,dense_l1")
    out = run_seed(cfg, 0, Run(tmp_path))
    v = out["variants"]
    assert set(v) == {"dense", "ticket", "ticket_mem", "dense_l1"}
    assert v["dense_l1"]["norm_ratio"] < 1
    assert all(r["l1"] > 0 for r in v["ticket"]["history"])
    # the ticket starts from theta_0 * m, so its initial L1 is below the dense initial L1
    assert v["ticket"]["history"][0]["l1"] < v["dense"]["history"][0]["l1"]
    assert v["dense_l1"]["history"][0]["l1"] == pytest.approx(v["ticket"]["history"][0]["l1"], rel=1e-5)
