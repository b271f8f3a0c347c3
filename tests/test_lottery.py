"""Lottery procedure: exact rewind, masks through AdamW with weight decay, norm matching, IMP."""

from __future__ import annotations

import pytest
import torch

from sparseforge.engine import fit
from sparseforge.masks import attach
from sparseforge.models.grokking import ModMLP, float64_cross_entropy
from sparseforge.pruning import (
    SnapshotCallback,
    TrainResult,
    lottery_ticket,
    mask_sparsity,
    norm_matched_init,
    norm_ratio,
    rewind,
    snapshot,
    ticket_mask,
)


def _data(p=11, n=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, p, (n, 2), generator=g)
    return x, (x[:, 0] + x[:, 1]) % p


def _train_fn(x, y, steps=30, wd=1.0):
    calls = []

    def train(model, masks, stage):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.98), weight_decay=wd)
        ms = attach(model, masks, optimizer=opt) if masks else None
        snap = SnapshotCallback(steps=(5,))
        fit(model, [(x, y)], opt, loss_fn=float64_cross_entropy, steps=steps, callbacks=[snap])
        if ms is not None:
            ms.detach()
        calls.append((stage, None if masks is None else {k: v.clone() for k, v in masks.items()}))
        return TrainResult(checkpoints=snap.snapshots)

    return train, calls


def test_rewound_kept_weights_equal_init_bit_for_bit():
    torch.manual_seed(0)
    m = ModMLP(11, d_emb=16, d_hidden=8)
    theta0 = snapshot(m)
    x, y = _data()
    train, _ = _train_fn(x, y)
    res = train(m, None, "dense")
    masks = ticket_mask(res.checkpoints["final"], 0.6, names=["embed", "w_in", "w_out", "unembed"])
    assert any(not torch.equal(theta0[n], dict(m.named_parameters())[n]) for n in masks)  # training moved them
    rewind(m, theta0, masks)
    for n, p in m.named_parameters():
        kept = masks[n]
        assert torch.equal(p.detach()[kept].view(torch.int32), theta0[n][kept].view(torch.int32))  # bitwise
        assert (p.detach()[~kept] == 0).all()


def test_masked_weights_stay_zero_through_adamw_with_weight_decay():
    torch.manual_seed(0)
    m = ModMLP(11, d_emb=16, d_hidden=8)
    x, y = _data()
    masks = ticket_mask(m, 0.7, names=["embed", "w_in", "w_out", "unembed"])
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2, betas=(0.9, 0.98), weight_decay=1.0)
    ms = attach(m, masks, optimizer=opt)
    out0 = m(x).detach().clone()
    # changing a masked weight's *value* is erased by the mask at the next step; the gradient is zero
    loss = float64_cross_entropy(m(x), y)
    loss.backward()
    for n, p in m.named_parameters():
        assert (p.grad[~masks[n]] == 0).all()
    opt.zero_grad()
    fit(m, [(x, y)], opt, loss_fn=float64_cross_entropy, steps=100)
    for n, p in m.named_parameters():
        assert (p.detach()[~masks[n]] == 0).all(), n
        assert (p.detach()[masks[n]] != 0).any()
    assert not torch.equal(out0, m(x))
    ms.detach()


def test_norm_matched_init_matches_global_norms():
    torch.manual_seed(0)
    m = ModMLP(11, d_emb=32, d_hidden=8).double()
    theta0 = snapshot(m)
    names = ["embed", "w_in", "w_out", "unembed"]
    masks = ticket_mask(theta0, 0.6, names=names)
    for p in (1, 2):
        th, r = norm_matched_init(theta0, masks, p)
        assert 0 < r < 1
        assert r == pytest.approx(norm_ratio(theta0, masks, p))
        lhs = torch.linalg.vector_norm(torch.cat([th[n].flatten() for n in names]), ord=p)
        rhs = torch.linalg.vector_norm(torch.cat([(theta0[n] * masks[n]).flatten() for n in names]), ord=p)
        assert abs(float(lhs - rhs)) <= 1e-10 * float(rhs)
        for n in names:  # dense: no weight is zeroed, every weight scaled by r
            torch.testing.assert_close(th[n], theta0[n] * r, rtol=1e-15, atol=0)
    # global, not per-tensor sums: the L2 ratio differs from the repository's per-tensor-sum version
    per_tensor = sum(float((theta0[n] * masks[n]).norm()) for n in names) / sum(float(theta0[n].norm()) for n in names)
    assert norm_ratio(theta0, masks, 2) != pytest.approx(per_tensor, rel=1e-6)


def test_lottery_procedure_rewinds_and_retrains_with_mask():
    torch.manual_seed(1)
    m = ModMLP(11, d_emb=16, d_hidden=8)
    theta0 = snapshot(m)
    x, y = _data()
    train, calls = _train_fn(x, y)
    res = lottery_ticket(m, train, sparsity=0.6)
    assert [c[0] for c in calls] == ["dense", "ticket"]
    assert mask_sparsity(res.masks) == pytest.approx(0.6, abs=1e-3)
    assert all(torch.equal(res.theta0[k], theta0[k]) for k in theta0)
    for n, p in m.named_parameters():  # the ticket kept its mask through training
        assert (p.detach()[~res.masks[n]] == 0).all()
    # rewinding to step k uses the dense run's checkpoint at step k
    m2 = ModMLP(11, d_emb=16, d_hidden=8)
    train2, _ = _train_fn(x, y)
    res2 = lottery_ticket(m2, train2, sparsity=0.5, rewind_to=5, retrain=False)
    assert res2.ticket is None
    for n in res2.masks:
        kept = res2.masks[n]
        assert torch.equal(dict(m2.named_parameters())[n].detach()[kept], res2.dense.checkpoints[5][n][kept])


def test_imp_rounds_prune_a_fixed_rate_and_never_revive():
    torch.manual_seed(2)
    m = ModMLP(11, d_emb=16, d_hidden=8)
    x, y = _data()
    train, calls = _train_fn(x, y)
    res = lottery_ticket(m, train, sparsity=0.784, imp_rounds=3)  # rate 0.4 per round
    stages = [c[0] for c in calls]
    assert stages == ["dense", "imp1", "imp2", "ticket"]
    m1, m2 = calls[1][1], calls[2][1]
    assert mask_sparsity(m1) == pytest.approx(0.4, abs=2e-3)
    assert mask_sparsity(m2) == pytest.approx(0.64, abs=2e-3)
    assert mask_sparsity(res.masks) == pytest.approx(0.784, abs=2e-3)
    for a, b in ((m1, m2), (m2, res.masks)):
        for n in a:
            assert not (b[n] & ~a[n]).any()


