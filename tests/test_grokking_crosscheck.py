"""The grokking-ticket pipeline against a minimal plain-PyTorch loop: same init, mask and data must give the
same trajectory (a masked forward W ⊙ m, plain AdamW, no hooks)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sparseforge.data import modular_arithmetic
from sparseforge.models.grokking import ModMLP, float64_cross_entropy
from sparseforge.pruning import prunable_params, rewind, snapshot, ticket_mask
from sparseforge.recipes.grokking_tickets import GrokkingTicketsConfig, train_run


def _plain_masked_loop(theta0, mask, data, *, steps, lr, wd, betas, eps, p, d_emb, d_hidden):
    """Textbook lottery-ticket retraining: parameters stay dense, the forward multiplies by the mask."""
    xtr, ytr, xte, yte = data
    model = ModMLP(p, d_emb=d_emb, d_hidden=d_hidden)
    model.load_state_dict(theta0)
    params = dict(model.named_parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=betas, eps=eps, weight_decay=wd)

    def forward(x):
        masked = {n: params[n] * mask[n] for n in params}
        e = F.embedding(x, masked["embed"]).sum(1)  # (B, d_emb)
        h = torch.relu(e @ masked["w_in"].T)
        return (h @ masked["w_out"].T) @ masked["unembed"]

    losses, test_acc = [], []
    for _ in range(steps):
        loss = float64_cross_entropy(forward(xtr), ytr)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        with torch.no_grad():
            test_acc.append(float((forward(xte).argmax(-1) == yte).double().mean()))
    return losses, test_acc


def test_ticket_pipeline_equals_a_plain_masked_forward_loop():
    cfg = GrokkingTicketsConfig(p=23, frac_train=0.5, d_emb=48, d_hidden=24, lr=3e-3, steps=200, eval_every=1,
                                checkpoint_every=50)
    md = modular_arithmetic(cfg.p, cfg.op, cfg.frac_train, 0)
    data = (md.train_pairs, md.train_labels, md.test_pairs, md.test_labels)
    torch.manual_seed(0)
    model = ModMLP(cfg.p, d_emb=cfg.d_emb, d_hidden=cfg.d_hidden, num_classes=md.num_classes)
    names = list(prunable_params(model))
    theta0 = snapshot(model)
    dense = train_run(cfg, model, data, names, masks=None, steps=300, weight_decay=cfg.weight_decay,
                      stop_after=None, run=None, series="dense")
    mask = ticket_mask(dense.snapshots["final"], 0.6, names=names)
    # the library's way: rewind, attach masks (gradient + post-step hooks), fresh AdamW, fit
    rewind(model, theta0, mask)
    tr = train_run(cfg, model, data, names, masks=mask, steps=200, weight_decay=cfg.weight_decay,
                   stop_after=None, run=None, series="ticket")
    ours_loss = [r["train_loss"] for r in tr.history[1:]]  # history[0] is the evaluation at step 0
    ours_acc = [r["test_acc"] for r in tr.history[1:]]
    # the plain way
    plain_loss, plain_acc = _plain_masked_loop(theta0, mask, data, steps=200, lr=cfg.lr, wd=cfg.weight_decay,
                                               betas=(0.9, 0.98), eps=cfg.eps, p=cfg.p, d_emb=cfg.d_emb,
                                               d_hidden=cfg.d_hidden)
    # ours logs the loss after each step, the plain loop the loss it stepped on: align by one step
    torch.testing.assert_close(torch.tensor(ours_loss[:-1]), torch.tensor(plain_loss[1:]), rtol=1e-9, atol=1e-12)
    assert ours_acc == plain_acc
