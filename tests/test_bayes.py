"""Turbo-VBI building blocks: module A's closed-form updates, module B's message passing, the
layout maps, the Bayesian layers and the structure metrics (``sparseforge.bayes``)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparseforge.bayes import (
    BayesConv2d,
    BayesLinear,
    GammaConstants,
    GammaPrior,
    IIDSupport,
    PairTable,
    SupportMRF,
    bp_grid,
    chain_forward_backward,
    column_runs,
    dead_neurons,
    extrinsic_from_posterior,
    extrinsic_logit,
    from_support,
    keep_threshold,
    kl_divergence,
    log_evidence_ratio,
    prior_elbo_terms,
    rho_moments,
    rho_update,
    run_count,
    s_update,
    structure_metrics,
    support_shape,
    tile_occupancy,
    to_support,
)
from sparseforge.bayes.mrf import message
from sparseforge.bayes.prior import bernoulli_entropy, logit
from sparseforge.errors import ConfigError

D = torch.float64


# ------------------------------------------------------------------------------------------------
# brute force references
# ------------------------------------------------------------------------------------------------
def brute_marginals(nu: torch.Tensor, mrf: SupportMRF, *, drop_unary: int | None = None) -> torch.Tensor:
    """P(s_n = 1) under (B1) by enumerating all 2^n supports (optionally without node k's unary)."""
    R, C = nu.shape
    n = R * C
    states = ((torch.arange(2**n).unsqueeze(1) >> torch.arange(n)) & 1).to(D)  # (2^n, n)
    s = states.view(-1, R, C)
    lu = torch.stack([torch.log1p(-nu.flatten()), torch.log(nu.flatten())])  # (2, n)
    unary = lu[states.long(), torch.arange(n)]  # (2^n, n)
    if drop_unary is not None:
        unary[:, drop_unary] = 0.0
    logw = unary.sum(1)
    if mrf.start_prob is not None:
        first = torch.zeros(R, C, dtype=torch.bool)
        first[0, :] = True
        first[:, 0] = True
        ls = torch.where(s.bool(), math.log(mrf.start_prob), math.log1p(-mrf.start_prob))
        logw = logw + (ls * first).flatten(1).sum(1)
    lh = PairTable(mrf.p01_h, mrf.p11_h).log_table()
    lv = PairTable(mrf.p01_v, mrf.p11_v).log_table()
    sl = s.long()
    if C > 1:
        logw = logw + lh[sl[:, :, :-1], sl[:, :, 1:]].flatten(1).sum(1)
    if R > 1:
        logw = logw + lv[sl[:, :-1, :], sl[:, 1:, :]].flatten(1).sum(1)
    w = torch.softmax(logw, 0)
    return (w[:, None] * states).sum(0).view(R, C)


def brute_extrinsic(nu: torch.Tensor, mrf: SupportMRF) -> torch.Tensor:
    """The extrinsic output (B4): each node's marginal with its own unary removed."""
    out = torch.empty_like(nu)
    R, C = nu.shape
    for k in range(R * C):
        out.view(-1)[k] = brute_marginals(nu, mrf, drop_unary=k).view(-1)[k]
    return out


def random_consts(g: torch.Generator) -> GammaConstants:
    a, ab = (float(torch.rand((), generator=g)) * 2 + 0.5 for _ in range(2))
    b = float(torch.rand((), generator=g)) * 0.5 + 0.05
    return GammaConstants(a, b, ab, b / (2 + 10 * float(torch.rand((), generator=g))))


# ------------------------------------------------------------------------------------------------
# module A
# ------------------------------------------------------------------------------------------------
def _rho_s_terms(mu, s2, a_t, b_t, pi_t, pi, c):
    return prior_elbo_terms(mu, s2, a_t, b_t, pi_t, pi, c).sum()


def test_rho_and_s_steps_never_decrease_the_elbo():
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        n = 50
        c = random_consts(g)
        mu = torch.randn(n, generator=g, dtype=D) * 0.5
        s2 = torch.rand(n, generator=g, dtype=D) * 0.05 + 1e-4
        pi = torch.rand(n, generator=g, dtype=D) * 0.98 + 0.01
        pi_t = torch.rand(n, generator=g, dtype=D)
        a_t = torch.rand(n, generator=g, dtype=D) * 3 + 0.6
        b_t = torch.rand(n, generator=g, dtype=D) + 0.01
        e0 = prior_elbo_terms(mu, s2, a_t, b_t, pi_t, pi, c)
        a_t, b_t = rho_update(mu, s2, pi_t, c)
        e1 = prior_elbo_terms(mu, s2, a_t, b_t, pi_t, pi, c)
        assert (e1 - e0 >= -1e-10).all()  # exact per-weight coordinate maximiser
        pi_t = s_update(log_evidence_ratio(*rho_moments(a_t, b_t), c), pi)
        e2 = prior_elbo_terms(mu, s2, a_t, b_t, pi_t, pi, c)
        assert (e2 - e1 >= -1e-10).all()


def test_rho_step_is_the_maximiser():
    """Perturbing (ã, b̃) or π̃ away from the closed form lowers the ELBO terms."""
    g = torch.Generator().manual_seed(2)
    c = random_consts(g)
    mu = torch.randn(30, generator=g, dtype=D)
    s2 = torch.full_like(mu, 1e-3)
    pi = torch.full_like(mu, 0.3)
    pi_t = torch.rand(30, generator=g, dtype=D)
    a_t, b_t = rho_update(mu, s2, pi_t, c)
    best = prior_elbo_terms(mu, s2, a_t, b_t, pi_t, pi, c)
    for da, db in ((1.05, 1.0), (0.95, 1.0), (1.0, 1.05), (1.0, 0.95)):
        assert (prior_elbo_terms(mu, s2, a_t * da, b_t * db, pi_t, pi, c) < best).all()
    pi_star = s_update(log_evidence_ratio(*rho_moments(a_t, b_t), c), pi)
    best = prior_elbo_terms(mu, s2, a_t, b_t, pi_star, pi, c)
    for d in (-0.02, 0.02):
        other = (pi_star + d).clamp(1e-9, 1 - 1e-9)
        assert (prior_elbo_terms(mu, s2, a_t, b_t, other, pi, c) <= best + 1e-15).all()


def test_s_step_monotone_in_prior_and_magnitude():
    c = GammaConstants(1.0, 0.04, 1.0, 0.004)
    mu = torch.linspace(0, 1, 50, dtype=D)
    s2 = torch.full_like(mu, 1e-4)
    pi_t = torch.full_like(mu, 0.5)
    a_t, b_t = rho_update(mu, s2, pi_t, c)
    ell = log_evidence_ratio(*rho_moments(a_t, b_t), c)
    assert (ell.diff() > 0).all()  # larger |μ| -> smaller ⟨ρ⟩ -> more evidence for "active"
    pis = torch.linspace(0.01, 0.99, 20, dtype=D)
    post = s_update(ell[10].expand(20), pis)
    assert (post.diff() > 0).all()


def test_s_step_identity_and_extrinsic_independent_of_prior():
    g = torch.Generator().manual_seed(3)
    ell = torch.randn(100, generator=g, dtype=D) * 5
    pi = torch.rand(100, generator=g, dtype=D) * 0.9 + 0.05
    assert torch.allclose(s_update(ell, pi), torch.sigmoid(ell + (torch.log(pi) - torch.log1p(-pi))), rtol=0, atol=1e-15)
    nu1 = extrinsic_from_posterior(ell, rule="extrinsic")
    assert torch.equal(nu1, torch.sigmoid(ell))
    assert torch.equal(extrinsic_logit(ell, pi), ell)
    demo = extrinsic_from_posterior(ell, s_update(ell, pi), pi, rule="demo")
    pt = s_update(ell, pi)
    assert torch.allclose(demo, pt * pi / (pt * pi + (1 - pt) * (1 - pi)), atol=1e-12)


def test_gamma_moments_match_monte_carlo():
    torch.manual_seed(0)
    a_t = torch.tensor([0.7, 1.5, 4.0], dtype=D)
    b_t = torch.tensor([0.2, 2.0, 0.05], dtype=D)
    e_rho, e_log = rho_moments(a_t, b_t)
    samples = torch.distributions.Gamma(a_t, b_t).sample((100_000,))
    assert torch.allclose(samples.mean(0), e_rho, rtol=0.01)
    assert torch.allclose(samples.log().mean(0), e_log, rtol=0.01, atol=0.01)


def test_decision_threshold():
    c = GammaConstants(1.0, 0.03, 1.0, 0.003)
    for pi in (0.1, 0.5, 0.9):
        thr = float(keep_threshold(c, pi))
        e_rho = torch.tensor([thr * 0.999, thr * 1.001], dtype=D)
        e_log = torch.zeros(2, dtype=D)  # a = ā = 1: ⟨ln ρ⟩ cancels
        post = s_update(log_evidence_ratio(e_rho, e_log, c), torch.full((2,), pi, dtype=D))
        assert post[0] > 0.5 > post[1]


def test_updates_finite_on_saturated_posteriors():
    c = GammaConstants(1.0, 0.01, 1.0, 0.001)
    mu = torch.tensor([0.0, 0.5, 1e-8, 3.0], dtype=D)
    s2 = torch.full_like(mu, 1e-10)
    for val in (0.0, 1.0):
        pi_t = torch.full_like(mu, val)
        pi = torch.full_like(mu, val)
        a_t, b_t = rho_update(mu, s2, pi_t, c)
        ell = log_evidence_ratio(*rho_moments(a_t, b_t), c)
        post = s_update(ell, pi)
        terms = prior_elbo_terms(mu, s2, a_t, b_t, pi_t, pi, c)
        for t in (a_t, b_t, ell, post, terms, logit(pi_t), bernoulli_entropy(pi_t), extrinsic_from_posterior(ell)):
            assert torch.isfinite(t).all()
        nu = extrinsic_from_posterior(ell, pi_t, pi, rule="demo")
        assert torch.isfinite(nu).all()
        assert torch.isfinite(SupportMRF().run(post.view(2, 2))).all()


def test_kl_nonnegative_and_zero_at_prior():
    g = torch.Generator().manual_seed(4)
    mu = torch.randn(200, generator=g, dtype=D)
    ls2 = torch.randn(200, generator=g, dtype=D) * 3
    e_rho = torch.rand(200, generator=g, dtype=D) * 10 + 0.1
    assert (kl_divergence(mu, ls2, e_rho) >= 0).all()
    at = kl_divergence(torch.zeros(5, dtype=D), -torch.log(e_rho[:5]), e_rho[:5])
    assert torch.allclose(at, torch.zeros(5, dtype=D), atol=1e-12)
    assert torch.allclose(kl_divergence(mu, None, e_rho), 0.5 * e_rho * mu**2)


def test_gamma_prior_validation_and_presets():
    with pytest.raises(ConfigError, match="positive"):
        GammaPrior("custom", b=-1.0)
    with pytest.raises(ConfigError, match="positive"):
        GammaPrior(kappa=0.0)
    with pytest.raises(ConfigError):
        GammaPrior(ratio=0.5)
    c = GammaPrior().constants(0.2)
    assert c.a == c.a_bar == 1.0 and math.isclose(c.b, 0.01) and math.isclose(c.b / c.b_bar, 10.0)
    assert GammaPrior("fl_demo").constants(0.2) == GammaConstants(1.0, 1.0, 1.0, 0.01)


# ------------------------------------------------------------------------------------------------
# module B
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 9), (11, 1), (1, 2), (1, 1)])
@pytest.mark.parametrize("start", [0.3, None])
def test_chain_forward_backward_equals_brute_force(shape, start):
    g = torch.Generator().manual_seed(5)
    nu = torch.rand(shape, generator=g, dtype=D) * 0.98 + 0.01
    mrf = SupportMRF(p01_h=0.2, p11_h=0.7, p01_v=0.35, p11_v=0.6, start_prob=start)
    assert torch.allclose(mrf.marginals(nu), brute_marginals(nu, mrf), atol=1e-10)
    pi = mrf.run(nu)
    ref = brute_extrinsic(nu, mrf).clamp(1e-6, 1 - 1e-6)
    assert torch.allclose(pi, ref, atol=1e-10)


