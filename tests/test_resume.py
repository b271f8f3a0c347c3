"""Mid-stage checkpoints: a stage killed mid-way resumes from its last checkpoint, bit-identically.

A stage (``run.cached``) holds two ``fit`` calls and code between them. Interrupting it (an
exception in-process, SIGKILL in a subprocess) and resuming must give the same parameters,
metrics rows and summary as the uninterrupted run, restore the finished fit without retraining
it, and replay at most one checkpoint interval of the interrupted one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparseforge.engine import Callback, EvalCallback, Run, fit, make_loader
from sparseforge.errors import CheckpointError


class Counter(Callback):
    """A callback with state: counts steps and keeps the losses it saw."""

    def __init__(self) -> None:
        self.n, self.trace = 0, []

    def on_step_end(self, state) -> None:
        self.n += 1
        self.trace.append(state.loss)

    def state_dict(self):
        return {"n": self.n, "trace": list(self.trace)}

    def load_state_dict(self, sd) -> None:
        self.n, self.trace = sd["n"], list(sd["trace"])


class Interrupt(Exception):
    pass


class KillAt(Callback):
    stateless = True

    def __init__(self, step: int | None) -> None:
        self.step = step

    def on_step_end(self, state) -> None:
        if self.step is not None and state.step == self.step:
            raise Interrupt(state.step)


class Stream:
    """A re-iterable whose batches depend on the epoch index only (like a text window sampler)."""

    def __init__(self, n_batches: int = 7) -> None:
        self.n, self.epoch = n_batches, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        g = torch.Generator().manual_seed(1000 + self.epoch)
        for _ in range(self.n):
            x = torch.randn(8, 4, generator=g)
            yield x, (x[:, 0] > x[:, 1]).long()


def _data(n=96):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    return x, (x[:, 0] + x[:, 1] > 0).long()


def _stage(run: Run, *, kill: tuple[str, int] | None, trained: list[int], flags: dict) -> dict:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))
    x, y = _data()
    gen = torch.Generator().manual_seed(1)  # used by the step: must be restored too

    def step_fn(m, batch):
        trained.append(1)
        xb, yb = batch
        return F.cross_entropy(m(xb + 0.01 * torch.randn(xb.shape, generator=gen)), yb)

    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.7)
    c1 = Counter()
    ev1 = EvalCallback(lambda m: {"acc": (m(x).argmax(1) == y).double().mean()}, every=3, unit="step")
    s1 = fit(model, make_loader((x, y), 16, seed=0), opt, step_fn=step_fn, epochs=3, scheduler=sched,
             callbacks=[c1, ev1, KillAt(kill[1] if kill and kill[0] == "a" else None)], run=run, series="a",
             stateful=(gen,))
    noise = float(torch.rand(()))  # code between the fits draws from the global RNG and logs
    run.log(s1.step, series="between", noise=noise)
    opt2 = torch.optim.Adam(model.parameters(), lr=1e-2)
    c2 = Counter()
    ev2 = EvalCallback(lambda m: {"acc": (m(x).argmax(1) == y).double().mean()}, every=4, unit="step")
    s2 = fit(model, Stream(), opt2, step_fn=step_fn, steps=40, checkpoint_steps=5,
             callbacks=[c2, ev2, KillAt(kill[1] if kill and kill[0] == "b" else None)], run=run, series="b",
             stateful=(gen,))
    flags.update(a_restored=s1.restored, a_resumed=s1.resumed_from, b_restored=s2.restored, b_resumed=s2.resumed_from)
    return {"params": [p.detach().clone() for p in model.parameters()], "c1": c1.state_dict(),
            "c2": c2.state_dict(), "h1": s1.history, "h2": s2.history, "noise": noise, "loss": s2.loss,
            "rng_after": torch.rand(3)}


def _reference(tmp_path):
    run = Run(tmp_path / "ref", checkpoint_steps=4)
    trained: list[int] = []
    out = run.cached("train", lambda: _stage(run, kill=None, trained=trained, flags={}))
    return out, run.read_metrics(), len(trained)


@pytest.mark.parametrize("kill,resume_at,retrained", [
    (("a", 9), ("a", 8), 18 - 8 + 40),  # mid-epoch of the first fit (6 batches / epoch)
    (("b", 23), ("b", 20), 40 - 20),  # the first fit is restored, the second continues
])
def test_resume_mid_stage_is_bit_identical(tmp_path, kill, resume_at, retrained):
    ref, ref_rows, n_ref = _reference(tmp_path)
    assert n_ref == 18 + 40
    path = tmp_path / "killed"
    run = Run(path, checkpoint_steps=4)
    with pytest.raises(Interrupt):
        run.cached("train", lambda: _stage(run, kill=kill, trained=[], flags={}))
    assert (path / "checkpoints" / "progress" / "train").is_dir()
    trained: list[int] = []
    flags: dict = {}
    run = Run(path, resume=True, checkpoint_steps=4)
    out = run.cached("train", lambda: _stage(run, kill=None, trained=trained, flags=flags))
    for p, q in zip(ref["params"], out["params"]):
        assert torch.equal(p, q)
    for k in ("c1", "c2", "h1", "h2", "noise", "loss"):
        assert out[k] == ref[k], k
    assert torch.equal(out["rng_after"], ref["rng_after"])  # the global RNG continues identically
    assert run.read_metrics() == ref_rows  # no row lost, none duplicated
    assert len(trained) == retrained  # the replay is at most one interval
    which, step = resume_at
    assert flags[f"{which}_resumed"] == step
    if which == "b":
        assert flags["a_restored"] and flags["a_resumed"] is None
    assert not (path / "checkpoints" / "progress" / "train").exists()  # cleaned once the stage is done


def test_fresh_run_ignores_and_clears_old_progress(tmp_path):
    run = Run(tmp_path, checkpoint_steps=4)
    with pytest.raises(Interrupt):
        run.cached("train", lambda: _stage(run, kill=("b", 12), trained=[], flags={}))
    run = Run(tmp_path)  # not --resume: starts over
    assert not run.progress_root.exists()
    flags: dict = {}
    run.cached("train", lambda: _stage(run, kill=None, trained=[], flags=flags))
    assert not flags["a_restored"] and flags["b_resumed"] is None


def test_a_callback_without_state_is_refused_when_resumable(tmp_path):
    class Hidden(Callback):
        def __init__(self):
            self.n = 0

    model = nn.Linear(4, 2)
    x, y = _data(8)
    run = Run(tmp_path)
    with pytest.raises(TypeError, match="Hidden has no state_dict"):
        run.cached("s", lambda: fit(model, [(x, y)], torch.optim.SGD(model.parameters(), lr=0.1),
                                    loss_fn=F.cross_entropy, steps=2, callbacks=[Hidden()], stateful=()))
    with pytest.raises(TypeError, match="object has no state_dict"):
        run.cached("s", lambda: fit(model, [(x, y)], torch.optim.SGD(model.parameters(), lr=0.1),
                                    loss_fn=F.cross_entropy, steps=2, stateful=(object(),)))


def test_not_resumable_fit_writes_no_progress_and_reruns(tmp_path):
    model = nn.Linear(4, 2)
    x, y = _data(8)
    run = Run(tmp_path, checkpoint_steps=1)

    def stage():
        fit(model, [(x, y)], torch.optim.SGD(model.parameters(), lr=0.1), loss_fn=F.cross_entropy, steps=3,
            callbacks=[KillAt(2)])

    with pytest.raises(Interrupt):
        run.cached("s", stage)
    assert not run.progress_root.exists()


def _interrupted(tmp_path):
    run = Run(tmp_path, checkpoint_steps=4)
    with pytest.raises(Interrupt):
        run.cached("train", lambda: _stage(run, kill=("b", 13), trained=[], flags={}))
    return tmp_path / "checkpoints" / "progress" / "train"


def test_corrupt_mid_stage_checkpoint_is_a_one_line_error(tmp_path):
    prog = _interrupted(tmp_path)
    (prog / "fit-1.pt").write_bytes(b"not a checkpoint at all")
    run = Run(tmp_path, resume=True)
    with pytest.raises(CheckpointError, match="cannot be read") as e:
        run.cached("train", lambda: _stage(run, kill=None, trained=[], flags={}))
    assert "\n" not in str(e.value) and "fit-1.pt" in str(e.value)


def test_checkpoint_of_another_training_is_refused(tmp_path):
    prog = _interrupted(tmp_path)
    snap = torch.load(prog / "fit-1.pt", weights_only=False)
    snap["signature"]["steps"] = 999
    torch.save(snap, prog / "fit-1.pt")
    run = Run(tmp_path, resume=True)
    with pytest.raises(CheckpointError, match="another training"):
        run.cached("train", lambda: _stage(run, kill=None, trained=[], flags={}))


def test_corrupt_stage_result_is_a_one_line_error(tmp_path):
    Run(tmp_path).cached("s", lambda: {"v": 1})
    (tmp_path / "stages" / "s.pt").write_bytes(b"\x80\x04garbage")
    with pytest.raises(CheckpointError, match="stage 's'"):
        Run(tmp_path, resume=True).cached("s", lambda: {"v": 2})


def test_time_based_checkpoints(tmp_path, monkeypatch):
    """With a time budget and no step cadence, a checkpoint is written once the budget has elapsed."""
    import importlib

    fitmod = importlib.import_module("sparseforge.engine.fit")
    clock = [0.0]
    monkeypatch.setattr(fitmod.time, "monotonic", lambda: clock[0])
    model = nn.Linear(4, 2)
    x, y = _data(8)
    saved = []

    class Tick(Callback):
        stateless = True

        def on_step_end(self, state):
            clock[0] += 10.0  # every step "takes" 10 s
            if state.step == 7:
                saved.extend(sorted(p.name for p in run.progress_dir("s").glob("*.pt")))
                raise Interrupt()

    run = Run(tmp_path, checkpoint_seconds=25)
    with pytest.raises(Interrupt):
        run.cached("s", lambda: fit(model, [(x, y)], torch.optim.SGD(model.parameters(), lr=0.1),
                                    loss_fn=F.cross_entropy, steps=20, callbacks=[Tick()], stateful=()))
    assert saved == ["fit-0.pt"]
    snap = torch.load(run.progress_dir("s") / "fit-0.pt", weights_only=False)
    assert snap["step"] == 6 and not snap["final"]  # 3 steps = 30 s >= 25 s: saved at steps 3 and 6


# --- a real process, killed with SIGKILL -------------------------------------------------------

PLUGIN = '''
from dataclasses import dataclass
import hashlib, os, time
import torch, torch.nn.functional as F
from torch import nn
from sparseforge.config import RecipeConfig
from sparseforge.engine import Callback, EvalCallback, fit, make_loader
from sparseforge.recipes import recipe


@dataclass
class KillCfg(RecipeConfig):
    steps: int = 120
    threads: int | None = 1


class Hold(Callback):
    stateless = True

    def __init__(self, series):
        self.series = series

    def on_fit_start(self, state):
        with open(os.environ["SIDE_LOG"], "a") as f:
            f.write(f"start {self.series} {state.step}\\n")

    def on_step_end(self, state):
        if self.series == os.environ.get("HOLD_SERIES") and state.step == int(os.environ.get("HOLD_AT", "-1")):
            with open(os.environ["HOLD_MARK"], "w") as f:
                f.write(str(state.step))
            time.sleep(600)  # killed here


@recipe("kill-test", config=KillCfg, presets={"smoke": {}, "quick": {}, "paper": {}}, help="kill/resume test")
def run(cfg, run):
    def stage():
        torch.manual_seed(cfg.seed)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(256, 8, generator=g)
        y = (x[:, :4].sum(1) > 0).long()
        model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 2))
        ev = lambda m: {"acc": float((m(x).argmax(1) == y).double().mean())}
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        a = fit(model, make_loader((x, y), 32, seed=cfg.seed), opt, loss_fn=F.cross_entropy, epochs=3,
                callbacks=[EvalCallback(ev, every=1), Hold("a")], run=run, series="a", stateful=())
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.steps)
        b = fit(model, make_loader((x, y), 16, seed=cfg.seed + 1), opt, loss_fn=F.cross_entropy, steps=cfg.steps,
                scheduler=sched, callbacks=[EvalCallback(ev, every=10, unit="step"), Hold("b")], run=run,
                series="b", stateful=())
        h = hashlib.sha1(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()
        return {"loss_a": a.loss, "loss_b": b.loss, "acc": b.history[-1]["acc"], "params_sha1": h}

    return run.cached("train", stage)
'''


def _cli(tmp_path, *args, env=None, wait=True):
    code = "import sys; sys.path.insert(0, sys.argv.pop(1)); import kill_plugin; from sparseforge.cli import main; sys.exit(main(sys.argv[1:]))"
    cmd = [sys.executable, "-c", code, str(tmp_path), *args]
    e = {**os.environ, "SIDE_LOG": str(tmp_path / "side.log"), "SPARSEFORGE_NO_PROGRESS": "1", **(env or {})}
    if wait:
        return subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=300)
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=e)


def test_sigkill_mid_stage_then_resume_equals_the_uninterrupted_run(tmp_path):
    (tmp_path / "kill_plugin.py").write_text(textwrap.dedent(PLUGIN))
    every = 10
    ref = _cli(tmp_path, "run", "kill-test", "--preset", "smoke", "--out", str(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "killed"
    mark = tmp_path / "held"
    (tmp_path / "side.log").unlink()
    proc = _cli(tmp_path, "run", "kill-test", "--preset", "smoke", "--out", str(out), "--checkpoint-steps",
                str(every), env={"HOLD_SERIES": "b", "HOLD_AT": "57", "HOLD_MARK": str(mark)}, wait=False)
    try:
        t0 = time.time()
        while not mark.exists():
            assert proc.poll() is None, proc.stderr.read()
            assert time.time() - t0 < 120, "the run never reached the kill point"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "summary.json").exists()
    (tmp_path / "side.log").write_text("")
    res = _cli(tmp_path, "run", "kill-test", "--preset", "smoke", "--out", str(out), "--resume",
               "--checkpoint-steps", str(every))
    assert res.returncode == 0, res.stderr
    starts = (tmp_path / "side.log").read_text().split()
    assert starts[0:2] == ["start", "b"] and len(starts) == 3  # fit "a" was restored, not retrained
    resumed_at = int(starts[2])
    assert 57 - every <= resumed_at <= 57  # at most one interval replayed
    a = json.loads((tmp_path / "ref" / "summary.json").read_text())
    b = json.loads((out / "summary.json").read_text())
    a.pop("wall_time_s"), b.pop("wall_time_s")
    assert a == b
    assert (tmp_path / "ref" / "metrics.jsonl").read_text() == (out / "metrics.jsonl").read_text()
