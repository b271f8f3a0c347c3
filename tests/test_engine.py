import json
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparseforge.engine import CheckpointCallback, EvalCallback, Run, fit, make_loader
from sparseforge.engine.checkpoint import atomic_write_json, load_checkpoint, save_checkpoint


def _data(n=128):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    return x, y


def _train(run, epochs, resume=False):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = _data()
    acc = EvalCallback(lambda m: {"acc": (m(x).argmax(1) == y).float().mean()}, every=1)
    st = fit(model, make_loader((x, y), 32, seed=0), opt, loss_fn=F.cross_entropy, epochs=epochs,
             callbacks=[acc, CheckpointCallback(run, "main", every=1)], run=run, series="main", resume=resume)
    return model, st


def test_fit_learns_logs_and_counts(tmp_path):
    run = Run(tmp_path)
    model, st = _train(run, epochs=5)
    assert st.step == 5 * 4 and st.epoch == 5
    assert st.history[-1]["acc"] > 0.9
    rows = run.read_metrics()
    assert len(rows) == 5 and rows[0]["series"] == "main" and "acc" in rows[0]
    assert run.checkpoint_path("main").exists()


def test_resume_continues_to_the_same_result(tmp_path):
    full, _ = _train(Run(tmp_path / "a"), epochs=4)
    _train(Run(tmp_path / "b"), epochs=2)  # "interrupted" after 2 epochs
    resumed, st = _train(Run(tmp_path / "b", resume=True), epochs=4, resume=True)
    assert st.epoch == 4
    for p, q in zip(full.parameters(), resumed.parameters()):
        assert torch.allclose(p, q, atol=1e-6)


def test_steps_budget_and_early_stop(tmp_path):
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = _data()
    st = fit(model, [(x, y)], opt, loss_fn=F.cross_entropy, steps=7)
    assert st.step == 7
    stop = EvalCallback(lambda m: {"v": 1.0}, every=2, unit="step", stop_when=lambda d: d["v"] > 0)
    st = fit(model, [(x, y)], opt, loss_fn=F.cross_entropy, steps=100, callbacks=[stop])
    assert st.step == 2
    with pytest.raises(ValueError):
        fit(model, [(x, y)], opt, loss_fn=F.cross_entropy)


def test_atomic_writes_leave_no_temp_files(tmp_path):
    save_checkpoint({"a": torch.ones(3)}, tmp_path / "c.pt")
    atomic_write_json(tmp_path / "s.json", {"x": torch.tensor(2.0)})
    assert torch.equal(load_checkpoint(tmp_path / "c.pt")["a"], torch.ones(3))
    assert json.loads((tmp_path / "s.json").read_text()) == {"x": 2.0}
    assert sorted(os.listdir(tmp_path)) == ["c.pt", "s.json"]


def test_run_cached_stage_is_reused_only_on_resume(tmp_path):
    calls = []
    Run(tmp_path).cached("s", lambda: calls.append(1) or {"v": 1})
    Run(tmp_path, resume=True).cached("s", lambda: calls.append(2) or {"v": 2})
    assert calls == [1]
    assert Run(tmp_path).cached("s", lambda: {"v": 3}) == {"v": 3}


def _cosine_run(run, epochs, resume=False):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=40)
    x, y = _data()
    fit(model, make_loader((x, y), 32, seed=0), opt, loss_fn=F.cross_entropy, epochs=epochs, scheduler=sched,
        callbacks=[CheckpointCallback(run, "main")], run=run, series="main", resume=resume)
    return model, opt


def test_resume_restores_the_lr_schedule(tmp_path):
    full, opt_full = _cosine_run(Run(tmp_path / "a"), epochs=6)
    _cosine_run(Run(tmp_path / "b"), epochs=3)
    resumed, opt_res = _cosine_run(Run(tmp_path / "b", resume=True), epochs=6, resume=True)
    assert opt_res.param_groups[0]["lr"] == pytest.approx(opt_full.param_groups[0]["lr"], rel=1e-9)
    for p, q in zip(full.parameters(), resumed.parameters()):
        assert torch.allclose(p, q, atol=1e-6)


