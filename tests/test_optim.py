"""Tests for sparseforge.optim.ProximalOptimizer and its model helpers (spec §2.7, §7.21-7.22)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparseforge.errors import UserError
from sparseforge.groups import group_view
from sparseforge.optim import ProximalOptimizer, build_prox_map, nonzero_groups, project_top_k_
from sparseforge.prox import GroupEnvelope, GroupLasso


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(),
                         nn.Linear(6 * 8 * 8, 20), nn.ReLU(), nn.Linear(20, 10))


def _batch(i: int):
    g = torch.Generator().manual_seed(i)
    return torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)


OPTS = {
    "sgd_momentum": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-4),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-2),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.05),
}


@pytest.mark.parametrize("opt", list(OPTS))
@pytest.mark.parametrize("method", ["wgsef", "group_lasso", "l1"])
def test_weight_zero_equals_base_step_for_step(opt, method):
    m1, m2 = _net(), _net()
    o1 = OPTS[opt](m1.parameters())
    o2 = ProximalOptimizer(OPTS[opt](m2.parameters()), build_prox_map(m2, method, weight=0.0))
    for i in range(6):
        x, y = _batch(i)
        for m, o in ((m1, o1), (m2, o2)):
            o.zero_grad()
            F.cross_entropy(m(x), y).backward()
            o.step()
        for a, b in zip(m1.parameters(), m2.parameters()):
            assert torch.equal(a, b)


def test_positive_weight_changes_only_regularized_and_keeps_identity():  # §7.21
    m = _net()
    pm = build_prox_map(m, "wgsef", weight=5.0, k=0.5, include_coupled=False)
    base = torch.optim.SGD(m.parameters(), lr=0.1)
    opt = ProximalOptimizer(base, pm)
    ids = {n: (id(p), p.dtype) for n, p in m.named_parameters()}
    x, y = _batch(0)
    opt.zero_grad()
    F.cross_entropy(m(x), y).backward()
    # reference: a plain SGD step without prox on a copy
    ref = copy.deepcopy(m)
    with torch.no_grad():
        for p, q in zip(ref.parameters(), m.parameters()):
            p -= 0.1 * q.grad
    opt.step()
    reg = {id(p) for p in pm.params()}
    for (n, p), q in zip(m.named_parameters(), ref.parameters()):
        assert (id(p), p.dtype) == ids[n]
        if id(p) in reg:
            assert not torch.equal(p, q)
        else:
            assert torch.allclose(p, q)


def test_lr_scales_gamma_and_schedule():
    w = nn.Parameter(torch.randn(8, 4))
    w0 = w.detach().clone()
    op = GroupLasso("row", 1.0)
    opt = ProximalOptimizer(torch.optim.SGD([w], lr=0.5), {w: op}, weight_schedule=lambda t: 0.0 if t == 0 else 0.5)
    w.grad = torch.zeros_like(w)
    opt.step()  # rho = 0 -> identity
    assert torch.equal(w.detach(), w0)
    opt.step()  # gamma = lr * weight * rho = 0.25
    n = w0.norm(dim=1, keepdim=True)
    assert torch.allclose(w.detach(), torch.clamp(1 - 0.25 / n, min=0) * w0, atol=1e-6)


def test_state_dict_roundtrip_and_scheduler():
    m = _net()
    opt = ProximalOptimizer(torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9), build_prox_map(m, weight=1.0))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    for i in range(3):
        x, y = _batch(i)
        opt.zero_grad()
        F.cross_entropy(m(x), y).backward()
        opt.step()
        sched.step()
    sd = copy.deepcopy(opt.state_dict())
    m2 = copy.deepcopy(m)
    opt2 = ProximalOptimizer(torch.optim.SGD(m2.parameters(), lr=0.1, momentum=0.9), build_prox_map(m2, weight=1.0))
    opt2.load_state_dict(sd)
    assert opt2.prox_steps == 3 and opt2.state is opt2.base.state and opt2.param_groups is opt2.base.param_groups
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])
    x, y = _batch(9)
    for mm, o in ((m, opt), (m2, opt2)):
        o.zero_grad()
        F.cross_entropy(mm(x), y).backward()
        o.step()
    for a, b in zip(m.parameters(), m2.parameters()):
        assert torch.equal(a, b)


def test_momentum_reset_keeps_pruned_groups_dead():
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(10, 5))
    op = GroupEnvelope(3, "row", 1.0, exact=True)
    opt = ProximalOptimizer(torch.optim.SGD([w], lr=0.999, momentum=0.9), {w: op})
    w.grad = torch.zeros_like(w)
    opt.step()
    dead = group_view(w.detach(), "row").abs().sum(1) == 0
    assert int((~dead).sum()) == 3
    buf = opt.state[w]["momentum_buffer"]
    assert torch.all(buf[dead] == 0)


def test_k_level_after_training_and_projection():  # §7.22, k-level guarantee
    m = _net()
    pm = build_prox_map(m, "wgsef", weight=8.0, k=0.5)
    opt = ProximalOptimizer(torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9), pm)
    for i in range(30):
        x, y = _batch(i)
        opt.zero_grad()
        F.cross_entropy(m(x), y).backward()
        opt.step()
    project_top_k_(pm)
    for nz, total, k in nonzero_groups(pm):
        assert nz <= k and k == max(1, round(0.5 * total))
    # coupled BN entries of pruned conv filters are zero too
    conv, bn = m[0], m[1]
    dead = conv.weight.detach().flatten(1).abs().sum(1) == 0
    assert dead.any()
    assert torch.all(bn.weight[dead] == 0) and torch.all(bn.bias[dead] == 0) and torch.all(conv.bias[dead] == 0)


def test_layer_grouping_is_one_joint_operator():
    m = _net()
    pm = build_prox_map(m, "wgsef", weight=1.0, k=1, grouping="layer")
    assert len({id(op) for op in pm.values()}) == 1
    opt = ProximalOptimizer(torch.optim.SGD(m.parameters(), lr=0.999), pm)
    for p in m.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    alive = [bool((p != 0).any()) for p in pm.params()]
    assert sum(alive) == 1


def test_bad_inputs():
    m = _net()
    with pytest.raises(UserError, match="grouping"):
        build_prox_map(m, weight=1.0, grouping="bogus")
    with pytest.raises(UserError, match="k"):
        build_prox_map(m, weight=1.0, k=0)
    other = nn.Parameter(torch.randn(3, 3))
    with pytest.raises(UserError, match="not in the base optimizer"):
        ProximalOptimizer(torch.optim.SGD(m.parameters(), lr=0.1), {other: GroupLasso("row", 1.0)})
    with pytest.raises(UserError, match="k=100"):
        pm = build_prox_map(m, weight=1.0, k=100)
        opt = ProximalOptimizer(torch.optim.SGD(m.parameters(), lr=0.1), pm)
        for p in m.parameters():
            p.grad = torch.zeros_like(p)
        opt.step()


def test_shared_operator_uses_each_parameter_groups_own_lr():
    from sparseforge.optim import ProximalOptimizer
    from sparseforge.prox import L1

    a = torch.nn.Parameter(torch.ones(4, 3))
    b = torch.nn.Parameter(torch.ones(4, 3))
    base = torch.optim.SGD([{"params": [a], "lr": 0.01}, {"params": [b], "lr": 0.1}])
    op = L1(weight=1.0)
    opt = ProximalOptimizer(base, {a: op, b: op})
    a.grad, b.grad = torch.zeros_like(a), torch.zeros_like(b)
    opt.step()
    assert torch.allclose(a, torch.full_like(a, 0.99))  # soft threshold by lr * weight
    assert torch.allclose(b, torch.full_like(b, 0.90))
