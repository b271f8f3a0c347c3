"""Turbo-VBI as a procedure: the linear-regression ELBO toy, the TurboVBI object (targets, schedule,
masks, bake, compaction), bad input, and the ``turbo-vbi`` recipe."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparseforge import masks as M
from sparseforge.bayes import (
    BayesConv2d,
    BayesLinear,
    GammaConstants,
    TurboVBI,
    TurboVBIConfig,
    calibrate_iid_prior,
    log_evidence_ratio,
    prior_elbo_terms,
    rho_moments,
    rho_update,
    s_update,
)
from sparseforge.bayes.measure import compact_and_measure
from sparseforge.engine import fit, make_loader
from sparseforge.errors import ConfigError, UserError

D = torch.float64


# ------------------------------------------------------------------------------------------------
# the linear-regression toy: every closed-form update is an exact coordinate step of the ELBO
# ------------------------------------------------------------------------------------------------
def _elbo(X, y, beta, mu, s2, a_t, b_t, pi_t, pi, c):
    n = X.shape[0]
    col_sq = (X * X).sum(0)
    lik = n / 2 * math.log(beta / (2 * math.pi)) - beta / 2 * (((y - X @ mu) ** 2).sum() + (col_sq * s2).sum())
    return float(lik + prior_elbo_terms(mu, s2, a_t, b_t, pi_t, pi, c).sum())


def test_each_vbi_update_does_not_decrease_the_elbo_on_linear_regression():
    g = torch.Generator().manual_seed(0)
    n, p, beta = 60, 12, 25.0
    X = torch.randn(n, p, generator=g, dtype=D)
    w = torch.zeros(p, dtype=D)
    w[:4] = torch.tensor([1.0, -0.8, 0.6, 0.5], dtype=D)
    y = X @ w + torch.randn(n, generator=g, dtype=D) / math.sqrt(beta)
    c = GammaConstants(1.0, 0.05, 1.0, 0.005)  # ratio 10 ("scaled"-like)
    pi = torch.full((p,), 0.5, dtype=D)
    mu = torch.randn(p, generator=g, dtype=D) * 0.1
    s2 = torch.full((p,), 0.01, dtype=D)
    pi_t = torch.full((p,), 0.5, dtype=D)
    a_t, b_t = rho_update(mu, s2, pi_t, c)
    col_sq = (X * X).sum(0)
    prev = _elbo(X, y, beta, mu, s2, a_t, b_t, pi_t, pi, c)
    for _ in range(30):
        e_rho = a_t / b_t
        for j in range(p):  # exact coordinate updates of q(w_j)
            s2 = s2.clone()
            mu = mu.clone()
            s2[j] = 1.0 / (beta * col_sq[j] + e_rho[j])
            resid = y - X @ mu + X[:, j] * mu[j]
            mu[j] = s2[j] * beta * (X[:, j] @ resid)
            cur = _elbo(X, y, beta, mu, s2, a_t, b_t, pi_t, pi, c)
            assert cur >= prev - 1e-10
            prev = cur
        a_t, b_t = rho_update(mu, s2, pi_t, c)
        cur = _elbo(X, y, beta, mu, s2, a_t, b_t, pi_t, pi, c)
        assert cur >= prev - 1e-10
        prev = cur
        pi_t = s_update(log_evidence_ratio(*rho_moments(a_t, b_t), c), pi)
        cur = _elbo(X, y, beta, mu, s2, a_t, b_t, pi_t, pi, c)
        assert cur >= prev - 1e-10
        prev = cur
    keep = pi_t > 0.5
    assert keep[:4].all()  # the true support stays active


# ------------------------------------------------------------------------------------------------
# the TurboVBI object
# ------------------------------------------------------------------------------------------------
def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 24), nn.ReLU(), nn.Linear(24, 12), nn.ReLU(), nn.Linear(12, 3))


def _cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3), nn.ReLU(),
                         nn.Flatten(), nn.Linear(8 * 2 * 2, 3))


def _data(n: int = 96, seed: int = 0, shape=(16,)):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g)
    y = (x.flatten(1)[:, :3].argmax(1)).long()
    return x, y


def _train_turbo(model, x, y, *, rounds=3, epochs_per_round=1, warm=0, **cfg):
    tv = TurboVBI(model, n_data=len(y), **cfg)
    cb = tv.callback(rounds=rounds, epochs_per_round=epochs_per_round, warm_epochs=warm)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    fit(model, make_loader((x, y), 32, seed=0), opt, loss_fn=F.cross_entropy, penalty_fn=lambda _: tv.penalty(),
        epochs=cb.total_epochs, callbacks=[cb])
    return tv, cb


def test_targets_swap_layers_and_keep_the_function():
    model = _mlp()
    x, _ = _data()
    with torch.no_grad():
        ref = model(x)
    tv = TurboVBI(model, n_data=10)
    assert tv.names == ["1", "3", "5"] and all(isinstance(m, BayesLinear) for m in tv.layers().values())
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), ref, atol=1e-6)
    cnn = _cnn()
    tv2 = TurboVBI(cnn, targets=["0", "3"], n_data=10)
    assert isinstance(cnn[0], BayesConv2d) and isinstance(cnn[3], BayesConv2d) and isinstance(cnn[6], nn.Linear)
    assert tv2.param_names() == ["0.weight", "3.weight"]
    assert TurboVBI(_mlp(), targets="[13]", n_data=1).names == ["1", "3"]  # fnmatch patterns


def test_bad_input_is_a_one_line_error():
    with pytest.raises(UserError, match="ReLU"):
        TurboVBI(_mlp(), targets=["2"], n_data=10)
    with pytest.raises(UserError, match="no module|select no"):
        TurboVBI(_mlp(), targets=["nope*"], n_data=10)
    bn = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 2))
    with pytest.raises(UserError, match="BatchNorm '1' directly follows Bayesian layer '0'"):
        TurboVBI(bn, n_data=10)
    TurboVBI(nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 2)), targets=["3"], n_data=10)
    for bad in (dict(kappa=0.0), dict(gamma_preset="custom", b=-1.0), dict(ratio=-3.0)):
        with pytest.raises(ConfigError, match="positive|> 1"):
            TurboVBIConfig(**bad)
    for bad in (dict(p01_h=1.2), dict(p11_v=0.0), dict(iid_prior=1.0, coupling="iid"), dict(start_prob_linear=-0.1)):
        with pytest.raises(ConfigError, match=r"\(0, 1\)"):
            TurboVBIConfig(**bad)
    with pytest.raises(ConfigError, match="unknown Turbo-VBI option"):
        TurboVBI(_mlp(), n_data=10, kapa=1.0)
    for e in (UserError, ConfigError):
        try:
            TurboVBI(_mlp(), targets=["2"], n_data=10) if e is UserError else TurboVBIConfig(p01_h=2.0)
        except e as err:
            assert "\n" not in str(err)


def test_anticlustering_table_is_allowed_with_a_warning():
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        TurboVBIConfig(p01_h=0.6, p11_h=0.4)
        assert not w  # validated silently in the config ...
        TurboVBI(_mlp(), n_data=10, p01_h=0.6, p11_h=0.4)
    msgs = [str(x.message) for x in w if "anti-clustering" in str(x.message)]
    assert len(msgs) == 1 and "\n" not in msgs[0]  # ... and warned once, by the procedure


def test_iid_module_b_returns_the_iid_prior():
    tv = TurboVBI(_mlp(), n_data=50, coupling="iid", iid_prior=0.27)
    tv.start()
    for layer in tv.layers().values():
        layer.ell.normal_()  # whatever module A says
    tv.module_b()
    for layer in tv.layers().values():
        assert torch.allclose(layer.pi_prior, torch.full_like(layer.pi_prior, 0.27))


def test_uninformative_prior_reduces_to_independent_per_weight_shrinkage():
    """π = ½ everywhere (iid ½, or an MRF with p11 = p01 = ½ and no start factor): each weight's π̃ is
    the closed form of its own μ, σ alone."""
    results = []
    for cfg in (dict(coupling="iid", iid_prior=0.5), dict(p01_h=0.5, p11_h=0.5, p01_v=0.5, p11_v=0.5, start_prob_linear=None)):
        model = _mlp()
        tv = TurboVBI(model, n_data=50, **cfg)
        tv.start()
        for _ in range(3):
            tv.turbo_round()
        for layer in tv.layers().values():
            assert torch.allclose(layer.pi_prior, torch.full_like(layer.pi_prior, 0.5), atol=1e-12)
            # closed form of one weight: its own ρ/s steps from π̃ = ½ (start + 3 rounds), nothing else involved
            pt = torch.full_like(layer.pi_tilde, 0.5)
            c = layer.constants()
            for _ in range(3):
                a_t, b_t = rho_update(layer.mu.detach(), layer.sigma2().detach(), pt, c)
                pt = s_update(log_evidence_ratio(*rho_moments(a_t, b_t), c), torch.full_like(pt, 0.5))
            assert torch.allclose(layer.pi_tilde, pt, atol=1e-12)
        results.append(torch.cat([ly.pi_tilde.flatten() for ly in tv.layers().values()]))
    assert torch.allclose(results[0], results[1], atol=1e-12)


def test_updates_are_finite_on_saturated_posteriors():
    tv = TurboVBI(_mlp(), n_data=50)
    tv.start()
    for k, layer in enumerate(tv.layers().values()):
        layer.pi_tilde.copy_((torch.rand_like(layer.pi_tilde) > 0.5).double())  # exactly 0 or 1
        layer.pi_prior.fill_(float(k % 2))  # saturated messages too
        with torch.no_grad():
            layer.mu[0].zero_()
    tv.rho_step()
    tv.s_step()
    stats = tv.turbo_round()
    assert all(math.isfinite(v) for v in stats.values())
    assert math.isfinite(tv.elbo_prior()) and torch.isfinite(tv.penalty())
    for layer in tv.layers().values():
        for buf in (layer.a_tilde, layer.b_tilde, layer.pi_tilde, layer.pi_prior, layer.ell, layer.post_logit):
            assert torch.isfinite(buf).all()


def test_schedule_rounds_warmup_and_state():
    x, y = _data()
    model = _mlp()
    tv, cb = _train_turbo(model, x, y, rounds=3, epochs_per_round=2, warm=2)
    assert cb.total_epochs == 8 and len(cb.history) == 4  # round before each block + one on the final μ
    assert [r["round"] for r in cb.history] == [1, 2, 3, 4]
    for r in cb.history:
        assert {"d_a", "d_b", "d_pi", "density", "mean_pi", "elbo_prior_per_example"} <= set(r)
    sd = cb.state_dict()
    cb2 = TurboVBICallbackLike = tv.callback(rounds=3, epochs_per_round=2, warm_epochs=2)  # noqa: N806
    cb2.load_state_dict(sd)
    assert cb2.history == cb.history and cb2.started and TurboVBICallbackLike.tv.active
    tv_w = TurboVBI(_mlp(), n_data=96)
    cbw = tv_w.callback(rounds=1, epochs_per_round=1, warm_epochs=3)
    from sparseforge.engine import FitState

    cbw.on_fit_start(FitState(model=tv_w.model, optimizer=None))  # type: ignore[arg-type]
    assert float(tv_w.penalty()) == 0.0  # no KL during the warm-up


def test_schedule_stops_when_converged():
    x, y = _data()
    tv, cb = _train_turbo(_mlp(), x, y, rounds=40, epochs_per_round=1, tol=10.0, patience=2)
    assert cb.converged_at == 2 and len(cb.history) == 2


def test_masks_remove_exactly_the_level_and_bake_matches():
    x, y = _data()
    model = _mlp()
    tv, _ = _train_turbo(model, x, y)
    total = sum(ly.mu.numel() for ly in tv.layers().values())
    for level in (0.0, 0.3, 0.77):
        m = tv.masks(level)
        kept = sum(int(v.sum()) for v in m.values())
        assert kept == total - round(level * total) or abs(kept - (1 - level) * total) <= 0.5
        mf = tv.masks(level, structure="filter", scope="layerwise")
        for name, layer in tv.layers().items():
            rows = mf[f"{name}.weight"].all(1)
            assert int((~rows).sum()) == round(level * layer.mu.shape[0])
            assert torch.equal(mf[f"{name}.bias"], rows)
    imp = tv.importance()
    assert set(imp) == set(tv.param_names()) and all(v.shape == tv.layers()[k[:-7]].mu.shape for k, v in imp.items())
    nat = tv.natural_masks()
    assert math.isclose(tv.natural_sparsity(), 1 - sum(int(v.sum()) for v in nat.values()) / total)
    tv.prune()
    plain = tv.bake()
    assert not any(isinstance(mm, (BayesLinear, BayesConv2d)) for mm in plain.modules())
    with torch.no_grad():
        assert torch.allclose(plain.eval()(x), model.eval()(x), atol=1e-6)  # evaluation = μ ⊙ mask


def test_pruned_weights_stay_zero_through_finetuning():
    x, y = _data()
    model = _mlp()
    tv, _ = _train_turbo(model, x, y)
    masks = tv.prune(tv.masks(0.6))
    loader = make_loader((x, y), 32, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)  # the Bayesian model itself, KL included
    fit(model, loader, opt, loss_fn=F.cross_entropy, penalty_fn=lambda _: tv.penalty(), epochs=2)
    for k, layer in zip(tv.param_names(), tv.layers().values()):
        assert (layer.weight[~masks[k]] == 0).all()
    plain = tv.bake()
    opt = torch.optim.Adam(plain.parameters(), lr=1e-2)
    M.attach(plain, masks, opt)  # the baked model with the library's masks
    fit(plain, loader, opt, loss_fn=F.cross_entropy, epochs=2)
    params = dict(plain.named_parameters())
    for k, m in masks.items():
        assert (params[k][~m] == 0).all()


def test_compaction_keeps_outputs_and_measures():
    x, y = _data()
    model = _mlp()
    tv, _ = _train_turbo(model, x, y)
    tv.prune(tv.masks(0.5, structure="filter", scope="layerwise"))
    plain = tv.bake()
    cnn = _cnn()
    tvc = TurboVBI(cnn, n_data=10)
    tvc.start()
    tvc.prune(tvc.masks(0.5, structure="filter", scope="layerwise"))
    xc = torch.randn(64, 1, 8, 8)
    for m, inp in ((plain, x), (tvc.bake(), xc)):
        out = compact_and_measure({"dense": _mlp() if inp is x else _cnn(), "sparse": m}, inp, repeats=4, blocks=2)
        assert out["sparse"]["compact_max_abs_diff"] < 1e-5
        assert out["sparse"]["params_compact"] < out["dense"]["params_compact"]
        assert out["sparse"]["flops_compact"] < out["dense"]["flops_compact"]
        assert len(out["sparse"]["latency_blocks_ms"]) == 2 and out["sparse"]["latency_spread_ms"] >= 0
        if inp is x:  # reported FLOPs = a direct count on the compacted Linear chain (2 · in · out · batch)
            lin = [mm for mm in out["sparse"]["model"].modules() if isinstance(mm, nn.Linear)]
            assert out["sparse"]["flops_compact"] == sum(2 * mm.in_features * mm.out_features * len(x) for mm in lin)
    met = tv.metrics()
    assert met["neuron_sparsity"] >= 0.5 - 1e-9 and met["compression_rate"] > 1.0


def test_pipeline_is_deterministic():
    x, y = _data()
    out = []
    for _ in range(2):
        torch.manual_seed(3)
        tv, cb = _train_turbo(_mlp(), x, y)
        out.append((torch.cat([ly.pi_tilde.flatten() for ly in tv.layers().values()]), cb.history))
    assert torch.equal(out[0][0], out[1][0]) and out[0][1] == out[1][1]


def test_calibrate_iid_prior_matches_a_monotone_rate():
    calls = []

    def fake(prior: float) -> dict:
        calls.append(prior)
        return {"compression_rate": 2.0 / prior, "prior": prior}  # falls as the prior rises

    best, trials = calibrate_iid_prior(fake, 10.0, initial=0.5, steps=6, tolerance=0.02)
    assert abs(best["compression_rate"] / 10.0 - 1) <= 0.02 and len(trials) == len(calls) <= 6
    with pytest.raises(ConfigError):
        calibrate_iid_prior(fake, 10.0, initial=1.5)


# ------------------------------------------------------------------------------------------------
# the recipe
# ------------------------------------------------------------------------------------------------
def test_recipe_rejects_bad_options(tmp_path):
    from sparseforge.recipes import run_recipe

    for key, val in (("kappa", "0"), ("p01_h", "1.5"), ("start_prob_linear", "2"), ("models", "")):
        with pytest.raises(ConfigError):
            run_recipe("turbo-vbi", preset="smoke", overrides={key: val}, out=tmp_path / key)


def test_recipe_smoke_summary_keys(tmp_path):
    from sparseforge.recipes import run_recipe

    path, s = run_recipe("turbo-vbi", preset="smoke", out=tmp_path / "tv", overrides={"rounds": "1"})
    for v in ("dense", "turbo", "turbo_iid", "magnitude"):
        for k in ("acc", "compression_rate", "neuron_sparsity", "run_count", "tile_occupancy", "flops", "latency_ms"):
            assert f"{k}/{v}" in s, f"{k}/{v}"
    assert math.isclose(s["compression_rate/magnitude"], s["compression_rate/turbo"], rel_tol=1e-3)
    assert s["compression_rate/dense"] == 1.0
    assert (path / "figures" / "support_digits_mlp.png").exists()
    assert (path / "figures" / "convergence_digits_mlp.png").exists()


@pytest.mark.slow
def test_recipe_reads_mnist_idx_for_lenet5(tmp_path):
    """The paper path (LeNet-5 on MNIST-format IDX files), on tiny files written here."""
    import struct

    import numpy as np

    from sparseforge.recipes import run_recipe

    rng = np.random.default_rng(0)
    for pre, n in (("train", 64), ("t10k", 32)):
        imgs = rng.integers(0, 256, size=(n, 28, 28)).astype(np.uint8)
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        (tmp_path / f"{pre}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x803, n, 28, 28) + imgs.tobytes())
        (tmp_path / f"{pre}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, n) + labels.tobytes())
    _, s = run_recipe("turbo-vbi", preset="smoke", out=tmp_path / "run",
                      overrides={"models": "lenet5", "datasets": "mnist", "mnist_dir": str(tmp_path), "rounds": "1",
                                 "latency_batch": "32"})
    assert s["compression_rate/turbo"] >= 1.0 and 0.0 <= s["acc/turbo"] <= 1.0