def test_early_stop_survives_resume_and_eval_may_report_a_loss(tmp_path):
    x, y = _data()

    def go(resume):
        torch.manual_seed(0)
        model = nn.Linear(4, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        ev = EvalCallback(lambda m: {"loss": F.cross_entropy(m(x), y), "step": -1}, every=1,
                          stop_when=lambda d: True)
        run = Run(tmp_path, resume=resume)
        return fit(model, make_loader((x, y), 32), opt, loss_fn=F.cross_entropy, epochs=10,
                   callbacks=[ev, CheckpointCallback(run, "s")], run=run, series="s", resume=resume)

    assert go(False).epoch == 1
    st = go(True)
    assert st.epoch == 1 and st.step == 4  # the stop decision was saved; nothing more trained
    rows = Run(tmp_path, resume=True).read_metrics()
    assert rows[0]["step"] == 4 and "loss" in rows[0]


def test_fit_refuses_an_empty_epoch():
    model = nn.Linear(4, 2)
    x, y = _data(8)
    loader = make_loader((x, y), 32, drop_last=True)  # no full batch
    with pytest.raises(ValueError, match="no batch"):
        fit(model, loader, torch.optim.SGD(model.parameters(), lr=0.1), loss_fn=F.cross_entropy, steps=5)


def test_rerun_stage_on_resume_does_not_duplicate_rows(tmp_path):
    run = Run(tmp_path)
    run.cached("a", lambda: run.log(1, series="a", v=1.0) or 1)
    run.log(5, series="b", v=2.0)  # an interrupted stage "b" logged outside any cached stage

    def stage_b(r):
        r.log(5, series="b", v=3.0)
        return 2

    r2 = Run(tmp_path, resume=True)
    r2.cached("b", lambda: stage_b(r2))
    r3 = Run(tmp_path, resume=True)
    r3._drop_stage_rows("b")
    r3.cached("b2", lambda: stage_b(r3))
    r4 = Run(tmp_path, resume=True)
    r4.cached("b2", lambda: stage_b(r4))  # reused: no new rows
    rows = Run(tmp_path, resume=True).read_metrics()
    assert [r.get("stage") for r in rows].count("b2") == 1
    assert [r.get("stage") for r in rows].count("a") == 1


def test_run_dir_that_is_a_file_is_a_user_error(tmp_path):
    from sparseforge.errors import UserError

    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(UserError, match="is a file"):
        Run(f)


def test_fresh_run_clears_stale_results(tmp_path):
    run = Run(tmp_path)
    run.save_summary({"acc": 1.0})
    run.save_table("t", [{"a": 1}])
    Run(tmp_path)  # a fresh run in the same folder
    assert not (tmp_path / "summary.json").exists() and not (tmp_path / "tables.json").exists()


def test_epoch_sampler_skip_once_resumes_mid_epoch():
    from torch.utils.data import DataLoader

    from sparseforge.engine.data import EpochSampler

    x, y = _data(40)
    loader = make_loader((x, y), 8, seed=3)
    loader.sampler.set_epoch(2)
    full = [b[0] for b in loader]
    loader.sampler.skip_once(2 * 8)
    rest = [b[0] for b in loader]
    assert len(rest) == 3 and all(torch.equal(a, b) for a, b in zip(full[2:], rest))
    assert len([b for b in loader]) == 5  # only the next pass is shortened
    s = EpochSampler(5, shuffle=False)
    s.skip_once(3)
    assert list(s) == [3, 4] and list(s) == [0, 1, 2, 3, 4]
    assert isinstance(loader, DataLoader)


def test_ensure_dir_errors_are_one_line(tmp_path):
    from sparseforge.engine.run import ensure_dir
    from sparseforge.errors import PathError

    f = tmp_path / "f"
    f.write_text("x")
    for bad, match in ((str(f), "is a file"), (str(f / "sub"), "a part of that path is a file"), ("", "empty path"),
                       ("  ", "empty path")):
        with pytest.raises(PathError, match=match) as e:
            ensure_dir(bad, what="the folder", option="--out")
        assert "\n" not in str(e.value)
    assert ensure_dir(tmp_path / "a" / "b").is_dir()


def test_run_refuses_a_directory_it_cannot_create(tmp_path, monkeypatch):
    import pathlib

    from sparseforge.errors import PathError

    def deny(self, *a, **k):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(pathlib.Path, "mkdir", deny)
    with pytest.raises(PathError, match="Permission denied; give --out a writable folder"):
        Run(tmp_path / "new")
    with pytest.raises(PathError, match="empty path"):
        Run("")


def test_corrupt_legacy_checkpoint_is_a_checkpoint_error(tmp_path):
    from sparseforge.errors import CheckpointError

    run = Run(tmp_path)
    run.checkpoint_path("main").parent.mkdir(parents=True)
    run.checkpoint_path("main").write_bytes(b"")
    with pytest.raises(CheckpointError, match="cannot be read"):
        _train(Run(tmp_path, resume=True), epochs=2, resume=True)


def test_stateless_markers_on_builtin_callbacks():
    from sparseforge.engine import LambdaCallback

    assert EvalCallback(lambda m: {}).stateless and LambdaCallback(lambda s: None).stateless
    assert CheckpointCallback(Run("unused-dir", write=False), "x").stateless