def test_loopy_bp_on_a_chain_is_exact_without_damping():
    g = torch.Generator().manual_seed(6)
    nu = torch.rand(1, 8, generator=g, dtype=D)
    mrf = SupportMRF(p01_h=0.2, p11_h=0.7, start_prob=0.4, exact_chain=False, bp_iters=8, damping=0.0)
    assert torch.allclose(mrf.marginals(nu), brute_marginals(nu, mrf), atol=1e-10)
    assert torch.allclose(mrf.run(nu), brute_extrinsic(nu, mrf).clamp(1e-6, 1 - 1e-6), atol=1e-10)


def test_message_matches_logaddexp_form():
    lp = PairTable(0.25, 0.6).log_table()
    x = torch.linspace(-40, 40, 101, dtype=D)
    fwd = torch.logaddexp(lp[0, 1], lp[1, 1] + x) - torch.logaddexp(lp[0, 0], lp[1, 0] + x)
    bwd = torch.logaddexp(lp[1, 0], lp[1, 1] + x) - torch.logaddexp(lp[0, 0], lp[0, 1] + x)
    assert torch.allclose(message(x, lp, forward=True), fwd, atol=1e-12)
    assert torch.allclose(message(x, lp, forward=False), bwd, atol=1e-12)


@pytest.mark.parametrize("shape", [(2, 2), (3, 3), (3, 4)])
def test_damped_grid_bp_reaches_a_fixed_point_near_brute_force(shape):
    """Loopy BP is approximate on grids; with the default-strength tables it stays within 0.03."""
    g = torch.Generator().manual_seed(7)
    nu = torch.rand(shape, generator=g, dtype=D) * 0.9 + 0.05
    mrf = SupportMRF(p01_h=0.3, p11_h=0.48, p01_v=0.3, p11_v=0.48, start_prob=0.3, bp_iters=200)
    lh = PairTable(0.3, 0.48).log_table()
    from sparseforge.bayes.mrf import _start_field

    ext, bel, change = bp_grid(torch.log(nu / (1 - nu)), log_psi_h=lh, log_psi_v=lh,
                               local=_start_field(shape, 0.3), iters=200, damping=0.5)
    assert change < 1e-10  # a fixed point
    assert (torch.sigmoid(bel) - brute_marginals(nu, mrf)).abs().max() < 0.03
    assert (mrf.run(nu) - brute_extrinsic(nu, mrf)).abs().max() < 0.03


