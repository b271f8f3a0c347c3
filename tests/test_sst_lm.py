"""The sst-lm recipe (smoke preset), the causal LM and the gap-reduction metric."""

from __future__ import annotations

import json

import pytest
import torch

from sparseforge.models import create_model, example_input
from sparseforge.recipes import run_recipe
from sparseforge.spectral.metrics import gap_reduction


def test_gap_reduction_directions() -> None:
    assert gap_reduction(23.50, 26.98, {"lora": 34.23, "relora": 35.80}) == pytest.approx(0.676, abs=1e-3)
    assert gap_reduction(10.0, 10.0, [12.0, 13.0]) == pytest.approx(1.0)
    assert gap_reduction(0.9, 0.85, [0.7], lower_is_better=False) == pytest.approx(0.75)
    assert gap_reduction(7.6, 7.0, {"lora": 6.7}) is None  # full worse than LoRA: undefined


def test_causal_lm_registered_and_causal() -> None:
    m = create_model("causal_lm")
    x = example_input("causal_lm", batch=2)
    out = m(x)
    assert out.shape == (2, 64, 256)
    x2 = x.clone()
    x2[:, 40:] = (x2[:, 40:] + 1) % 256
    torch.testing.assert_close(m(x2)[:, :40], out[:, :40])  # future tokens do not leak
    assert not torch.allclose(m(x2)[:, 40:], out[:, 40:])


def test_recipe_smoke(tmp_path) -> None:
    path, s = run_recipe("sst-lm", preset="smoke", out=tmp_path)
    for m in ("full", "lora", "relora", "galore", "sst"):
        assert 1.0 < s[f"{m}/val_ppl"] < 256.0  # learned something: well below uniform at ~V
        assert s[f"{m}/optimizer_state_bytes"] > 0 and s[f"{m}/tokens_per_s"] > 0
    assert s["sst/optimizer_state_bytes"] < 0.7 * s["full/optimizer_state_bytes"]
    assert s["galore/optimizer_state_bytes"] < 0.7 * s["full/optimizer_state_bytes"]
    assert s["sst/trainable_params"] < s["full/trainable_params"]
    assert s["gap_reduction"] is None or isinstance(s["gap_reduction"], float)
    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    assert {r["series"] for r in rows} == {"full", "lora", "relora", "galore", "sst"}
    assert all("val_ppl" in r for r in rows)
    assert (path / "summary.json").exists()
