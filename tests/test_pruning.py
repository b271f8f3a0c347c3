"""Scorers and masks: SNIP / GraSP / SynFlow against their definitions, exact top-k, iterative pruning."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparseforge.errors import UserError
from sparseforge.models.grokking import ModMLP, ModTransformer
from sparseforge.pruning import (
    hessian_gradient_product,
    imp_sparsities,
    mask_sparsity,
    prunable_params,
    prune,
    prune_global,
    scores,
    topk_masks,
)
from sparseforge.pruning.scores import get_scorer


def _nk(x: float) -> int:  # round half up
    return math.floor(x + 0.5 + 1e-9)


class TinyMLP(nn.Module):
    """Bias-free 5 -> 7 -> 6 -> 3 ReLU MLP (hand-built)."""

    def __init__(self, dtype=torch.float32):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w1 = nn.Parameter(torch.randn(7, 5, generator=g, dtype=dtype))
        self.w2 = nn.Parameter(torch.randn(6, 7, generator=g, dtype=dtype))
        self.w3 = nn.Parameter(torch.randn(3, 6, generator=g, dtype=dtype))

    def forward(self, x):
        return F.relu(F.relu(x @ self.w1.T) @ self.w2.T) @ self.w3.T


def _batch(dtype=torch.float32, n=16):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 5, generator=g, dtype=dtype), torch.randint(0, 3, (n,), generator=g)


def test_snip_equals_abs_grad_times_weight_normalised():
    m = TinyMLP()
    x, y = _batch()
    s = scores(m, "snip", batch=(x, y), loss_fn=F.cross_entropy)
    m.zero_grad()
    F.cross_entropy(m(x), y).backward()
    ref = {n: (p.grad * p).abs().double() for n, p in m.named_parameters()}
    total = sum(r.sum() for r in ref.values())
    for n in ref:
        torch.testing.assert_close(s[n], ref[n] / total, rtol=1e-6, atol=1e-12)
    raw = scores(m, "snip", batch=(x, y), loss_fn=F.cross_entropy, normalize=False)
    for n in ref:
        torch.testing.assert_close(raw[n], ref[n], rtol=1e-6, atol=1e-9)


def test_grasp_hg_matches_finite_difference():
    m = TinyMLP(torch.float64)
    x, y = _batch(torch.float64)
    params = prunable_params(m)
    T = 2.0

    def grad_at(shift):
        with torch.no_grad():
            for n, p in params.items():
                p.add_(shift[n])
        loss = F.cross_entropy(m(x) / T, y)
        g = torch.autograd.grad(loss, list(params.values()))
        with torch.no_grad():
            for n, p in params.items():
                p.sub_(shift[n])
        return dict(zip(params, g))

    g = grad_at({n: torch.zeros_like(p) for n, p in params.items()})
    hg = hessian_gradient_product(m, params, batch=(x, y), loss_fn=F.cross_entropy, temperature=T)
    eps = 1e-5
    gp = grad_at({n: eps * g[n] for n in params})
    gm = grad_at({n: -eps * g[n] for n in params})
    for n in params:
        fd = (gp[n] - gm[n]) / (2 * eps)
        torch.testing.assert_close(hg[n], fd, rtol=1e-5, atol=1e-9)
    # importance = theta * Hg (= -S_GraSP of the paper); pruning removes the largest S_GraSP
    s = scores(m, "grasp", batch=(x, y), loss_fn=F.cross_entropy, temperature=T, normalize=False)
    for n, p in params.items():
        torch.testing.assert_close(s[n], (p.detach() * hg[n]).double())
    masks = prune_global(m, s, 0.5)
    flat_S = torch.cat([-s[n].flatten() for n in params])  # paper's score
    kept = torch.cat([masks[n].flatten() for n in params])
    assert flat_S[~kept].min() >= flat_S[kept].max()


def test_synflow_per_layer_sums_are_conserved():
    # Tanaka et al. Thm: for a bias-free ReLU net with positive weights the SynFlow score summed over
    # each layer equals R = 1^T f(1) (synaptic flow is conserved), embedding included.
    m = ModMLP(7, d_emb=9, d_hidden=5)
    with torch.no_grad():
        for p in m.parameters():
            p.abs_()
    s = scores(m, "synflow", batch=(torch.zeros(1, 2, dtype=torch.long), None))
    with torch.no_grad():
        R = m.double().forward_onehot(torch.ones(1, 2, 7, dtype=torch.float64)).sum()
    sums = torch.stack([v.sum() for v in s.values()])
    torch.testing.assert_close(sums, R.expand_as(sums), rtol=1e-10, atol=0)
    # and on a plain MLP with signed weights, after linearisation
    t = TinyMLP(torch.float64)
    s2 = scores(t, "synflow", input_shape=(5,))
    lin = TinyMLP(torch.float64)
    with torch.no_grad():
        for p in lin.parameters():
            p.abs_()
        R2 = lin(torch.ones(1, 5, dtype=torch.float64)).sum()
    for v in s2.values():
        torch.testing.assert_close(v.sum(), R2, rtol=1e-10, atol=0)


def test_synflow_does_not_modify_model_and_is_float64():
    m = TinyMLP()
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    s = scores(m, "synflow", input_shape=(5,))
    assert all(v.dtype == torch.float64 for v in s.values())
    for n, p in m.named_parameters():
        assert torch.equal(p, before[n])


@pytest.mark.parametrize("k", [0.0, 0.3, 0.6, 0.9, 0.99, 1.0])
@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_masks_hit_exact_sparsity_with_ties(k, scope):
    g = torch.Generator().manual_seed(0)
    sc = {"a": torch.randint(0, 3, (13, 7), generator=g).float(), "b": torch.zeros(29), "c": torch.ones(4, 5)}
    masks = topk_masks(sc, k, scope=scope)
    if scope == "global":
        N = sum(v.numel() for v in sc.values())
        assert sum(int(m.sum()) for m in masks.values()) == _nk((1 - k) * N)
    else:
        for n, v in sc.items():
            assert int(masks[n].sum()) == _nk((1 - k) * v.numel())
    for n in sc:
        assert masks[n].shape == sc[n].shape and masks[n].dtype == torch.bool


def test_ties_broken_by_lowest_flat_index():
    masks = topk_masks({"a": torch.tensor([1.0, 2, 2, 2, 0, 3])}, 0.5)
    assert masks["a"].tolist() == [False, True, True, False, False, True]
    masks = topk_masks({"a": torch.zeros(4), "b": torch.zeros(4)}, 0.5)
    assert masks["a"].all() and not masks["b"].any()


def test_prune_global_contract_and_model_scores_paired_by_name():
    m = ModMLP(11, d_emb=16, d_hidden=8)
    s = scores(m, "magnitude")
    masks = prune_global(m, s, 0.7)
    assert set(masks) == {"embed", "w_in", "w_out", "unembed"}
    assert abs(mask_sparsity(masks) - 0.7) < 1.0 / sum(v.numel() for v in s.values())
    kept_min = min(float(s[n][masks[n]].min()) for n in s)
    pruned_max = max(float(s[n][~masks[n]].max()) for n in s)
    assert kept_min >= pruned_max
    short = prune_global(s, 0.7)  # prune_global(scores, sparsity) shorthand
    assert all(torch.equal(masks[n], short[n]) for n in s)
    noemb = {n: p for n, p in prunable_params(m).items() if "embed" not in n}
    assert set(noemb) == {"w_in", "w_out"}
    assert set(prune_global(m, scores(m, "magnitude", params=noemb), 0.5)) == {"w_in", "w_out"}
    with pytest.raises(UserError):
        prune_global(m, s, 1.5)


def test_iterative_pruning_never_revives():
    m = TinyMLP()
    x, y = _batch()
    masks = None
    prev_kept = None
    for k in imp_sparsities(0.3, 5):
        # scores that would prefer the pruned weights: a strongly negative magnitude ranking
        s = {n: -p.detach().abs() + torch.rand(p.shape) for n, p in m.named_parameters()}
        new = prune_global(m, s, k, masks=masks)
        if masks is not None:
            for n in new:
                assert not (new[n] & ~masks[n]).any(), "a pruned weight came back"
        kept = sum(int(v.sum()) for v in new.values())
        assert prev_kept is None or kept < prev_kept
        masks, prev_kept = new, kept
    assert imp_sparsities(0.2, 3) == pytest.approx([0.2, 0.36, 0.488])
    with pytest.raises(UserError):
        prune_global(m, {n: torch.rand(p.shape) for n, p in m.named_parameters()}, 0.1, masks=masks)


def test_synflow_schedule_reaches_target_and_is_monotone():
    m = TinyMLP()
    seen = []

    def recording(model, params, **kw):
        seen.append(sum(int((p != 0).sum()) for p in params.values()))
        return get_scorer("synflow")(model, params, **kw)

    masks = prune(m, recording, 0.9, rounds=10, input_shape=(5,))
    N = sum(p.numel() for p in m.parameters())
    assert sum(int(v.sum()) for v in masks.values()) == _nk(0.1 * N)
    assert all(a >= b for a, b in zip(seen, seen[1:])) and seen[0] == N and seen[-1] < N
    m2 = TinyMLP()
    default = prune(m2, "synflow", 0.9, input_shape=(5,))  # 100 rounds by default
    assert sum(int(v.sum()) for v in default.values()) == _nk(0.1 * N)
    # the model itself is untouched by iterative scoring
    assert all(bool((p != 0).all()) for p in m2.parameters())


def test_random_scores_reproducible():
    m = ModMLP(11, d_emb=64, d_hidden=32)
    a = scores(m, "random", seed=3)
    b = scores(m, "random", seed=3)
    assert all(torch.equal(a[n], b[n]) for n in a)
    masks = prune_global(m, a, 0.6)
    N = sum(v.numel() for v in masks.values())
    d = 0.4
    for _n, v in masks.items():
        sigma = (d * (1 - d) / v.numel()) ** 0.5
        assert abs(float(v.float().mean()) - d) < 3 * sigma + 1.0 / N


@pytest.mark.parametrize("make", [lambda: ModMLP(11, d_emb=16, d_hidden=8), lambda: ModTransformer(11, d_model=16, d_mlp=16),
                                  TinyMLP])
def test_every_registered_scorer_returns_finite_scores_of_param_shape(make):
    from sparseforge.registry import METHODS

    m = make()
    if isinstance(m, TinyMLP):
        batch = _batch()
    else:
        g = torch.Generator().manual_seed(0)
        batch = (torch.randint(0, 11, (20, 2), generator=g), torch.randint(0, 11, (20,), generator=g))
    names = set(METHODS.names(family="scorer"))
    assert {"magnitude", "random", "snip", "grasp", "synflow"} <= names
    params = prunable_params(m)
    for meth in sorted(names):
        s = scores(m, meth, batch=batch)
        assert set(s) == set(params)
        for n, v in s.items():
            assert v.shape == params[n].shape, (meth, n)
            assert torch.isfinite(v).all(), (meth, n)


def test_scorers_needing_data_say_so():
    with pytest.raises(UserError):
        scores(TinyMLP(), "snip")
    with pytest.raises(UserError):
        scores(TinyMLP(), "nope")