def test_uncoupled_grid_extrinsic_is_half_and_belief_is_nu():
    g = torch.Generator().manual_seed(8)
    nu = torch.rand(5, 6, generator=g, dtype=D)
    lo = torch.log(nu / (1 - nu))
    ext, bel, _ = bp_grid(lo, log_psi_h=None, log_psi_v=None, iters=5)
    assert torch.equal(ext, torch.zeros_like(ext))
    assert torch.allclose(torch.sigmoid(bel), nu, atol=1e-12)


def test_equal_tables_make_the_extrinsic_output_independent_of_nu():
    g = torch.Generator().manual_seed(9)
    mrf = SupportMRF(p01_h=0.4, p11_h=0.4, p01_v=0.2, p11_v=0.2, start_prob=0.3)
    a = mrf.run(torch.rand(6, 7, generator=g, dtype=D))
    b = mrf.run(torch.rand(6, 7, generator=g, dtype=D))
    assert torch.allclose(a, b, atol=1e-12)


def test_attractive_coupling_neighbours_raise_pi_and_own_nu_does_not():
    mrf = SupportMRF()
    nu = torch.full((5, 5), 0.4, dtype=D)
    base = mrf.run(nu)[2, 2]
    up = nu.clone()
    up[1, 2] = up[3, 2] = up[2, 1] = up[2, 3] = 0.95
    assert mrf.run(up)[2, 2] > base
    own = nu.clone()
    own[2, 2] = 0.99
    # own ν reaches the node only around loops (echoes), never directly: tiny effect
    assert abs(float(mrf.run(own)[2, 2] - base)) < 1e-3
    chain = SupportMRF(p01_h=0.3, p11_h=0.6)
    nu1 = torch.full((1, 7), 0.4, dtype=D)
    nu2 = nu1.clone()
    nu2[0, 3] = 0.99
    assert torch.allclose(chain.run(nu1)[0, 3], chain.run(nu2)[0, 3], atol=1e-14)  # exact on trees


