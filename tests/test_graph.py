"""Graph primitives: radius graph vs brute force, scatter vs loops, sampling, message passing, GNO."""

from __future__ import annotations

import pytest
import torch

from sparseforge.errors import UserError
from sparseforge.graph import (
    IntegralTransform,
    InteractionBlock,
    fps,
    kernel_integral,
    knn,
    radius_graph,
    radius_neighbors,
    random_sample,
    sample_points,
    scatter_max,
    scatter_mean,
    scatter_sum,
)


def brute_pairs(x: torch.Tensor, r: float, loop: bool) -> torch.Tensor:
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    m = d2 <= r * r
    if not loop:
        m.fill_diagonal_(False)
    i, j = m.nonzero(as_tuple=True)
    return torch.stack([j, i])


def clustered(n: int, d: int, g: torch.Generator) -> torch.Tensor:
    centres = torch.randn(5, d, generator=g) * 4 - 2
    lab = torch.randint(0, 5, (n,), generator=g)
    return centres[lab] + 0.15 * torch.randn(n, d, generator=g)


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("loop", [False, True])
@pytest.mark.parametrize("kind", ["random", "clustered"])
def test_radius_graph_equals_brute_force(d, loop, kind):
    g = torch.Generator().manual_seed(d * 10 + loop)
    x = (torch.rand(600, d, generator=g) * 6 - 4) if kind == "random" else clustered(600, d, g)
    assert bool((x < 0).any())  # negative coordinates are exercised
    r = 0.6 if kind == "random" else 0.2
    ref = brute_pairs(x, r, loop)
    assert ref.shape[1] > 600
    for method in ("brute", "cells"):
        for budget in (1 << 22, 97):  # tiny budget: many chunks
            e = radius_graph(x, r, loop=loop, method=method, budget=budget)
            assert torch.equal(e, ref), (method, budget)
    # symmetric, sorted by centre
    e = radius_graph(x, r, loop=loop, method="cells")
    pairs = set(map(tuple, e.t().tolist()))
    assert all((i, j) in pairs for j, i in pairs)
    assert bool((e[1, 1:] >= e[1, :-1]).all())


def test_radius_graph_max_num_neighbors_keeps_nearest():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(400, 2, generator=g)
    k = 4
    for loop in (False, True):
        e_c = radius_graph(x, 0.15, loop=loop, max_num_neighbors=k, method="cells")
        e_b = radius_graph(x, 0.15, loop=loop, max_num_neighbors=k, method="brute")
        assert torch.equal(e_c, e_b)
        full = radius_graph(x, 0.15, loop=loop)
        for i in range(0, 400, 37):
            nb = full[0, full[1] == i]
            d = ((x[nb] - x[i]) ** 2).sum(-1)
            want = nb[torch.argsort(d, stable=True)][:k].sort().values
            assert torch.equal(e_c[0, e_c[1] == i], want)


def test_radius_graph_batch_separates_scenes():
    g = torch.Generator().manual_seed(5)
    a, b = torch.rand(150, 2, generator=g), torch.rand(120, 2, generator=g)
    x = torch.cat([a, b])
    batch = torch.cat([torch.zeros(150, dtype=torch.long), torch.ones(120, dtype=torch.long)])
    for method in ("brute", "cells"):
        e = radius_graph(x, 0.2, batch=batch, method=method)
        ea, eb = radius_graph(a, 0.2), radius_graph(b, 0.2) + 150
        assert torch.equal(e, torch.cat([ea, eb], 1))


def test_radius_neighbors_bipartite():
    g = torch.Generator().manual_seed(7)
    s, q = torch.randn(300, 3, generator=g), torch.randn(200, 3, generator=g)
    d2 = ((q[:, None] - s[None]) ** 2).sum(-1)
    qi, si = (d2 <= 0.5**2).nonzero(as_tuple=True)
    for method in ("brute", "cells"):
        assert torch.equal(radius_neighbors(s, q, 0.5, method=method), torch.stack([si, qi]))


def test_radius_graph_bad_input():
    x = torch.rand(10, 2)
    for r in (0.0, -1.0, float("nan")):
        with pytest.raises(UserError, match="radius"):
            radius_graph(x, r)
    with pytest.raises(UserError, match=r"\(N, d\)"):
        radius_graph(torch.rand(10), 0.1)
    with pytest.raises(UserError):
        radius_graph(torch.arange(10).view(5, 2), 0.1)


def test_radius_graph_large_cloud_cells():
    x = torch.rand(20_000, 2) * 10 - 5
    e = radius_graph(x, 0.05, budget=5000)
    # spot check a few centres against brute force
    for i in (0, 777, 19_999):
        d2 = ((x - x[i]) ** 2).sum(-1)
        want = torch.nonzero((d2 <= 0.05**2) & (torch.arange(20_000) != i)).flatten()
        assert torch.equal(e[0, e[1] == i], want)


