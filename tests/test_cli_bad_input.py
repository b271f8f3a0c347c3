"""Bad input at the real console script: every case is one line ``error: ...`` and exit code 2.

Each case runs ``sparseforge ...`` (the installed console script) in a subprocess and checks:
exit code 2, exactly one line on stderr starting with ``error:``, no traceback, and the words
that name what was wrong. Cases that need a recipe declaring the generic config mechanisms
(``file_datasets``, ``limits``) use ``toy-data``, a recipe of a plugin module loaded through
``sitecustomize`` (so the console script itself is what runs). The same ``sitecustomize``
injects a ``PermissionError`` for paths below ``$SF_DENY``: as root a read-only folder is
still writable, so that is how the read-only cases are made.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

PLUGIN = '''
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from sparseforge.config import RecipeConfig
from sparseforge.engine import fit, make_loader
from sparseforge.recipes import recipe


@dataclass
class ToyDataConfig(RecipeConfig):
    file_datasets: ClassVar[tuple[str, ...]] = ("idx",)
    limits: ClassVar[dict] = {"width": 64}
    dataset: str = "builtin"
    data_dir: str | None = None
    width: int = 8
    epochs: int = 2
    batch_size: int = 16


@recipe("toy-data", config=ToyDataConfig, presets={"smoke": {}, "quick": {}, "paper": {"epochs": 50}},
        help="a tiny recipe with a file dataset (bad-input tests)")
def run(cfg, run):
    def stage():
        g = torch.Generator().manual_seed(cfg.seed)
        x = torch.randn(64, 4, generator=g)
        y = (x[:, 0] > 0).long()
        model = nn.Sequential(nn.Linear(4, cfg.width), nn.ReLU(), nn.Linear(cfg.width, 2))
        st = fit(model, make_loader((x, y), cfg.batch_size), torch.optim.SGD(model.parameters(), lr=0.1),
                 loss_fn=F.cross_entropy, epochs=cfg.epochs, run=run, series="toy", stateful=())
        return {"loss": st.loss}

    files = sorted(p.name for p in Path(cfg.data_dir).iterdir()) if cfg.data_dir else []
    return {**run.cached("train", stage), "files": len(files)}
'''

SITECUSTOMIZE = '''
import os
import pathlib

import toy_plugin  # noqa: F401  (registers the toy-data recipe)

_deny = os.environ.get("SF_DENY")
if _deny:
    _mkdir = pathlib.Path.mkdir

    def mkdir(self, *args, **kwargs):
        if str(self).startswith(_deny):
            raise PermissionError(13, "Permission denied", str(self))
        return _mkdir(self, *args, **kwargs)

    pathlib.Path.mkdir = mkdir
'''


def _console_script() -> list[str]:
    exe = Path(sys.executable).parent / "sparseforge"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "sparseforge.cli"]


# (id, argv (with {tmp}, {file}, {corrupt}, {other} placeholders), words expected in the error, extra env)
CASES: list[tuple[str, list[str], str, dict[str, str]]] = [
    # names, keys, types
    ("unknown-recipe", ["run", "no-such-recipe"], "unknown recipe 'no-such-recipe'", {}),
    ("unknown-key", ["run", "magnitude", "--set", "epochz=3"], "unknown config key 'epochz'", {}),
    ("wrong-type-int", ["run", "magnitude", "--set", "epochs=many"], "expected an integer", {}),
    ("wrong-type-float", ["run", "magnitude", "--set", "lr=fast"], "expected a number", {}),
    ("missing-equals", ["run", "magnitude", "--set", "epochs"], "key=value", {}),
    ("empty-value", ["run", "magnitude", "--set", "lr="], "has no value", {}),
    ("unknown-preset", ["run", "magnitude", "--preset", "huge"], "unknown preset", {}),
    ("bad-literal", ["run", "grokking-tickets", "--set", "model=cnn"], "expected one of", {}),
    ("bad-variant", ["run", "grokking-tickets", "--set", "variants=bogus"], "unknown variant", {}),
    ("bad-tuple-len", ["run", "grokking-tickets", "--set", "betas=0.9"], "betas", {}),
    ("recipe-range", ["run", "magnitude", "--set", "sparsity=1.5"], "sparsity", {}),
    # seeds
    ("seed-negative", ["run", "magnitude", "--seed", "-1"], "seed=-1 is below the minimum", {}),
    ("seed-too-big", ["run", "magnitude", "--seed", "4294967296"], "seed must be between 0 and", {}),
    ("seed-not-int", ["run", "magnitude", "--seed", "abc"], "invalid int value", {}),
    ("seed-float", ["run", "magnitude", "--seed", "1.5"], "invalid int value", {}),
    ("seed-via-set", ["run", "magnitude", "--set", "seed=-5"], "seed=-5", {}),
    ("seeds-tuple", ["run", "grokking-tickets", "--set", "seeds=1,-2"], "seeds=-2", {}),
    # per-key ranges (defaults by name)
    ("batch-size-0", ["run", "magnitude", "--set", "batch_size=0"], "batch_size=0 is below the minimum", {}),
    ("batch-size-neg", ["run", "magnitude", "--set", "batch_size=-1"], "batch_size=-1", {}),
    ("epochs-huge", ["run", "magnitude", "--set", "epochs=1000000000000"], "above the documented maximum", {}),
    ("steps-huge", ["run", "sst-lm", "--set", "steps=100000000000"], "steps must be between 1 and", {}),
    ("size-huge", ["run", "sst-lm", "--set", "d_model=100000000"], "d_model=", {}),
    ("threads-zero", ["run", "magnitude", "--set", "threads=0"], "threads", {}),
    ("float-nan", ["run", "magnitude", "--set", "lr=nan"], "not a finite number", {}),
    ("float-inf", ["run", "magnitude", "--set", "lr=inf"], "not a finite number", {}),
    ("float-overflow", ["run", "magnitude", "--set", "lr=1e999"], "not a finite number", {}),
    # the generic mechanisms, declared by a config (toy-data)
    ("declared-limit", ["run", "toy-data", "--set", "width=100000"], "width must be between 1 and 64", {}),
    ("data-dir-builtin", ["run", "toy-data", "--set", "data_dir={tmp}"], "data_dir is read only by dataset=idx", {}),
    ("data-dir-garbage", ["run", "toy-data", "--set", "data_dir=%%garbage%%"], "data_dir is read only by", {}),
    ("data-dir-empty", ["run", "toy-data", "--set", "data_dir="], "has no value", {}),
    ("data-dir-missing", ["run", "toy-data", "--set", "dataset=idx", "--set", "data_dir=/no/such/dir"],
     "does not exist", {}),
    ("data-dir-is-file", ["run", "toy-data", "--set", "dataset=idx", "--set", "data_dir={file}"], "is a file", {}),
    # data paths read by the recipes themselves
    ("dataset-needs-dir", ["run", "magnitude", "--set", "dataset=mnist"], "data_dir", {}),
    ("dataset-dir-missing", ["run", "magnitude", "--set", "dataset=mnist", "--set", "data_dir=/no/such/dir"],
     "does not exist", {}),
    ("unknown-dataset", ["run", "magnitude", "--set", "dataset=imagenet"], "unknown dataset", {}),
    # --out
    ("out-empty", ["run", "toy-data", "--out", ""], "--out is an empty path", {}),
    ("out-blank", ["run", "toy-data", "--out", "  "], "--out is an empty path", {}),
    ("out-is-file", ["run", "toy-data", "--out", "{file}"], "is a file", {}),
    ("out-below-file", ["run", "toy-data", "--out", "{file}/run"], "a part of that path is a file", {}),
    ("out-read-only", ["run", "toy-data", "--out", "{tmp}/denied/run"], "Permission denied",
     {"SF_DENY": "{tmp}/denied"}),
    # --resume
    ("resume-corrupt", ["run", "toy-data", "--preset", "smoke", "--out", "{corrupt}", "--resume"], "cannot be read", {}),
    ("resume-other-config", ["run", "toy-data", "--preset", "smoke", "--out", "{other}", "--resume"],
     "another config", {}),
    # other options
    ("device-cuda", ["run", "toy-data", "--device", "cuda"], "no CUDA device", {"CUDA_VISIBLE_DEVICES": ""}),
    ("device-unknown", ["run", "toy-data", "--device", "tpu"], "invalid choice", {}),
    ("checkpoint-steps-0", ["run", "toy-data", "--checkpoint-steps", "0"], "positive integer", {}),
    ("checkpoint-seconds-neg", ["run", "toy-data", "--checkpoint-seconds", "-1"], "positive number", {}),
    ("run-no-recipe", ["run"], "the following arguments are required", {}),
    # report
    ("report-missing", ["report", "/no/such/run"], "not a run directory", {}),
    ("report-file", ["report", "{file}"], "not a run directory", {}),
    # demo
    ("demo-out-empty", ["demo", "--out", "", "--only", "toy-data"], "empty path", {}),
    ("demo-out-file", ["demo", "--out", "{file}", "--only", "toy-data"], "is a file", {}),
    ("demo-out-below-file", ["demo", "--out", "{file}/demo", "--only", "toy-data"], "a part of that path is a file", {}),
    ("demo-out-read-only", ["demo", "--out", "{tmp}/denied/demo", "--only", "toy-data"], "Permission denied",
     {"SF_DENY": "{tmp}/denied"}),
    ("demo-preset", ["demo", "--preset", "huge", "--out", "{tmp}/d1"], "unknown preset", {}),
    ("demo-only-unknown", ["demo", "--only", "nosuch", "--out", "{tmp}/d2"], "unknown recipe", {}),
    ("demo-threads-0", ["demo", "--threads", "0"], "positive integer", {}),
    # the command line itself
    ("unknown-command", ["frobnicate"], "invalid choice", {}),
    ("no-command", [], "the following arguments are required", {}),
    ("list-bogus", ["list", "bogus"], "invalid choice", {}),
]


def _fill(text: str, paths: dict[str, str]) -> str:
    for k, v in paths.items():
        text = text.replace("{" + k + "}", v)
    return text


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(_console_script() + argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad_input")
    (tmp / "plugin").mkdir()
    (tmp / "plugin" / "toy_plugin.py").write_text(textwrap.dedent(PLUGIN))
    (tmp / "plugin" / "sitecustomize.py").write_text(textwrap.dedent(SITECUSTOMIZE))
    (tmp / "afile").write_text("x")
    env = {**os.environ, "PYTHONPATH": str(tmp / "plugin"), "SPARSEFORGE_NO_PROGRESS": "1"}
    env.pop("SPARSEFORGE_DEBUG", None)
    paths = {"tmp": str(tmp), "file": str(tmp / "afile"), "corrupt": str(tmp / "corrupt"), "other": str(tmp / "other")}
    good = _run(["run", "toy-data", "--preset", "smoke", "--out", paths["corrupt"]], env, tmp)
    assert good.returncode == 0, good.stderr  # the control: the toy recipe itself runs
    (tmp / "corrupt" / "stages" / "train.pt").write_bytes(b"\x80\x04\x95garbage, not a checkpoint")
    shutil.copytree(tmp / "corrupt", tmp / "other")
    cfg = json.loads((tmp / "other" / "config.json").read_text())
    (tmp / "other" / "config.json").write_text(json.dumps({**cfg, "width": 9}))

    def one(case):
        cid, argv, _, extra = case
        e = {**env, **{k: _fill(v, paths) for k, v in extra.items()}}
        return cid, _run([_fill(a, paths) for a in argv], e, tmp)

    with ThreadPoolExecutor(max_workers=2) as pool:
        out = dict(pool.map(one, CASES))
    out["_good"] = good
    out["_debug"] = _run(["--debug", "run", "magnitude", "--set", "batch_size=0"], env, tmp)
    out["_debug_after"] = _run(["run", "magnitude", "--set", "batch_size=0", "--debug"], env, tmp)
    return out


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(case, results):
    cid, argv, words, _ = case
    r = results[cid]
    lines = r.stderr.strip().splitlines()
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert words in lines[0], lines[0]


def test_the_table_covers_the_issue(results):
    """The summary a person reads: cases, clean errors, tracebacks, wrong exit codes."""
    rows = [results[c[0]] for c in CASES]
    tracebacks = sum("Traceback" in r.stderr for r in rows)
    wrong_exit = sum(r.returncode != 2 for r in rows)
    clean = sum(r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 for r in rows)
    assert (len(rows), clean, tracebacks, wrong_exit) == (len(CASES), len(CASES), 0, 0)


def test_debug_shows_the_traceback(results):
    for key in ("_debug", "_debug_after"):
        r = results[key]
        assert r.returncode == 2
        assert "Traceback (most recent call last)" in r.stderr
        assert r.stderr.strip().splitlines()[-1].startswith("error: batch_size=0")


def test_unexpected_failure_is_one_line_exit_1(tmp_path):
    """A failure that is not bad input: one line with a --debug hint, exit code 1, no traceback."""
    code = ("import sys, sparseforge.recipes as R; "
            "R.run_recipe = lambda *a, **k: (_ for _ in ()).throw(RuntimeError('boom\\nsecond line')); "
            "from sparseforge.cli import main; sys.exit(main(['run', 'magnitude']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "RuntimeError: boom" in lines[0] and "--debug" in lines[0]