def test_messages_finite_on_extreme_nu():
    for v in (1e-9, 1 - 1e-9, 0.0, 1.0):
        nu = torch.full((6, 8), v, dtype=D)
        nu[0, 0] = 1 - v
        lo = logit(nu)
        lh = PairTable(0.288, 0.49).log_table()
        ext, bel, _ = bp_grid(lo, log_psi_h=lh, log_psi_v=lh, iters=10)
        assert torch.isfinite(ext).all() and torch.isfinite(bel).all()
        pi = SupportMRF().run(nu)
        assert torch.isfinite(pi).all() and (pi >= 1e-6).all() and (pi <= 1 - 1e-6).all()


def test_block_rows():
    g = torch.Generator().manual_seed(10)
    nu = torch.rand(24, 6, generator=g, dtype=D)
    iid = IIDSupport(0.3)
    assert torch.equal(iid.run(nu), torch.full_like(nu, 0.3))
    whole = SupportMRF(start_prob=None).run(nu)
    blocks = SupportMRF(start_prob=None, block_rows=12).run(nu)
    diff = (whole - blocks).abs().max(1).values  # per row
    assert diff[:9].max() < 1e-3 and diff[15:].max() < 1e-3  # far from the border at row 12
    assert diff[10:14].max() > diff[:6].max()


