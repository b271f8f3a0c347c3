"""GIOROM / GNS operators: noise and integration identities, equivariance, FNO, decoders, rollouts."""

from __future__ import annotations

import pytest
import torch

from sparseforge.data.particles import Trajectory, WindowBatches
from sparseforge.errors import UserError
from sparseforge.operators import (
    FNO,
    GIOROM,
    GNS,
    DecoderBatches,
    GIOROMConfig,
    GNSConfig,
    IDWDecoder,
    NeuralFieldDecoder,
    ParticleStats,
    SpectralConv,
    SplatDecoder,
    chamfer_distance,
    decoder_loss,
    rollout,
    rollout_mse,
    stepper_loss,
)
from sparseforge.operators.decoders import gather, multilinear_weights, splat
from sparseforge.operators.features import integrate, random_walk_noise, target_acceleration

BOUNDS = [[0.0, 1.0], [0.0, 1.0]]


def stats(radius: float = 0.15, noise: float = 1e-3) -> ParticleStats:
    return ParticleStats(bounds=BOUNDS, radius=radius, vel_mean=[0.0, -0.01], vel_std=[0.01, 0.01],
                         acc_mean=[0.0, -1e-3], acc_std=[1e-3, 1e-3], noise_std=noise)


def window(n: int = 60, W: int = 5, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x0 = 0.2 + 0.6 * torch.rand(n, 1, 2, generator=g)
    v = 0.01 * torch.randn(n, 1, 2, generator=g)
    t = torch.arange(W + 1).view(1, -1, 1).float()
    return x0 + v * t + 1e-3 * torch.randn(n, W + 1, 2, generator=g)  # (n, W + 1, 2)


def small_giorom(**kw) -> GIOROM:
    torch.manual_seed(0)
    cfg = GIOROMConfig(hidden=32, grid=8, fno_modes=3, fno_width=8, gno_channels=16, **kw)
    return GIOROM(stats(), cfg)


def small_gns() -> GNS:
    torch.manual_seed(0)
    return GNS(stats(), GNSConfig(hidden=32, blocks=2))


def test_noise_target_identity():
    w = window()
    target = w[:, -1] + (w[:, -1] - w[:, -2])
    for sigma in (0.0, 1e-3, 0.05):
        noisy = w + random_walk_noise(w.shape, sigma, generator=torch.Generator().manual_seed(1))
        a = target_acceleration(noisy, target)
        torch.testing.assert_close(noisy[:, -1] + (noisy[:, -1] - noisy[:, -2]) + a, target, atol=1e-6, rtol=0)
    n = random_walk_noise((1000, 6, 2), 0.1, generator=torch.Generator().manual_seed(2))
    assert bool((n[:, 0] == 0).all())
    vel_noise = n[:, 1:] - n[:, :-1]
    assert abs(float(vel_noise[:, -1].std()) - 0.1) < 0.01  # the last velocity's noise has std sigma


def test_integrator_reproduces_trajectory_with_true_accelerations():
    g = torch.Generator().manual_seed(0)
    T, n = 60, 30
    x = torch.cumsum(torch.cumsum(1e-3 * torch.randn(T, n, 2, generator=g, dtype=torch.float64), 0), 0)
    frames = list(x[:6])
    for t in range(5, 5 + 50):
        w = torch.stack(frames[-6:], 1)
        a = x[t + 1] - 2 * x[t] + x[t - 1]
        frames.append(integrate(w, a))
    torch.testing.assert_close(torch.stack(frames), x[:56], atol=1e-12, rtol=0)


@pytest.mark.parametrize("make", [small_giorom, lambda: small_giorom(latent="transformer", attn_width=16),
                                  lambda: small_giorom(latent="none"), lambda: small_giorom(agg_weight="inv_dist"),
                                  small_gns])
def test_permutation_equivariance(make):
    model = make().eval()
    w, typ = window(), torch.full((60,), 5)
    typ[::3] = 6
    perm = torch.randperm(60, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = model(w, typ)
        out_p = model(w[perm], typ[perm])
    assert out.shape == (60, 2)
    torch.testing.assert_close(out_p, out[perm], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("make", [small_giorom, small_gns])
def test_batch_of_scenes_equals_separate_runs(make):
    model = make().eval()
    a, b = window(50, seed=1), window(40, seed=2)
    ta, tb = torch.full((50,), 5), torch.full((40,), 5)
    batch = torch.cat([torch.zeros(50, dtype=torch.long), torch.ones(40, dtype=torch.long)])
    with torch.no_grad():
        both = model(torch.cat([a, b]), torch.cat([ta, tb]), batch)
        sep = torch.cat([model(a, ta), model(b, tb)])
    torch.testing.assert_close(both, sep, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("make", [small_giorom, small_gns])
def test_every_parameter_gets_a_gradient(make):
    model = make()
    trajs = [Trajectory(torch.stack([window(40, seed=s)[:, i] for i in range(6)] * 2), torch.full((40,), 5))
             for s in range(2)]
    batch = next(iter(WindowBatches(trajs, window=5, batch_size=2, batches_per_epoch=1)))
    for target in ("clean", "gns"):
        loss = stepper_loss(model, batch, noise_target=target, position_loss_weight=1.0)
        assert torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not bool(torch.isfinite(p.grad).all())]
    assert not missing


def test_forward_rejects_wrong_window():
    with pytest.raises(UserError, match="window must be"):
        small_gns()(torch.rand(10, 4, 2), torch.zeros(10, dtype=torch.long))


def test_fno_identity_and_shift_equivariance():
    G = 8
    sc = SpectralConv(3, 3, modes=G, grid_shape=(G, G))
    with torch.no_grad():
        sc.weight.zero_()
        for i in range(3):
            sc.weight[i, i, ..., 0] = 1.0
    x = torch.randn(2, 3, G, G)
    torch.testing.assert_close(sc(x), x, atol=1e-5, rtol=1e-5)
    torch.manual_seed(0)
    fno = FNO(3, 4, grid_shape=(G, G), width=6, modes=3, n_blocks=2)
    y = fno(x)
    ys = fno(torch.roll(x, shifts=(2, -3), dims=(2, 3)))
    torch.testing.assert_close(ys, torch.roll(y, shifts=(2, -3), dims=(2, 3)), atol=1e-5, rtol=1e-5)
    fno3 = FNO(2, 2, grid_shape=(4, 4, 4), width=4, modes=2)
    assert fno3(torch.randn(1, 2, 4, 4, 4)).shape == (1, 2, 4, 4, 4)


def test_multilinear_splat_gather():
    g = torch.Generator().manual_seed(0)
    u = torch.rand(200, 2, generator=g)
    idx, w = multilinear_weights(u, 7)
    torch.testing.assert_close(w.sum(1), torch.ones(200))
    nodes = torch.stack(torch.meshgrid(torch.linspace(0, 1, 7), torch.linspace(0, 1, 7), indexing="ij"), -1).reshape(-1, 2)
    vals = torch.randn(49, 3, generator=g)
    ni, nw = multilinear_weights(nodes, 7)
    torch.testing.assert_close(gather(vals, ni, nw), vals, atol=1e-5, rtol=1e-5)
    # constant content splatted and normalised by density is that constant wherever density > 0
    c = torch.tensor([0.3, -0.2])
    grid = splat(torch.cat([torch.ones(200, 1), c.expand(200, 2)], 1), idx, w, 49)
    q = torch.rand(300, 2, generator=g)
    qi, qw = multilinear_weights(q, 7)
    gq = gather(grid, qi, qw)
    ok = gq[:, 0] > 1e-5
    torch.testing.assert_close(gq[ok, 1:] / gq[ok, :1], c.expand(int(ok.sum()), 2), atol=1e-5, rtol=1e-5)


def _cloud(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    X = 0.3 + 0.4 * torch.rand(400, 2, generator=g)
    idx = torch.randperm(400, generator=g)[:80]
    xt = X + 0.05 * torch.sin(3 * X)  # a smooth deformation
    return X, idx, xt


@pytest.mark.parametrize("make", [lambda: SplatDecoder(BOUNDS), lambda: IDWDecoder(BOUNDS)])
def test_decoder_exact_at_samples(make):
    torch.manual_seed(0)
    dec = make()
    X, idx, xt = _cloud()
    plan = dec.prepare(X[idx], X[idx])
    with torch.no_grad():
        out = dec(plan, xt[idx])
    torch.testing.assert_close(out, xt[idx], atol=1e-6, rtol=0)
    # batched over frames, and decoding the whole cloud works
    plan = dec.prepare(X[idx], X)
    with torch.no_grad():
        many = dec(plan, torch.stack([xt[idx], X[idx]]))
    assert many.shape == (2, 400, 2)
    if isinstance(dec, IDWDecoder):
        torch.testing.assert_close(many[1], X)  # zero displacement decodes to the reference


def test_splat_decoder_trains_and_auto_grid():
    torch.manual_seed(0)
    dec = SplatDecoder(BOUNDS)
    X, idx, xt = _cloud()
    plan = dec.prepare(X[idx], X, train=True, generator=torch.Generator().manual_seed(0))
    assert plan.grid_size >= 2 and plan.query_idx.shape == (400, 8 * 4)
    traj = [Trajectory(torch.stack([X, xt]), torch.full((400,), 5))]
    loss = decoder_loss(dec, next(iter(DecoderBatches(1, 2))), trajectories=traj, sparse_index=[idx])
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in dec.parameters())


def test_neural_field_least_squares_reproduces_span():
    torch.manual_seed(0)
    dec = NeuralFieldDecoder(BOUNDS, basis=6, hidden=16, ridge=1e-12).double()  # a random basis is ill-conditioned
    X, idx, _ = _cloud()
    X = X.double()
    phi = dec.basis_at(X[idx])  # (n, d, k)
    q = torch.randn(6, dtype=torch.float64)
    u = torch.einsum("ndk,k->nd", phi, q)
    q_fit = dec.fit_coefficients(phi, u)
    torch.testing.assert_close(torch.einsum("ndk,k->nd", phi, q_fit), u, atol=1e-6, rtol=0)
    plan = dec.prepare(X[idx], X[idx])
    torch.testing.assert_close(dec(plan, X[idx] + u), X[idx] + u, atol=1e-6, rtol=0)


def test_rollout_shapes_and_seed_frames():
    model = small_gns()
    w = window(30)
    seed = w.transpose(0, 1)  # (W + 1, n, d)
    out = rollout(model, seed, torch.full((30,), 5), 7)
    assert out.shape == (13, 30, 2)
    assert torch.equal(out[:6], seed)
    assert rollout_mse(out, out, skip=6) == 0.0
    with pytest.raises(UserError):
        rollout(model, seed[:3], torch.full((30,), 5), 2)


def test_chamfer_distance():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(100, 2, generator=g), torch.rand(80, 2, generator=g)
    assert chamfer_distance(a, a) == 0.0
    d = ((a[:, None] - b[None]) ** 2).sum(-1)
    want = 0.5 * (float(d.min(1).values.mean()) + float(d.min(0).values.mean()))
    assert abs(chamfer_distance(a, b) - want) < 1e-7
    assert abs(chamfer_distance(a, b) - chamfer_distance(b, a)) < 1e-9


def test_recipe_smoke_reports_and_renders(tmp_path):
    from sparseforge.recipes import run_recipe

    path, s = run_recipe("giorom", preset="smoke", out=tmp_path / "g")
    for k in ("rollout_mse/giorom", "rollout_mse/gns", "one_step_mse/giorom", "chamfer/giorom", "step_ms/giorom",
              "step_ms/gns", "speedup/gns_over_giorom", "rollout_mse/const_vel"):
        assert k in s and s[k] is not None and s[k] >= 0, k
    assert (path / "figures" / "rollout.png").exists()
    assert s["n_sparse"] == 30 and s["n_particles"] == 150


def test_recipe_bad_config():
    from sparseforge.errors import ConfigError
    from sparseforge.recipes import RECIPES

    rec = RECIPES.get("giorom")
    for bad in ({"frac": "0"}, {"material": "lava"}, {"n_particles": "0"}, {"radius_factor": "-1"}):
        with pytest.raises(ConfigError):
            rec.build_config("smoke", bad)


def test_recipe_reads_a_gns_folder(tmp_path):
    from sparseforge.data.particles import generate_particle_splits, write_particle_dataset
    from sparseforge.recipes import run_recipe

    s = generate_particle_splits("water", n_train=2, n_valid=1, n_test=1, n_particles=80, n_frames=12, seed=3)
    write_particle_dataset(tmp_path / "data", s)  # GNS object arrays: needs allow_pickle
    with pytest.raises(UserError, match="allow_pickle"):
        run_recipe("giorom", preset="smoke", out=tmp_path / "r1", overrides={"data_dir": str(tmp_path / "data")})
    _, summ = run_recipe("giorom", preset="smoke", out=tmp_path / "r2",
                         overrides={"data_dir": str(tmp_path / "data"), "allow_pickle": "true"})
    assert summ["n_particles"] == 80 and summ["n_sparse"] == 16
