"""The ``sparsey`` recipe at its smoke preset, and its one-line errors."""

from __future__ import annotations

import json

import pytest

from sparseforge.errors import UserError
from sparseforge.recipes import run_recipe


def test_sparsey_recipe_smoke(tmp_path):
    path, summary = run_recipe("sparsey", preset="smoke", out=tmp_path)
    img, vid, probe, seq = summary["images"], summary["videos"], summary["probe"], summary["sequences"]
    assert img["n_train"] == 80 and img["n_test"] == 120
    assert img["acc_svm"] > 0.3 and img["acc_count"] > 0.2  # well above chance (0.1)
    assert img["recall_now_items"] >= 0.9  # every learned item comes back at once
    assert 0.0 <= img["recall_end_L1_stored"] <= img["cm_match_end_L1_stored"] <= 1.0
    assert img["familiarity_G_seen"] > img["familiarity_G_novel"] > img["familiarity_G_random"] - 1e-9
    assert img["familiarity_auc_seen_vs_novel"] > 0.9
    assert img["memory_bits"] == 144 * 25 * 160 + 144 * 160 * 256
    assert probe["recall_now_digits_after"] >= 0.9 and probe["recall_now_random_after"] >= 0.9
    assert seq["recall_default_n1"] == 1.0 and set(seq) >= {"recall_before_n4", "recall_priority_n4"}
    assert 0.0 <= vid["acc_count"] <= 1.0 and vid["learn_time_s"] > 0
    assert vid["G_seen"] > vid["G_test"]
    flat = json.loads((path / "summary.json").read_text())
    for key in ("images/acc_svm", "images/learn_time_s", "images/memory_bits", "sequences/recall_default_n4"):
        assert key in flat
    for fig in ("code_vs_input_overlap", "familiarity", "sequence_capacity"):
        assert (path / "figures" / f"{fig}.png").exists()
    tables = json.loads((path / "tables.json").read_text())
    assert {"recall", "probe", "sequence_capacity", "accuracy_vs_items"} <= set(tables)
    assert (path / "report.html").exists()


def test_sparsey_recipe_resume_reuses_stages(tmp_path):
    _, first = run_recipe("sparsey", preset="smoke", out=tmp_path, report=False,
                          overrides={"image_data": "none", "video_data": "none"})  # fmt: skip
    _, again = run_recipe("sparsey", preset="smoke", out=tmp_path, resume=True, report=False,
                          overrides={"image_data": "none", "video_data": "none"})  # fmt: skip
    first.pop("wall_time_s"), again.pop("wall_time_s")
    assert again == first and set(first) == {"probe", "sequences"}


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
