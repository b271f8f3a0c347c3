"""Tests of sparseforge.spectral: SST (arXiv:2405.15481), LoRA, ReLoRA, GaLore, convert/merge."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sparseforge import spectral
from sparseforge.errors import UserError
from sparseforge.registry import METHODS
from sparseforge.spectral.sst import SpectralLinear, SSTController, _SpectralLinearFn, sample_indices

torch.set_num_threads(1)


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 10), nn.ReLU(), nn.Linear(10, 4))


def x_batch(n: int = 5, d: int = 12, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("method", ["sst", "lora", "relora", "relora_star", "galore"])
def test_convert_zero_distortion_and_merge(method: str) -> None:
    base = mlp()
    x = x_batch()
    ref = base(x)
    model = spectral.convert(mlp(), method, rank=3)
    assert not any(type(m) is nn.Linear for m in model.modules())
    torch.testing.assert_close(model(x), ref, atol=1e-5, rtol=0)
    merged = spectral.merge(model)
    assert all(type(m) is nn.Linear for m in merged.modules() if isinstance(m, nn.Linear))
    torch.testing.assert_close(merged(x), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", ["materialize", "factored", "auto"])
def test_spectral_linear_forward_modes(mode: str) -> None:
    lin = nn.Linear(9, 7)
    sl = SpectralLinear.from_linear(lin, 3, forward_mode=mode)
    x = torch.randn(4, 2, 9)
    torch.testing.assert_close(sl(x), lin(x), atol=1e-5, rtol=0)
    torch.testing.assert_close(sl.merge()(x), lin(x), atol=1e-5, rtol=0)


def test_registry_entries_convert() -> None:
    names = set(METHODS.names(family="spectral"))
    assert {"sst", "lora", "relora", "galore", "full"} <= names
    for n in names:
        m = spectral.convert(mlp(), n, 2)
        x = x_batch()
        torch.testing.assert_close(m(x), mlp()(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("factored", [False, True])
@pytest.mark.parametrize("out_in", [(6, 4), (4, 6)])
def test_gradcheck_exact_gradients(factored: bool, out_in: tuple[int, int]) -> None:
    out_f, in_f = out_in
    k, r = min(out_in), 2
    g = torch.Generator().manual_seed(0)
    U_rest = torch.randn(out_f, k - r, dtype=torch.float64, generator=g)
    Vh_rest = torch.randn(k - r, in_f, dtype=torch.float64, generator=g)
    idx = torch.tensor([0, 2])
    rest = torch.tensor([i for i in range(k) if i not in (0, 2)])
    x = torch.randn(3, in_f, dtype=torch.float64, generator=g, requires_grad=True)
    s = torch.rand(k, dtype=torch.float64, generator=g).add(0.5).requires_grad_()
    Ua = torch.randn(out_f, r, dtype=torch.float64, generator=g, requires_grad=True)
    Va = torch.randn(r, in_f, dtype=torch.float64, generator=g, requires_grad=True)
    fn = lambda x, s, Ua, Va: _SpectralLinearFn.apply(x, s, Ua, Va, U_rest, Vh_rest, idx, rest, factored, False)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, s, Ua, Va))


@pytest.mark.parametrize("factored", [False, True])
def test_enhanced_gradient(factored: bool) -> None:
    torch.manual_seed(0)
    lin = nn.Linear(8, 6)
    sl = SpectralLinear.from_linear(lin, 3, forward_mode="factored" if factored else "materialize").double()
    sl.activate_(torch.tensor([0, 2, 5]))
    x = torch.randn(5, 8, dtype=torch.float64)
    tgt = torch.randn(5, 6, dtype=torch.float64)
    # G by autograd through a plain W
    W = sl.weight.clone().requires_grad_()
    ((x @ W.T + sl.bias - tgt) ** 2).sum().backward()
    G = W.grad
    ((sl(x) - tgt) ** 2).sum().backward()
    U, Vh = sl.factors()
    torch.testing.assert_close(sl.sigma.grad, (U.T @ G * Vh).sum(1))
    torch.testing.assert_close(sl.U_act.grad, G @ sl.Vh_act.detach().T)
    torch.testing.assert_close(sl.Vh_act.grad, sl.U_act.detach().T @ G)
    # plain autograd factor gradient = enhanced * sigma_i
    sl2 = SpectralLinear.from_linear(lin, 3, enhanced_grad=False).double()
    sl2.activate_(torch.tensor([0, 2, 5]))
    ((sl2(x) - tgt) ** 2).sum().backward()
    sS = sl.sigma.detach()[sl.active_idx]
    torch.testing.assert_close(sl.U_act.grad, sl2.U_act.grad / sS)
    torch.testing.assert_close(sl.Vh_act.grad, sl2.Vh_act.grad / sS[:, None])


def _sst_setup(T3: int = 3, T2: int = 2, warmup_iter: int = 0, **kw):
    model = spectral.convert(mlp(), "sst", rank=3)
    opt = spectral.build_optimizer(model, lr=1e-2, weight_decay=0.0)
    ctl = spectral.attach("sst", model, opt, T3=T3, T2=T2, warmup_iter=warmup_iter, seed=0, **kw)
    return model, opt, ctl


def _train_step(model, opt, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(8, 12, generator=g), torch.randint(0, 4, (8,), generator=g)
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


def test_step_changes_only_active_vectors_and_sigma() -> None:
    model, opt, _ = _sst_setup(T3=100)
    layers = [m for m in model.modules() if isinstance(m, SpectralLinear)]
    before = [(m.factors(), m.sigma.detach().clone(), m.U_rest.clone(), m.Vh_rest.clone()) for m in layers]
    _train_step(model, opt)
    for m, ((U0, Vh0), s0, Ua0, Va0) in zip(layers, before):
        U1, Vh1 = m.factors()
        inactive = torch.ones(m.k, dtype=torch.bool)
        inactive[m.active_idx] = False
        assert torch.equal(U1[:, inactive], U0[:, inactive])  # bitwise
        assert torch.equal(Vh1[inactive], Vh0[inactive])
        assert torch.equal(m.U_rest, Ua0) and torch.equal(m.Vh_rest, Va0)  # stores untouched in an iteration
        assert not torch.allclose(U1[:, m.active_idx], U0[:, m.active_idx])
        assert not torch.allclose(Vh1[m.active_idx], Vh0[m.active_idx])
        assert (m.sigma.detach() != s0).sum() >= m.k - 1  # every singular value moves
        assert (m.sigma >= 0).all()
        torch.testing.assert_close(m.U_act.norm(dim=0), torch.ones(m.rank), atol=1e-6, rtol=0)
        torch.testing.assert_close(m.Vh_act.norm(dim=1), torch.ones(m.rank), atol=1e-6, rtol=0)


def test_optimizer_state_only_for_active_slices_and_counts() -> None:
    model, opt, _ = _sst_setup(T3=100)
    _train_step(model, opt)
    state_params = {id(p) for p in opt.state}
    for m in model.modules():
        if isinstance(m, SpectralLinear):
            assert id(m.U_act) in state_params and id(m.Vh_act) in state_params and id(m.sigma) in state_params
            assert not any(id(b) in state_params for b in m.buffers())
            n_exp = sum(v.numel() for p in (m.U_act, m.Vh_act, m.sigma) for k, v in opt.state[p].items() if k != "step")
            assert n_exp == 2 * (m.rank * (m.in_features + m.out_features) + m.k)
    rep = spectral.memory_report(model, opt)
    for name, row in rep["layers"].items():
        lay = model.get_submodule(name)
        assert row["trainable_params"] == spectral.analytic_trainable(lay.out_features, lay.in_features, 3, "sst")


def test_resample_resets_state_of_new_vectors() -> None:
    model, opt, ctl = _sst_setup(T3=2, T2=1000)
    layers = [m for m in model.modules() if isinstance(m, SpectralLinear)]
    idx0 = [m.active_idx.clone() for m in layers]
    _train_step(model, opt, 0)
    assert all(opt.state[m.U_act]["exp_avg"].abs().sum() > 0 for m in layers)
    _train_step(model, opt, 1)  # step 2: resample happens in the post-step hook
    assert ctl.iteration == 2
    assert any(not torch.equal(m.active_idx, i) for m, i in zip(layers, idx0))
    for m in layers:
        for p in (m.U_act, m.Vh_act):
            st = opt.state[p]
            assert float(st["step"]) == 0 and st["exp_avg"].abs().sum() == 0 and st["exp_avg_sq"].abs().sum() == 0
        assert opt.state[m.sigma]["exp_avg"].abs().sum() > 0  # sigma's state kept across iterations
        # the committed store holds what was trained; the new active slices are its columns
        torch.testing.assert_close(m.U_act.detach(), m.U_all[:, m.active_idx])


def test_resvd_keeps_w_and_orthonormalises() -> None:
    model, opt, ctl = _sst_setup(T3=100)
    for s in range(3):
        _train_step(model, opt, s)
    layers = [m for m in model.modules() if isinstance(m, SpectralLinear)]
    W0 = [m.weight.clone() for m in layers]
    x = x_batch()
    y0 = model(x).detach()
    U_before = layers[0].factors()[0]
    assert (U_before.T @ U_before - torch.eye(layers[0].k)).abs().max() > 1e-4  # drifted from orthonormal
    ctl.end_of_round()
    for m, w in zip(layers, W0):
        torch.testing.assert_close(m.weight, w, atol=1e-5, rtol=0)
        U, Vh = m.factors()
        assert (U.T @ U - torch.eye(m.k)).abs().max() < 1e-5
        assert (Vh @ Vh.T - torch.eye(m.k)).abs().max() < 1e-5
        assert (m.sigma[:-1] >= m.sigma[1:]).all()
        assert opt.state[m.sigma]["exp_avg"].abs().sum() == 0
    torch.testing.assert_close(model(x), y0, atol=1e-5, rtol=0)


def test_schedule_counts_and_warmup() -> None:
    model, opt, ctl = _sst_setup(T3=2, T2=2, warmup_iter=2)
    seen = []
    h = opt.register_step_pre_hook(lambda o, a, k: seen.append(o.param_groups[0]["lr"]))
    for s in range(8):
        _train_step(model, opt, s)
    h.remove()
    assert ctl.iteration == 5 and ctl.n_resvd == 2
    # the pre-hook order: ours registered first, so the seen lr is the warmed-up one
    assert seen[0] == pytest.approx(0.5e-2) and seen[1] == pytest.approx(1e-2) and seen[2] == pytest.approx(0.5e-2)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-2)  # restored after each step


def test_sampling_properties() -> None:
    sigma = torch.tensor([4.0, 3.0, 2.0, 1.0, 0.5, 0.0])
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a, b = sample_indices(sigma, 3, generator=g1), sample_indices(sigma, 3, generator=g2)
    assert torch.equal(a, b) and a.unique().numel() == 3
    # fewer than r positive entries: still r distinct indices, positives first
    s2 = torch.tensor([1.0, 0.0, 0.0, 2.0, 0.0])
    idx = sample_indices(s2, 4, generator=g1)
    assert idx.unique().numel() == 4 and {0, 3} <= set(idx.tolist())
    # frequencies follow p (chi-square with 4 dof on the positive entries)
    from scipy.stats import chisquare

    g = torch.Generator().manual_seed(0)
    n = 20_000
    for mode in ("sigma", "sigma_uniform_mix"):
        p = spectral.sst.sampling_probs(sigma, mode)
        counts = torch.bincount(torch.cat([sample_indices(sigma, 1, sampling=mode, generator=g) for _ in range(n)]),
                                minlength=6).double()
        keep = p > 0
        assert chisquare(counts[keep].numpy(), (p[keep] * n).numpy()).pvalue > 0.001
    assert torch.equal(sample_indices(sigma, 2, sampling="top_r"), torch.tensor([0, 1]))
    assert torch.equal(sample_indices(sigma, 2, sampling="sequential", iteration=4), torch.tensor([2, 3]))


def test_top_r_plain_no_norm_equals_factored_gd() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(6, 5)
    sl = SpectralLinear.from_linear(lin, 2, enhanced_grad=False).double()
    opt = torch.optim.SGD([sl.sigma, sl.U_act, sl.Vh_act], lr=0.1)
    SSTController(sl, opt, T3=10**6, resvd=False, warmup_iter=0, sampling="top_r", normalize_vectors=False)
    U0, Vh0 = sl.U_act.detach().clone().requires_grad_(), sl.Vh_act.detach().clone().requires_grad_()
    s0 = sl.sigma.detach().clone().requires_grad_()
    x = torch.randn(4, 6, dtype=torch.float64)
    U_rest, Vh_rest = sl.U_all.clone(), sl.Vh_all.clone()
    idx = sl.active_idx
    W = (U_rest.index_copy(1, idx, U0) * s0) @ Vh_rest.index_copy(0, idx, Vh0)
    (x @ W.T).pow(2).sum().backward()
    sl(x).sub(sl.bias).pow(2).sum().backward()
    opt.step()
    torch.testing.assert_close(sl.U_act.detach(), (U0 - 0.1 * U0.grad).detach())
    torch.testing.assert_close(sl.Vh_act.detach(), (Vh0 - 0.1 * Vh0.grad).detach())
    torch.testing.assert_close(sl.sigma.detach(), (s0 - 0.1 * s0.grad).clamp_min(0).detach())


def test_prune_singular() -> None:
    sl = SpectralLinear.from_linear(nn.Linear(8, 6), 2)
    w = sl.weight.clone()
    sl.prune_singular_(0.0)
    torch.testing.assert_close(sl.weight, w)
    sl.prune_singular_(0.5)
    assert int((sl.sigma > 0).sum()) == math.ceil(0.5 * 6)


def test_lora_starts_equal_and_relora_reset_keeps_function() -> None:
    base = mlp()
    x = x_batch()
    model = spectral.convert(mlp(), "relora", rank=2)
    torch.testing.assert_close(model(x), base(x), atol=0, rtol=0)
    opt = spectral.build_optimizer(model, lr=1e-2)
    ctl = spectral.attach("relora_star", model, opt, reset_every=3, rewarm=2, seed=0)
    for s in range(2):
        _train_step(model, opt, s)
    y_before = model(x).detach()
    W0 = [m.weight.clone() for m in model.modules() if isinstance(m, spectral.LoRALinear)]
    ctl.reset()
    torch.testing.assert_close(model(x), y_before, atol=1e-5, rtol=0)
    for m, w in zip([m for m in model.modules() if isinstance(m, spectral.LoRALinear)], W0):
        assert not torch.equal(m.weight, w)  # merged into W0
        assert m.lora_B.abs().sum() == 0
        for p in (m.lora_A, m.lora_B):
            assert all((v == 0).all() for v in opt.state[p].values())
        assert not m.weight.requires_grad
    # the frozen W0 gets no optimizer state at all
    assert not any(p is m.weight for m in model.modules() if isinstance(m, spectral.LoRALinear) for p in opt.state)


def test_relora_prune_fraction() -> None:
    model = spectral.convert(mlp(), "relora", rank=2)
    opt = spectral.build_optimizer(model, lr=1e-2)
    ctl = spectral.attach("relora", model, opt, reset_every=1000, prune=0.9, rewarm=5)
    _train_step(model, opt)
    _train_step(model, opt, 1)
    ctl.reset()
    lay = next(m for m in model.modules() if isinstance(m, spectral.LoRALinear))
    ea = opt.state[lay.lora_A]["exp_avg"]
    assert 0 < int((ea != 0).sum()) <= math.ceil(0.1 * ea.numel())
    assert ctl.lr_factor() == pytest.approx(1 / 5)


def test_relora_joint_prune_keeps_moments_paired_and_step_bounded() -> None:
    """Joint pruning never leaves exp_avg != 0 where exp_avg_sq == 0 (update exp_avg / eps)."""
    torch.manual_seed(0)
    model = spectral.convert(mlp(), "relora", rank=2)
    opt = spectral.build_optimizer(model, lr=1e-2)
    ctl = spectral.attach("relora", model, opt, reset_every=1000, prune=0.5, rewarm=1)
    for s in range(5):
        _train_step(model, opt, s)
    ctl.reset()
    lays = [m for m in model.modules() if isinstance(m, spectral.LoRALinear)]
    for lay in lays:
        for p in (lay.lora_A, lay.lora_B):
            st = opt.state[p]
            assert torch.equal(st["exp_avg"] != 0, (st["exp_avg"] != 0) & (st["exp_avg_sq"] != 0))
    A0 = [lay.lora_A.detach().clone() for lay in lays]
    _train_step(model, opt, 5)  # B = 0 after the merge: A's gradient is exactly 0
    for lay, a in zip(lays, A0):
        assert (lay.lora_A - a).abs().max() < 0.1  # per-key masks give |dA| ~ lr * exp_avg / eps here


@pytest.mark.parametrize("shape", [(10, 6), (6, 10)])
def test_galore_update_in_projection_span(shape: tuple[int, int]) -> None:
    torch.manual_seed(0)
    m, n = shape
    lin = spectral.GaLoreLinear(n, m, rank=2, bias=False).double()
    opt = spectral.build_optimizer(lin, lr=0.1, weight_decay=0.0, galore_update_proj_gap=3)
    x = torch.randn(16, n, dtype=torch.float64)
    for _step in range(5):
        w0 = lin.weight.detach().clone()
        opt.zero_grad()
        lin(x).pow(3).sum().backward()
        opt.step()
        st = opt.state[lin.weight]
        P, side = st["projector"], st["side"]
        assert side == ("right" if m >= n else "left")
        torch.testing.assert_close(P.T @ P, torch.eye(2, dtype=torch.float64), atol=1e-10, rtol=0)
        delta = lin.weight.detach() - w0
        assert delta.abs().max() > 0
        proj = delta @ P @ P.T if side == "right" else P @ P.T @ delta
        torch.testing.assert_close(proj, delta, atol=1e-10, rtol=0)
        assert torch.linalg.matrix_rank(delta) <= 2
        assert st["exp_avg"].shape == ((m, 2) if side == "right" else (2, n))


def test_bad_input_one_line_errors() -> None:
    with pytest.raises(UserError, match="rank"):
        spectral.convert(mlp(), "sst", rank=0)
    with pytest.raises(UserError, match="rank"):
        spectral.convert(mlp(), "lora", rank=4, targets=["4"])  # 10 -> 4 layer: min = 4
    with pytest.raises(UserError, match="matches no module"):
        spectral.convert(mlp(), "sst", rank=2, targets=["nope"])
    with pytest.raises(UserError, match="unknown spectral method"):
        spectral.convert(mlp(), "svd", rank=2)
    model = spectral.convert(mlp(), "sst", rank=2)
    opt = spectral.build_optimizer(model)
    with pytest.raises(UserError, match="resample period"):
        spectral.attach("sst", model, opt, T3=0)
    for e in (UserError,):
        try:
            spectral.convert(mlp(), "sst", rank=99)
        except e as err:
            assert "\n" not in str(err)


def test_targets_patterns_and_exclude() -> None:
    model = spectral.convert(mlp(), "sst", rank=2, targets=["0", "2"])
    assert isinstance(model[0], SpectralLinear) and isinstance(model[2], SpectralLinear)
    assert type(model[4]) is nn.Linear
    model = spectral.convert(mlp(), "lora", rank=2, exclude=["4"])
    assert type(model[4]) is nn.Linear and isinstance(model[0], spectral.LoRALinear)


def test_sst_stores_every_vector_once_and_saves_no_factor_copies() -> None:
    """k(m + n) + k numbers per layer, and backward keeps only x and the layer's own tensors alive."""
    m_, n_, r = 12, 7, 3
    sl = SpectralLinear.from_linear(nn.Linear(n_, m_), r)
    k = min(m_, n_)
    stored = sum(p.numel() for p in sl.parameters()) + sum(b.numel() for b in sl.buffers() if b.is_floating_point())
    assert stored == k * (m_ + n_) + k + m_  # + bias
    trainable = sum(p.numel() for p in sl.parameters() if p.requires_grad)
    assert trainable == spectral.memory.analytic_trainable(m_, n_, r, "sst")
    own = {t.untyped_storage().data_ptr() for t in [*sl.parameters(), *sl.buffers()]}
    x = torch.randn(5, n_, requires_grad=True)
    own.add(x.untyped_storage().data_ptr())
    saved = []
    for mode in ("materialize", "factored"):
        sl.forward_mode = mode
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
            y = sl(x)
        y.sum().backward()
    assert saved and all(t.untyped_storage().data_ptr() in own for t in saved)


def test_sst_layer_loads_checkpoints_of_the_earlier_full_store_layout() -> None:
    """Runs saved before the U_act/U_rest split (buffers U_all / Vh_all) resume into the same W."""
    from sparseforge.spectral.sst import SpectralLinear

    torch.manual_seed(0)
    U_all, Vh_all, sigma, bias = torch.randn(6, 6), torch.randn(6, 8), torch.rand(6), torch.randn(6)
    idx = torch.tensor([1, 4])
    old = {"sigma": sigma, "U_act": U_all[:, idx].clone(), "Vh_act": Vh_all[idx].clone(), "bias": bias,
           "U_all": U_all, "Vh_all": Vh_all, "active_idx": idx}
    layer = SpectralLinear(8, 6, 2, forward_mode="materialize")
    layer.load_state_dict(old)
    assert layer.rest_idx.tolist() == [0, 2, 3, 5]
    x = torch.randn(3, 8)
    torch.testing.assert_close(layer(x), x @ (U_all @ torch.diag(sigma) @ Vh_all).T + bias, atol=1e-5, rtol=1e-5)
