import pytest
import torch
from torch import nn

from sparseforge import masks as M
from sparseforge.errors import DataFormatError, UserError


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))


def _random_masks(model):
    g = torch.Generator().manual_seed(1)
    return {n: torch.rand(p.shape, generator=g) > 0.5 for n, p in model.named_parameters() if p.dim() > 1}


OPTIMIZERS = [
    (torch.optim.SGD, {"lr": 0.01, "momentum": 0.9}),
    (torch.optim.SGD, {"lr": 0.01, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-2}),
    (torch.optim.Adam, {"lr": 1e-2}),
    (torch.optim.AdamW, {"lr": 1e-2, "weight_decay": 1.0}),
]


@pytest.mark.parametrize("opt_cls,kw", OPTIMIZERS)
def test_masked_weights_stay_zero_through_optimizer_steps(opt_cls, kw):
    model = _model()
    opt = opt_cls(model.parameters(), **kw)
    x = torch.randn(8, 1, 8, 8)
    for _ in range(3):  # build up momentum / Adam moments densely first
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    masks = _random_masks(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    M.attach(model, masks, opt)
    for _ in range(5):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    params = dict(model.named_parameters())
    for n, m in masks.items():
        assert torch.count_nonzero(params[n][~m]) == 0, n
        assert not torch.equal(params[n][m], before[n][m]), "kept weights must still train"
        st = opt.state[params[n]]
        for v in st.values():
            if isinstance(v, torch.Tensor) and v.shape == m.shape:
                assert torch.count_nonzero(v[~m]) == 0


def test_bake_detaches_hooks_and_keeps_zeros():
    model = _model()
    masks = _random_masks(model)
    ms = M.attach(model, masks)
    ms.bake()
    w = dict(model.named_parameters())["0.weight"]
    model(torch.randn(2, 1, 8, 8)).sum().backward()
    assert w.grad is not None and torch.count_nonzero(w.grad[~masks["0.weight"]]) > 0  # hook removed
    assert torch.count_nonzero(w[~masks["0.weight"]]) == 0


def test_attach_validates_names_and_shapes():
    model = _model()
    with pytest.raises(UserError, match="matches no parameter"):
        M.attach(model, {"nope.weight": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(UserError, match="shape"):
        M.attach(model, {"0.weight": torch.ones(3, dtype=torch.bool)})


def test_save_load_sparsity_roundtrip(tmp_path):
    model = _model()
    masks = _random_masks(model)
    M.attach(model, masks).bake()
    path = tmp_path / "s.pt"
    M.save_sparsity(model, path, masks=masks, removed={"0": [1, 2]}, extra={"method": "test"})
    fresh = _model()
    with torch.no_grad():
        for p in fresh.parameters():
            p.add_(1.0)  # different values: only the pattern travels
    rec = M.load_sparsity(fresh, path)
    assert rec["removed"] == {"0": [1, 2]} and rec["extra"]["method"] == "test"
    assert rec["library_version"]
    for n, p in fresh.named_parameters():
        if n in masks:
            assert torch.equal(p != 0, masks[n] & (p != 0))
            assert torch.count_nonzero(p[~masks[n]]) == 0
            assert torch.equal(rec["masks"][n], masks[n])
    assert abs(M.sparsity(rec["masks"]) - M.sparsity(masks)) < 1e-12


def test_load_sparsity_rejects_wrong_model_and_files(tmp_path):
    model = _model()
    path = tmp_path / "s.pt"
    M.save_sparsity(model, path)
    with pytest.raises(DataFormatError, match="saved for a Sequential"):
        M.load_sparsity(nn.Linear(3, 3), path)
    other = nn.Sequential(nn.Conv2d(1, 5, 3))
    with pytest.raises(DataFormatError, match="does not fit"):
        M.load_sparsity(other, path)
    with pytest.raises(DataFormatError, match="no such"):
        M.load_sparsity(model, tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(DataFormatError):
        M.load_sparsity(model, bad)


def test_masks_follow_the_model_to_another_dtype():
    model = _model()
    masks = _random_masks(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    ms = M.attach(model, masks, opt)
    model.double()  # moved after attach: the same path as .to("cuda")
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(4, 1, 8, 8, dtype=torch.float64)).square().mean().backward()
        opt.step()
    params = dict(model.named_parameters())
    for n, m in masks.items():
        assert params[n].dtype == torch.float64
        assert torch.count_nonzero(params[n][~m]) == 0
        assert torch.count_nonzero(params[n].grad[~m]) == 0
    ms.detach()
