"""HyboNet layers, graph models, transformers, losses and metrics."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparseforge import spectral
from sparseforge.hyperbolic import lorentz as L
from sparseforge.hyperbolic.layers import (
    FermiDiracDecoder,
    LorentzAgg,
    LorentzGraphConv,
    LorentzLinear,
    LorentzMultiheadAttention,
    LorentzNCDecoder,
    lorentz_map,
    minkowski_scores,
)
from sparseforge.hyperbolic.losses import fermi_dirac_loss, lp_margin_loss, nc_margin_loss
from sparseforge.hyperbolic.metrics import average_precision, f1_score, roc_auc
from sparseforge.hyperbolic.models import HyboNetEncoder, build_graph_model
from sparseforge.hyperbolic.transformer import LorentzTransformer
from sparseforge.models.seq2seq import Seq2SeqTransformer, greedy_decode

D64 = torch.float64


def lorentz_err(y: torch.Tensor, k: float = 1.0) -> float:
    return float((L.inner(y, y) + k).abs().max().detach())


def rand_points(*shape: int, k: float = 1.0, seed: int = 0, dtype=D64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(*shape, generator=g, dtype=dtype) * 0.5
    return L.expmap0(F.pad(v[..., 1:], (1, 0)), k=k)


def ring_adj(n: int) -> torch.Tensor:
    i = torch.arange(n)
    rows = torch.cat([i, i, i])
    cols = torch.cat([i, (i + 1) % n, (i - 1) % n])
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), torch.full((3 * n,), 1 / 3, dtype=D64), (n, n),
                                   check_invariants=False).coalesce()


# ------------------------------------------------------------------------------ layers on the manifold


@pytest.mark.parametrize("k", (0.5, 1.0, 2.0))
def test_every_layer_output_lies_on_the_hyperboloid_float64(k: float) -> None:
    torch.manual_seed(0)
    x = rand_points(7, 9, k=k)
    lin = LorentzLinear(9, 6, k=k, nonlin=F.relu).double()
    assert lorentz_err(lin(x), k) <= 1e-6 and (lin(x)[:, 0] > 0).all()
    assert lorentz_err(lin(x, residual=torch.randn(7, 6, dtype=D64)), k) <= 1e-6
    heads = LorentzLinear(9, 8, heads=4, k=k).double()
    assert lorentz_err(heads(x).view(7, 4, 2), k) <= 1e-6
    agg = LorentzAgg(k=k)
    pts = rand_points(7, 5, k=k, seed=1)
    assert lorentz_err(agg(pts, ring_adj(7)), k) <= 1e-6
    conv = LorentzGraphConv(9, 5, k=k).double()
    assert lorentz_err(conv(x, ring_adj(7)), k) <= 1e-6
    att = LorentzMultiheadAttention(8, 2, k=k).double()
    q, kv = rand_points(2, 3, 8, k=k, seed=2), rand_points(2, 4, 8, k=k, seed=3)
    assert lorentz_err(att(q, kv, kv), k) <= 1e-6
    enc = HyboNetEncoder(12, 6, 3, k=k).double()
    h = enc(torch.rand(7, 12, dtype=D64), ring_adj(7))
    assert lorentz_err(h, k) <= 1e-6 and (h[:, 0] > 0).all()
    dec = LorentzNCDecoder(6, 3, k=k).double()
    assert lorentz_err(dec.points(), k) <= 1e-9


def test_lorentz_linear_map_formula_and_heads_equal_a_loop() -> None:
    z = torch.randn(5, 12, dtype=D64)
    s = torch.tensor([0.3, 1.0, 2.0], dtype=D64)
    out = lorentz_map(z, s, k=1.5, heads=3)
    for h in range(3):
        zh = z[:, 4 * h: 4 * h + 4]
        t = torch.sigmoid(zh[:, :1]) * s[h].exp() + 1.1 * 1.5 ** 0.5
        sp = zh[:, 1:] * ((t ** 2 - 1.5).sqrt() / zh[:, 1:].norm(dim=1, keepdim=True))
        torch.testing.assert_close(out[:, 4 * h: 4 * h + 4], torch.cat([t, sp], 1))


def test_lorentz_linear_inner_matrix_is_a_plain_linear_with_hybonet_init() -> None:
    lin = LorentzLinear(10, 16)
    assert type(lin.linear) is nn.Linear
    assert (lin.linear.weight[:, 0] == 0).all() and (lin.linear.bias == 0).all()
    assert lin.linear.weight.abs().max() <= 1 / 16 ** 0.5
    torch.testing.assert_close(lin.scale.detach(), torch.tensor(10.0).log())


def test_minkowski_scores_equal_pairwise_inner() -> None:
    q, k = torch.randn(2, 3, 5, dtype=D64), torch.randn(2, 4, 5, dtype=D64)
    ref = torch.stack([torch.stack([L.inner(q[:, i], k[:, j]) for j in range(4)], -1) for i in range(3)], -2)
    torch.testing.assert_close(minkowski_scores(q, k), ref)


# ------------------------------------------------------------------------------ SST / LoRA on Lorentz layers


@pytest.mark.parametrize("method", ("sst", "lora", "relora_star", "galore"))
def test_converted_lorentz_layer_equals_original_at_conversion_and_after_merge(method: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(LorentzLinear(9, 8), LorentzLinear(8, 8))
    x = rand_points(6, 9, dtype=torch.float32)
    ref = model(x)
    spectral.convert(model, method, 3, targets=["*.linear"])
    assert type(model[0].linear) is not nn.Linear or method == "galore"
    torch.testing.assert_close(model(x), ref, atol=1e-5, rtol=1e-5)
    y = model(x)
    assert lorentz_err(y.double()) <= 1e-4 and (y[:, 0] > 0).all()
    if method == "sst":  # train a little with SST: still on the manifold, merge keeps the function
        opt = spectral.build_optimizer(model, lr=1e-2, weight_decay=0.0)
        spectral.attach("sst", model, opt, T3=2, warmup_iter=0, seed=0)
        for _ in range(5):
            opt.zero_grad()
            (model(x)[:, 1:] ** 2).sum().backward()
            opt.step()
        x64 = x.double()
        assert lorentz_err(model.double()(x64)) <= 1e-6
        model.float()
    before = model(x)
    spectral.merge(model)
    assert all(type(m.linear) is nn.Linear for m in model)
    torch.testing.assert_close(model(x), before, atol=1e-5, rtol=1e-5)


def test_sst_converts_every_lorentz_linear_of_hybonet_and_transformer() -> None:
    enc = HyboNetEncoder(20, 8, 3)
    spectral.convert(enc, "sst", 2, targets=["*.linear"])
    assert sum(isinstance(m, spectral.SpectralLinear) for m in enc.modules()) == 3
    tr = LorentzTransformer(11, 13, d_model=16, n_heads=2, n_layers=1)
    n_lin = sum(type(m) is nn.Linear for m in tr.modules())
    spectral.convert(tr, "sst", 2, targets=["*.linear"])
    assert sum(isinstance(m, spectral.SpectralLinear) for m in tr.modules()) == n_lin == 4 + 8 + 2 + 2


# ------------------------------------------------------------------------------ attention masks


def test_lorentz_attention_respects_masks() -> None:
    torch.manual_seed(0)
    att = LorentzMultiheadAttention(8, 2).double().eval()
    q, kv = rand_points(1, 3, 8, seed=4), rand_points(1, 5, 8, seed=5)
    mask = torch.tensor([True, True, True, False, False])[None, None, None, :]
    out = att(q, kv, kv, mask=mask)
    kv2 = kv.clone()
    kv2[:, 3:] = rand_points(1, 2, 8, seed=6)
    torch.testing.assert_close(att(q, kv2, kv2, mask=mask), out)  # masked keys have no influence
    assert not torch.allclose(att(q, kv2, kv2), att(q, kv, kv))


@pytest.mark.parametrize("cls", (Seq2SeqTransformer, LorentzTransformer))
def test_transformers_are_causal_and_ignore_source_padding(cls) -> None:
    torch.manual_seed(0)
    m = cls(12, 14, d_model=16, n_heads=2, n_layers=2, dropout=0.0).eval()
    src = torch.tensor([[4, 5, 6, 2], [7, 8, 2, 0]])
    tgt = torch.tensor([[1, 5, 6, 7, 8], [1, 9, 10, 11, 12]])
    out = m(src, tgt)
    assert out.shape == (2, 5, 14) and torch.isfinite(out).all()
    tgt2 = tgt.clone()
    tgt2[:, 3:] = 4
    torch.testing.assert_close(m(src, tgt2)[:, :3], out[:, :3], atol=1e-5, rtol=1e-5)  # no look-ahead
    padded = torch.cat([src, torch.zeros(2, 3, dtype=torch.long)], 1)
    torch.testing.assert_close(m(padded, tgt), out, atol=1e-5, rtol=1e-5)
    if cls is LorentzTransformer:
        mem, _ = m.double().encode(src)
        assert lorentz_err(mem) <= 1e-6
        m.float()
    hyp = greedy_decode(m, src, bos_id=1, eos_id=2, pad_id=0, max_len=6)
    assert len(hyp) == 2 and all(len(h) <= 6 and 2 not in h and 0 not in h for h in hyp)


def test_greedy_decode_recovers_a_memorised_mapping() -> None:
    """A tiny transformer overfits 'copy the source': greedy decoding reproduces it."""
    torch.manual_seed(0)
    m = Seq2SeqTransformer(8, 8, d_model=32, n_heads=2, n_layers=1, dropout=0.0)
    src = torch.tensor([[4, 5, 6, 2], [6, 7, 4, 2], [5, 5, 7, 2]])
    tgt = torch.cat([torch.ones(3, 1, dtype=torch.long), src], 1)  # <bos> 4 5 6 <eos>
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for _ in range(150):
        opt.zero_grad()
        F.cross_entropy(m(src, tgt[:, :-1]).reshape(-1, 8), tgt[:, 1:].reshape(-1)).backward()
        opt.step()
    m.eval()
    assert greedy_decode(m, src, bos_id=1, eos_id=2, pad_id=0, max_len=8) == src[:, :3].tolist()


# ------------------------------------------------------------------------------ graph models


@pytest.mark.parametrize("geometry", ("hyperbolic", "euclidean"))
@pytest.mark.parametrize("task", ("nc", "lp"))
def test_graph_models_forward_backward_every_parameter(geometry: str, task: str) -> None:
    torch.manual_seed(0)
    m = build_graph_model(geometry, task, 10, 3, dim=8).double()
    x, adj = torch.rand(7, 10, dtype=D64), ring_adj(7)
    out = m(x, adj)
    if task == "nc":
        assert out.shape == (7, 3)
        loss = m.loss(out, torch.tensor([0, 1, 2, 0, 1, 2, 0]))
    else:
        assert out.shape == (7, 8)
        pos, neg = torch.tensor([[0, 1], [1, 2]]), torch.tensor([[0, 3], [4, 6]])
        loss = m.loss(out, pos, neg)
        assert m.score(out, pos).shape == (2,)
    loss.backward()
    for name, p in m.named_parameters():
        if p.requires_grad and not name.endswith(".scale"):
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    if geometry == "hyperbolic":
        h = m.encoder(x, adj)
        assert lorentz_err(h) <= 1e-6


def test_euclidean_classifier_head_stays_dense_under_sst() -> None:
    m = build_graph_model("euclidean", "nc", 30, 2, dim=8)
    spectral.convert(m, "sst", 2, exclude=m.spectral_exclude)
    assert type(m.head) is nn.Linear
    assert all(isinstance(layer.linear, spectral.SpectralLinear) for layer in m.encoder.layers)


# ------------------------------------------------------------------------------ losses


def test_nc_margin_loss_equals_hand_computation() -> None:
    scores = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]])
    y = torch.tensor([0, 1])
    m = 2.0
    hand = 0.0
    for n in range(2):
        for c in range(3):  # c = y_n contributes the constant m
            hand += max(0.0, m - float(scores[n, y[n]]) + float(scores[n, c]))
    assert nc_margin_loss(scores, y, margin=m).item() == pytest.approx(hand / 6)
    assert nc_margin_loss(torch.tensor([[10.0, -10.0]]), torch.tensor([0]), margin=m).item() == pytest.approx(m / 2)


def test_lp_losses_equal_hand_computation() -> None:
    pos, neg = torch.tensor([3.0, -1.0]), torch.tensor([1.0, -5.0])
    m = 30.0
    hand = sum(max(0.0, m - p + s) for p, n in zip(pos.tolist(), neg.tolist()) for s in (p, n)) / 4
    assert lp_margin_loss(pos, neg, margin=m).item() == pytest.approx(hand)
    fd = FermiDiracDecoder(r=2.0, t=1.0)
    d2 = torch.tensor([0.5, 4.0])
    torch.testing.assert_close(fd(d2), 1 / (torch.exp((d2 - 2.0) / 1.0) + 1))
    lp, ln = fd.logits(torch.tensor([0.5])), fd.logits(torch.tensor([4.0]))
    ref = -(torch.log(torch.sigmoid(lp)) + torch.log(1 - torch.sigmoid(ln))) / 2
    torch.testing.assert_close(fermi_dirac_loss(lp, ln), ref.squeeze())


# ------------------------------------------------------------------------------ metrics


def test_roc_auc_equals_brute_force_pairwise_with_ties() -> None:
    g = torch.Generator().manual_seed(0)
    s = torch.randint(0, 6, (40,), generator=g).double()  # many ties
    y = torch.rand(40, generator=g) < 0.4
    pos, neg = s[y], s[~y]
    brute = ((pos[:, None] > neg[None]).double() + 0.5 * (pos[:, None] == neg[None]).double()).mean()
    assert roc_auc(s, y) == pytest.approx(float(brute))
    assert roc_auc(torch.tensor([0.1, 0.9]), torch.tensor([0, 1])) == 1.0


def test_average_precision_and_f1_match_scikit_learn() -> None:
    sk = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(1)
    s = torch.randint(0, 8, (60,), generator=g).double()
    y = (torch.rand(60, generator=g) < 0.5).long()
    assert average_precision(s, y) == pytest.approx(sk.average_precision_score(y.numpy(), s.numpy()))
    p = torch.randint(0, 2, (60,), generator=g)
    assert f1_score(p, y) == pytest.approx(sk.f1_score(y.numpy(), p.numpy()))
    p3, y3 = torch.randint(0, 3, (60,), generator=g), torch.randint(0, 3, (60,), generator=g)
    assert f1_score(p3, y3) == pytest.approx(sk.f1_score(y3.numpy(), p3.numpy(), average="micro"))


def test_every_lorentz_sublayer_of_the_transformer_outputs_manifold_points_float64() -> None:
    torch.manual_seed(0)
    m = LorentzTransformer(12, 14, d_model=16, n_heads=2, n_layers=2, dropout=0.0).double().eval()
    outs: list[tuple[str, torch.Tensor]] = []
    for name, mod in m.named_modules():
        if isinstance(mod, (LorentzLinear, LorentzMultiheadAttention)):
            heads = mod.heads if isinstance(mod, LorentzLinear) else 1
            mod.register_forward_hook(lambda mm, i, o, n=name, h=heads: outs.append((n, o.reshape(*o.shape[:-1], h, -1))))
    m(torch.tensor([[4, 5, 6, 2]]), torch.tensor([[1, 5, 6, 7]]))
    assert len(outs) > 30
    for name, o in outs:
        assert lorentz_err(o) <= 1e-6 and (o[..., 0] > 0).all(), name
