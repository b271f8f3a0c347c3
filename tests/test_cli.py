"""The command line: contract behaviour and one-line errors with exit code 2."""

import json
import subprocess
import sys

import pytest

from sparseforge.cli import main


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "sparseforge.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_list_shows_every_registered_recipe(capsys):
    from sparseforge.registry import RECIPES

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "magnitude" in out
    for name in RECIPES.names():
        assert name in out


@pytest.mark.parametrize(
    "args,match",
    [
        (["run", "no-such-recipe"], "unknown recipe 'no-such-recipe'"),
        (["run", "magnitude", "--set", "epochz=3"], "unknown config key 'epochz'"),
        (["run", "magnitude", "--set", "epochs=many"], "expected an integer"),
        (["run", "magnitude", "--set", "epochs"], "key=value"),
        (["run", "magnitude", "--preset", "huge"], "unknown preset"),
        (["run", "magnitude", "--set", "dataset=mnist", "--set", "data_dir=/no/such/dir"], "does not exist"),
        (["run", "magnitude", "--set", "dataset=mnist"], "data_dir"),
        (["run", "magnitude", "--set", "sparsity=1.5"], "sparsity"),
        (["report", "/no/such/run"], "not a run directory"),
        (["run", "magnitude", "--set", "threads=0"], "threads must be >= 1"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, match, capsys):
    code = main(args) if args[0] != "frobnicate" else None
    if code is None:
        with pytest.raises(SystemExit) as e:
            main(args)
        code = e.value.code
    err = capsys.readouterr().err
    assert code == 2
    assert match in err
    assert len(err.strip().splitlines()) == 1, err


def test_cli_subprocess_bad_input_has_no_traceback(tmp_path):
    r = _cli("run", "magnitude", "--set", "lr=abc", "--out", str(tmp_path / "r"))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and r.stderr.strip().startswith("error:")


def test_run_writes_the_run_directory_contract(tmp_path):
    out = tmp_path / "run"
    r = _cli("run", "magnitude", "--preset", "smoke", "--out", str(out), "--seed", "3")
    assert r.returncode == 0, r.stderr
    for f in ("config.json", "metrics.jsonl", "summary.json", "report.html"):
        assert (out / f).exists(), f
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["seed"] == 3 and cfg["recipe"] == "magnitude" and cfg["preset"] == "smoke"
    summary = json.loads((out / "summary.json").read_text())
    assert all(not isinstance(v, dict) for v in summary.values())
    html = (out / "report.html").read_text()
    assert "data:image/png;base64" in html and "Full summary" in html and "Claim." in html
    # report rebuild works on its own
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0 and (out / "report.html").exists()


def test_out_that_is_a_file_and_resume_with_another_config_exit_2(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    assert main(["run", "magnitude", "--preset", "smoke", "--out", str(f)]) == 2
    assert "is a file" in capsys.readouterr().err
    out = tmp_path / "r"
    (out).mkdir()
    (out / "config.json").write_text('{"recipe": "magnitude", "preset": "smoke", "epochs": 99}')
    assert main(["run", "magnitude", "--preset", "smoke", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "another config" in err and len(err.strip().splitlines()) == 1


def test_list_methods_and_debug_flag_positions(capsys):
    assert main(["list", "methods"]) == 0
    out = capsys.readouterr().out
    assert "prox" in out
    assert main(["--debug", "run", "magnitude", "--set", "batch_size=0"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("error: batch_size=0")


def test_os_errors_at_the_boundary_are_one_line(capsys, monkeypatch):
    import sparseforge.recipes as R

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device", "/some/run/metrics.jsonl")

    monkeypatch.setattr(R, "run_recipe", full_disk)
    assert main(["run", "magnitude"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: cannot use /some/run/metrics.jsonl: No space left on device (sparseforge run magnitude)"


def test_resume_after_kill_writes_recipe_card(tmp_path):
    out = tmp_path / "r"
    assert main(["run", "magnitude", "--preset", "smoke", "--out", str(out), "--checkpoint-steps", "5"]) == 0
    card = json.loads((out / "recipe.json").read_text())
    assert card["name"] == "magnitude" and card["claim"] and "goal" in card
    assert not (out / "checkpoints" / "progress").exists()