@pytest.mark.parametrize("fn,ref", [
    (scatter_sum, lambda rows: rows.sum(0)),
    (scatter_mean, lambda rows: rows.mean(0)),
    (scatter_max, lambda rows: rows.max(0).values),
])
def test_scatter_equals_loop(fn, ref):
    g = torch.Generator().manual_seed(1)
    src = torch.randn(50, 3, generator=g)
    index = torch.randint(0, 9, (50,), generator=g)
    index[index == 4] = 5  # segment 4 is empty
    out = fn(src, index, 10)
    for i in range(10):
        rows = src[index == i]
        want = ref(rows) if len(rows) else torch.zeros(3)
        torch.testing.assert_close(out[i], want)


def test_scatter_gradcheck():
    g = torch.Generator().manual_seed(2)
    src = torch.randn(12, 2, dtype=torch.float64, generator=g, requires_grad=True)
    index = torch.tensor([0, 1, 1, 2, 2, 2, 4, 4, 0, 1, 2, 4])
    for fn in (scatter_sum, scatter_mean, scatter_max):
        assert torch.autograd.gradcheck(lambda s, fn=fn: fn(s, index, 5), (src,))


def test_fps_properties():
    g = torch.Generator().manual_seed(4)
    x = torch.rand(300, 2, generator=g)
    idx = fps(x, 40)
    assert idx[0] == 0 and len(set(idx.tolist())) == 40
    assert torch.equal(idx, fps(x, 40))  # deterministic
    xd = x.double()
    for m in range(1, 40):
        dmin = torch.cdist(xd, xd[idx[:m]]).min(1).values ** 2
        assert torch.isclose(dmin[idx[m]], dmin.max())
    # duplicates: still distinct indices
    dup = torch.zeros(5, 2)
    assert sorted(fps(dup, 5).tolist()) == list(range(5))


def test_random_sample_and_sizes():
    g = torch.Generator().manual_seed(0)
    s = random_sample(100, 20, generator=g)
    assert len(set(s.tolist())) == 20 and bool((s[1:] > s[:-1]).all())
    x = torch.rand(101, 2)
    assert len(sample_points(x, frac=0.2)) == 21
    assert len(sample_points(x, n=7, method="random", seed=1)) == 7
    with pytest.raises(UserError):
        sample_points(x, frac=1.5)
    with pytest.raises(UserError):
        fps(x, 0)


def test_knn_matches_sort():
    g = torch.Generator().manual_seed(9)
    s, q = torch.rand(80, 2, generator=g), torch.rand(30, 2, generator=g)
    idx, d2 = knn(s, q, 5)
    full = ((q[:, None] - s[None]) ** 2).sum(-1)
    torch.testing.assert_close(d2, full.sort(1).values[:, :5])
    torch.testing.assert_close(full.gather(1, idx), d2)


def test_interaction_block_split_first_layer_equals_concat():
    torch.manual_seed(0)
    blk = InteractionBlock(8, 6, 16)
    h, x = torch.randn(20, 8), torch.rand(20, 2)
    ei = radius_graph(x, 0.4, loop=True)
    e = torch.randn(ei.shape[1], 6)
    m = blk.messages(h, e, ei)
    want = blk.edge_mlp(torch.cat([h[ei[1]], h[ei[0]], e], -1))
    torch.testing.assert_close(m, want, atol=1e-5, rtol=1e-5)
    h2, e2 = blk(h, e, ei)
    agg = scatter_mean(want, ei[1], 20)
    torch.testing.assert_close(h2, h + blk.node_mlp(torch.cat([h, agg], -1)), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(e2, e + want, atol=1e-5, rtol=1e-5)


class _One(torch.nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.c = c

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z.new_ones(z.shape[0], self.c)


def test_gno_lift_with_unit_kernel_is_neighbour_mean():
    g = torch.Generator().manual_seed(11)
    src = torch.rand(100, 2, generator=g)
    grid = torch.stack(torch.meshgrid(torch.linspace(-0.5, 1.5, 9), torch.linspace(-0.5, 1.5, 9), indexing="ij"), -1).reshape(-1, 2)
    f = torch.randn(100, 4, generator=g)
    ei = radius_neighbors(src, grid, 0.2)
    out = IntegralTransform(_One(4), transform="linear")(src, grid, ei, f)
    for y in range(grid.shape[0]):
        nb = ei[0, ei[1] == y]
        want = f[nb].mean(0) if len(nb) else torch.zeros(4)
        torch.testing.assert_close(out[y], want)
    assert bool((out[0] == 0).all())  # a corner far from every particle
    # independent of particle order
    perm = torch.randperm(100, generator=g)
    ei_p = radius_neighbors(src[perm], grid, 0.2)
    out_p = kernel_integral(_One(4), src[perm], grid, ei_p, f[perm])
    torch.testing.assert_close(out_p, out, atol=1e-6, rtol=1e-6)