def test_iid_coupling_returns_the_constant_prior():
    nu = torch.rand(4, 5, dtype=D)
    assert torch.equal(IIDSupport(0.2).run(nu), torch.full_like(nu, 0.2))
    assert torch.equal(IIDSupport(0.2).run(1 - nu), torch.full_like(nu, 0.2))


def test_mrf_validation():
    with pytest.raises(ConfigError, match=r"\(0, 1\)"):
        SupportMRF(p01_h=0.0)
    with pytest.raises(ConfigError, match=r"\(0, 1\)"):
        SupportMRF(start_prob=1.5)
    with pytest.raises(ConfigError):
        IIDSupport(1.0)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        SupportMRF(p01_v=0.6, p11_v=0.4)
    assert any("anti-clustering" in str(x.message) for x in w)


# ------------------------------------------------------------------------------------------------
# layout, layers, structure metrics
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,layout", [((7, 5), "fanin_x_out"), ((6, 3, 5, 4), "fanin_x_out"), ((6, 3, 5, 4), "tf_blocks")])
def test_layout_is_a_bijection(shape, layout):
    w = torch.randn(shape)
    s = to_support(w, layout)
    assert tuple(s.shape) == support_shape(shape, layout)
    assert torch.equal(from_support(s, shape, layout), w)
    assert torch.equal(torch.sort(s.flatten()).values, torch.sort(w.flatten()).values)


def test_layout_linear_and_conv_columns_are_neurons():
    w = torch.arange(12.0).view(3, 4)  # (out, in)
    assert torch.equal(to_support(w), w.t())
    c = torch.randn(4, 2, 3, 3)
    assert torch.equal(to_support(c)[:, 1], c[1].flatten())  # column o = filter o's fan-in, (in, kh, kw) order


def test_bayes_layers_with_tiny_sigma_equal_deterministic_layers():
    torch.manual_seed(0)
    lin = nn.Linear(6, 4)
    bl = BayesLinear.from_linear(lin, log_sigma2_init=-80.0).train()
    x = torch.randn(5, 6)
    assert torch.allclose(bl(x), lin(x), atol=1e-6)
    conv = nn.Conv2d(3, 5, 3, padding=1)
    bc = BayesConv2d.from_conv(conv, log_sigma2_init=-80.0).train()
    xc = torch.randn(2, 3, 6, 6)
    assert torch.allclose(bc(xc), conv(xc), atol=1e-5)
    assert torch.allclose(bc.eval()(xc), conv(xc), atol=1e-6)


