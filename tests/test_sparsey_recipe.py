"""The ``sparsey`` recipe at its smoke preset, and its one-line errors."""

from __future__ import annotations

import json

import pytest

from sparseforge.errors import UserError
from sparseforge.recipes import run_recipe


def test_sparsey_recipe_smoke(tmp_path):
    path, summary = run_recipe("sparsey", preset="smoke", out=tmp_path)
    img, vid = summary["images"], summary["videos"]
    assert img["n_train"] == 80 and img["n_test"] == 120
    assert img["acc_svm"] > 0.3 and img["acc_count"] > 0.2  # well above chance (0.1)
    assert img["G_seen"] > img["G_random"]
    assert img["G_storing_macs"] == pytest.approx(1.0)  # a storing mac recognises its item fully
    assert img["memory_bits"] == 144 * 25 * 160
    assert 0.0 <= vid["acc_count"] <= 1.0 and vid["learn_time_s"] > 0
    assert vid["G_seen"] > vid["G_test"]
    flat = json.loads((path / "summary.json").read_text())
    for key in ("images/acc_svm", "images/learn_time_s", "images/codes_per_s", "images/memory_bits"):
        assert key in flat
    for fig in ("code_vs_input_overlap", "familiarity"):
        assert (path / "figures" / f"{fig}.png").exists()
    assert (path / "report.html").exists()


def test_sparsey_recipe_missing_data_dir_is_one_line(tmp_path):
    with pytest.raises(UserError) as e:
        run_recipe("sparsey", preset="paper", out=tmp_path, report=False)
    assert "data_dir" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(UserError) as e:
        run_recipe(
            "sparsey",
            preset="smoke",
            overrides={"image_data": "mnist", "data_dir": str(tmp_path / "no")},
            out=tmp_path,
            report=False,
        )
    assert "\n" not in str(e.value)
    with pytest.raises(UserError):
        run_recipe(
            "sparsey",
            preset="smoke",
            overrides={"video_data": "frames", "image_data": "none"},
            out=tmp_path,
            report=False,
        )