def test_local_reparameterisation_variance():
    torch.manual_seed(0)
    bl = BayesLinear(3, 2, log_sigma2_init=math.log(0.3)).train()
    x = torch.tensor([[1.0, -2.0, 0.5]])
    out = bl(x.expand(40_000, 3))
    var = F.linear(x * x, bl.sigma2())
    assert torch.allclose(out.var(0), var[0], rtol=0.05)
    assert torch.allclose(out.mean(0), F.linear(x, bl.mu, bl.bias)[0], atol=0.03)
    bc = BayesConv2d(1, 1, 2, log_sigma2_init=math.log(0.2)).train()
    xc = torch.randn(1, 1, 3, 3)
    oc = bc(xc.expand(20_000, 1, 3, 3))
    assert torch.allclose(oc.var(0), F.conv2d(xc * xc, bc.sigma2())[0], rtol=0.06)
    assert torch.equal(bc.eval()(xc), F.conv2d(xc, bc.mu, bc.bias))  # evaluation: μ, never sampled


def test_masked_weights_get_no_gradient():
    bl = BayesLinear(4, 3)
    mask = torch.rand(3, 4) > 0.5
    bl.prune_(mask)
    bl(torch.randn(8, 4)).sum().backward()
    assert (bl.mu.grad[~mask] == 0).all() and (bl.log_sigma2.grad[~mask] == 0).all()
    assert (bl.weight[~mask] == 0).all()


def test_structure_metrics_on_hand_built_masks():
    s = torch.zeros(8, 5, dtype=torch.bool)  # support layout: rows = fan-in, cols = neurons
    s[2:5, 0] = True
    s[0:8, 1] = True
    s[6:7, 3] = True
    s[1:3, 4] = True
    assert column_runs(s).tolist() == [1, 1, 0, 1, 1]
    assert run_count(s) == 1.0
    s2 = s.clone()
    s2[6, 0] = True  # a second run in column 0
    assert math.isclose(run_count(s2), 5 / 4)
    assert math.isclose(tile_occupancy(s, 4), 3 / 4)  # 2 x 2 tiles; rows 4-7 of columns 4-7 are empty
    s3 = torch.zeros(8, 8, dtype=torch.bool)
    s3[0, 0] = True
    assert tile_occupancy(s3, 4) == 0.25
    w1 = from_support(s, (5, 8))  # Linear (out=5, in=8)
    w2 = torch.ones(3, 5, dtype=torch.bool)
    w2[:, 4] = False  # neuron 4 of layer 1 has no fan-out
    dead = dead_neurons([w1, w2])
    assert dead[0].tolist() == [False, False, True, False, True]
    m = structure_metrics({"l1.weight": w1, "l2.weight": w2}, exclude=["l2.weight"])
    assert math.isclose(m["neuron_sparsity"], 2 / 5)
    assert math.isclose(m["compression_rate"], (40 + 15) / (int(w1.sum()) + 12))
    assert m["run_count"] == 1.0


def test_dead_neurons_conv_to_linear_chain():
    conv = torch.ones(4, 1, 3, 3, dtype=torch.bool)
    conv[1] = False  # no fan-in
    lin = torch.ones(2, 4 * 9, dtype=torch.bool)
    lin[:, 18:27] = False  # channel 2's 9 flattened features have no fan-out
    dead = dead_neurons([conv, lin])
    assert dead[0].tolist() == [False, True, True, False]


def test_chain_forward_backward_is_batched():
    g = torch.Generator().manual_seed(11)
    nu = torch.rand(4, 6, generator=g, dtype=D)
    lo = torch.log(nu / (1 - nu))
    lp = PairTable(0.2, 0.7).log_table()
    ext, bel = chain_forward_backward(lo, lp)  # four independent chains at once
    for r in range(4):
        mrf = SupportMRF(p01_h=0.2, p11_h=0.7, start_prob=None)
        assert torch.allclose(torch.sigmoid(bel[r]), brute_marginals(nu[r:r + 1], mrf)[0], atol=1e-10)
