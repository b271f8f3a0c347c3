"""Training procedures: spectral-method wiring, graph tasks (NC / LP) and machine translation.

Paper: Zhao et al., "Sparse Spectral Training and Inference on Euclidean and Hyperbolic Neural
Networks", arXiv:2405.15481 — SST vs full rank, LoRA and ReLoRA* on HyboNet (Chen et al.,
arXiv:2105.14686) and on Euclidean GCNs / Transformers. Every procedure trains through
:func:`sparseforge.engine.fit`; state that must survive a resume (SST / ReLoRA controllers, the
negative sampler's generator, the best-validation tracker) lives in :class:`~sparseforge.engine.Callback`
objects with ``state_dict`` / ``load_state_dict``, so every fit declares itself resumable mid-stage
(``stateful=()``: inside a ``Run.cached`` stage it checkpoints periodically).

* :func:`setup_method` — ``spectral.convert`` -> ``spectral.build_optimizer`` -> ``spectral.attach``
  for ``full``, ``lora``, ``relora_star`` (the paper's ReLoRA*: full optimizer-state reset),
  ``relora`` (our hybrid: 0.99 magnitude pruning of the moments), ``galore`` and ``sst``;
* :func:`prepare_nc` / :func:`train_nc` — full-batch node classification; model selection on the
  validation metric (HGCN: test metrics are reported at the best validation epoch), early stopping
  after ``patience`` evaluations without improvement;
* :func:`prepare_lp` / :func:`train_lp` — full-batch link prediction, training negatives resampled
  every epoch (one per training edge), message passing on the training edges only;
* :func:`train_translation` / :func:`evaluate_bleu` — token-level cross-entropy with label smoothing,
  greedy decoding, corpus BLEU (sacrebleu).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import spectral
from ..data.graphs import EdgeSplit, GraphData, edge_split, node_split, normalized_adjacency, row_normalize
from ..engine import Callback, EvalCallback, FitState, fit
from ..errors import UserError
from .metrics import accuracy, average_precision, f1_score, roc_auc

METHODS = ("full", "lora", "relora_star", "relora", "galore", "sst")
METHOD_LABELS = {
    "full": "full rank",
    "lora": "LoRA",
    "relora_star": "ReLoRA*",
    "relora": "ReLoRA (hybrid: 0.99 magnitude pruning of moments)",
    "galore": "GaLore",
    "sst": "SST",
}

# --------------------------------------------------------------------------------------------
# spectral wiring
# --------------------------------------------------------------------------------------------


class ControllerCallback(Callback):
    """Carries an SST / ReLoRA controller's state (step, iteration, generator) through fit checkpoints."""

    def __init__(self, controller: Any) -> None:
        self.controller = controller

    def state_dict(self) -> dict[str, Any]:
        return {} if self.controller is None else self.controller.state_dict()

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        if self.controller is not None and sd:
            self.controller.load_state_dict(sd)


def setup_method(model: nn.Module, method: str, *, rank: int, lr: float, weight_decay: float = 0.0,
                 targets: Sequence[str] | None = None, exclude: Sequence[str] = (), sst_T3: int = 200, sst_T2: int | None = None,
                 sst_warmup: int = 20, sst_sampling: str = "sigma", d: int | None = None,
                 relora_reset_every: int = 200, relora_rewarm: int = 20, galore_proj_gap: int = 200,
                 seed: int = 0, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 layer_opts: dict[str, Any] | None = None) -> tuple[nn.Module, torch.optim.Optimizer, ControllerCallback]:
    """Convert ``model`` for ``method``, build its AdamW (or GaLore) optimizer and attach its controller.

    ``targets`` / ``exclude`` are module names or patterns (``spectral.convert``); the model's own
    ``spectral_exclude`` attribute (e.g. a Euclidean classifier head) is always excluded.
    Returns (model, optimizer, callback holding the controller, whose ``.controller`` may be None).
    """
    if method not in METHODS:
        raise UserError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    if method != "full":
        excl = [*exclude, *getattr(model, "spectral_exclude", ())]
        spectral.convert(model, method, rank, targets=list(targets) if targets is not None else None,
                         exclude=excl, **(layer_opts or {}))
    opt = spectral.build_optimizer(model, lr=lr, weight_decay=weight_decay, betas=betas, eps=eps,
                                   galore_update_proj_gap=galore_proj_gap)
    ctl = None
    if method == "sst":
        ctl = spectral.attach("sst", model, opt, T3=sst_T3, T2=sst_T2, d=d, warmup_iter=sst_warmup,
                              sampling=sst_sampling, seed=seed)
    elif method in ("relora", "relora_star"):
        ctl = spectral.attach(method, model, opt, reset_every=relora_reset_every, rewarm=relora_rewarm, seed=seed)
    return model, opt, ControllerCallback(ctl)


def trainable_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --------------------------------------------------------------------------------------------
# model selection
# --------------------------------------------------------------------------------------------


class BestValCallback(EvalCallback):
    """Evaluate periodically; remember the metrics at the best validation ``key``; early-stop.

    Args:
        eval_fn: model -> metrics dict (validation and test metrics).
        key: validation metric to maximise (e.g. ``"val_f1"``).
        every: evaluation period in epochs.
        patience: stop after this many evaluations without improvement (None: never).
    """

    def __init__(self, eval_fn: Callable[[nn.Module], dict[str, float]], *, key: str, every: int = 1,
                 patience: int | None = None) -> None:
        super().__init__(eval_fn, every=every, unit="epoch")
        self.key, self.patience = key, patience
        self.best: dict[str, float] = {}
        self.best_epoch = -1
        self.bad = 0

    def _run(self, state: FitState) -> None:
        super()._run(state)
        row = state.history[-1]
        val = row.get(self.key)
        if val is None:
            raise UserError(f"the evaluation returned no {self.key!r}; it returned {sorted(row)}")
        if not self.best or val > self.best[self.key]:
            self.best = {k: float(v) for k, v in row.items() if isinstance(v, (int, float))}
            self.best_epoch, self.bad = state.epoch, 0
        else:
            self.bad += 1
            if self.patience is not None and self.bad >= self.patience:
                state.stop = True

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad": self.bad}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.best, self.best_epoch, self.bad = dict(sd.get("best", {})), sd.get("best_epoch", -1), sd.get("bad", 0)


# --------------------------------------------------------------------------------------------
# node classification
# --------------------------------------------------------------------------------------------


@dataclass
class NCData:
    """Tensors of a full-batch node-classification task."""

    x: torch.Tensor
    adj: torch.Tensor
    y: torch.Tensor
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    num_classes: int

    def to(self, device: Any) -> NCData:
        return NCData(self.x.to(device), self.adj.to(device), self.y.to(device), self.train.to(device),
                      self.val.to(device), self.test.to(device), self.num_classes)


def prepare_nc(graph: GraphData, *, split_seed: int = 0, val: float = 0.1, test: float = 0.6,
               normalize_features: bool = True) -> NCData:
    """Row-normalised features (HyboNet NC), row-normalised A + I, a stratified split (or the graph's own)."""
    if graph.y is None:
        raise UserError(f"graph {graph.name!r} has no labels: node classification needs them")
    if {"train", "val", "test"} <= set(graph.splits):
        sp = graph.splits
    else:
        sp = node_split(graph.y, val=val, test=test, seed=split_seed)
    x = row_normalize(graph.x) if normalize_features else graph.x
    return NCData(x.float(), normalized_adjacency(graph.edge_index, graph.num_nodes), graph.y.long(),
                  sp["train"], sp["val"], sp["test"], graph.num_classes)


def nc_metrics(scores: torch.Tensor, data: NCData) -> dict[str, float]:
    pred = scores.argmax(-1)
    out = {}
    for part in ("val", "test"):
        idx = getattr(data, part)
        out[f"{part}_f1"] = f1_score(pred[idx], data.y[idx], num_classes=data.num_classes)
        out[f"{part}_acc"] = accuracy(pred[idx], data.y[idx])
    return out


def train_nc(model: nn.Module, data: NCData, optimizer: torch.optim.Optimizer, *, epochs: int,
             eval_every: int = 1, patience: int | None = None, grad_clip: float | None = None,
             callbacks: Sequence[Callback] = (), run: Any = None, series: str | None = None,
             device: str = "cpu") -> dict[str, float]:
    """Full-batch training (one optimizer step per epoch) of a ``NodeClassifier``-like model.

    The model maps (x, adj) to (N, C) scores and has ``loss(scores, y)``. Returns the validation and
    test metrics at the best validation F1, plus ``best_epoch`` and ``epochs_run``.
    """
    data = data.to(device)
    raw = model

    def step(m: nn.Module, _batch: Any) -> torch.Tensor:
        scores = m(data.x, data.adj)
        return raw.loss(scores[data.train], data.y[data.train])

    def eval_fn(m: nn.Module) -> dict[str, float]:
        return nc_metrics(m(data.x, data.adj), data)

    best = BestValCallback(eval_fn, key="val_f1", every=eval_every, patience=patience)
    state = fit(model, [0], optimizer, step_fn=step, epochs=epochs, callbacks=[*callbacks, best], run=run,
                series=series, grad_clip=grad_clip, device=device, desc=series or "nc", stateful=())
    return {**best.best, "best_epoch": best.best_epoch, "epochs_run": state.epoch, "final_loss": state.loss}


# --------------------------------------------------------------------------------------------
# link prediction
# --------------------------------------------------------------------------------------------


@dataclass
class LPData:
    """Tensors of a full-batch link-prediction task (adjacency on the training edges only)."""

    x: torch.Tensor
    adj: torch.Tensor
    split: EdgeSplit

    def to(self, device: Any) -> LPData:
        s = self.split
        moved = EdgeSplit(s.n, s.train_pos.to(device), s.val_pos.to(device), s.val_neg.to(device),
                          s.test_pos.to(device), s.test_neg.to(device), s.forbidden, s.negatives)
        return LPData(self.x.to(device), self.adj.to(device), moved)


def prepare_lp(graph: GraphData, *, split_seed: int = 0, val: float = 0.05, test: float = 0.1,
               negatives: str = "ours", normalize_features: bool = False) -> LPData:
    """Edge split (HGCN's), the row-normalised A + I of the training edges; raw features (HyboNet LP)."""
    sp = edge_split(graph.edge_index, graph.num_nodes, val=val, test=test, seed=split_seed, negatives=negatives)  # type: ignore[arg-type]
    x = row_normalize(graph.x) if normalize_features else graph.x
    return LPData(x.float(), sp.adjacency(), sp)


class NegativeSampler(Callback):
    """Draws the training negatives of every epoch; its generator state survives a resume."""

    def __init__(self, split: EdgeSplit, *, seed: int = 0) -> None:
        self.split = split
        self.generator = torch.Generator().manual_seed(int(seed))

    def sample(self) -> torch.Tensor:
        return self.split.sample_train_negatives(generator=self.generator)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        if "generator" in sd:
            self.generator.set_state(sd["generator"])


def lp_metrics(model: nn.Module, h: torch.Tensor, split: EdgeSplit) -> dict[str, float]:
    out = {}
    for part in ("val", "test"):
        pos, neg = getattr(split, f"{part}_pos"), getattr(split, f"{part}_neg")
        s = torch.cat([model.score(h, pos), model.score(h, neg)])
        lab = torch.cat([torch.ones(pos.shape[1]), torch.zeros(neg.shape[1])])
        out[f"{part}_roc_auc"] = roc_auc(s, lab)
        out[f"{part}_ap"] = average_precision(s, lab)
    return out


def train_lp(model: nn.Module, data: LPData, optimizer: torch.optim.Optimizer, *, epochs: int,
             eval_every: int = 1, patience: int | None = None, grad_clip: float | None = None, seed: int = 0,
             callbacks: Sequence[Callback] = (), run: Any = None, series: str | None = None,
             device: str = "cpu") -> dict[str, float]:
    """Full-batch training of a ``LinkPredictor``-like model (``score``, ``loss``); metrics at the best val ROC-AUC."""
    data = data.to(device)
    raw = model
    sampler = NegativeSampler(data.split, seed=seed)

    def step(m: nn.Module, _batch: Any) -> torch.Tensor:
        h = m(data.x, data.adj)
        neg = sampler.sample().to(h.device)
        return raw.loss(h, data.split.train_pos, neg)

    def eval_fn(m: nn.Module) -> dict[str, float]:
        return lp_metrics(raw, m(data.x, data.adj), data.split)

    best = BestValCallback(eval_fn, key="val_roc_auc", every=eval_every, patience=patience)
    state = fit(model, [0], optimizer, step_fn=step, epochs=epochs, callbacks=[*callbacks, sampler, best], run=run,
                series=series, grad_clip=grad_clip, device=device, desc=series or "lp", stateful=())
    return {**best.best, "best_epoch": best.best_epoch, "epochs_run": state.epoch, "final_loss": state.loss}


# --------------------------------------------------------------------------------------------
# machine translation
# --------------------------------------------------------------------------------------------


def warmup_cosine(total: int, *, warmup: int, min_frac: float = 0.1) -> Callable[[int], float]:
    """LR multiplier: linear warm-up over ``warmup`` steps, then cosine decay to ``min_frac``."""
    warm = max(1, int(warmup))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = min(1.0, (step - warm) / max(1, total - warm))
        return min_frac + (1 - min_frac) * 0.5 * (1 + math.cos(math.pi * t))

    return f


def seq2seq_loss(logits: torch.Tensor, target: torch.Tensor, *, pad_id: int, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean token cross-entropy over non-pad targets: logits (B, T, V), target (B, T)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=pad_id,
                           label_smoothing=label_smoothing)


def train_translation(model: nn.Module, batches: Any, optimizer: torch.optim.Optimizer, *, steps: int,
                      pad_id: int, label_smoothing: float = 0.1, warmup: int = 100, min_lr_frac: float = 0.1,
                      grad_clip: float | None = 1.0, eval_fn: Callable[[nn.Module], dict[str, float]] | None = None,
                      eval_every: int = 0, callbacks: Sequence[Callback] = (), run: Any = None,
                      series: str | None = None, device: str = "cpu") -> FitState:
    """Teacher-forced training of an encoder-decoder ``model(src, tgt_in) -> logits`` on (src, tgt) batches.

    ``tgt`` holds <bos> y <eos> (padded); the model reads tgt[:, :-1] and predicts tgt[:, 1:].
    """
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(steps, warmup=warmup, min_frac=min_lr_frac))

    def step(m: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        src, tgt = batch
        logits = m(src, tgt[:, :-1])  # (B, T-1, V)
        return seq2seq_loss(logits, tgt[:, 1:], pad_id=pad_id, label_smoothing=label_smoothing)

    cbs = list(callbacks)
    if eval_fn is not None and eval_every > 0:
        cbs.append(EvalCallback(eval_fn, every=eval_every, unit="step"))
    return fit(model, batches, optimizer, step_fn=step, steps=steps, scheduler=sched, callbacks=cbs, run=run,
               series=series, grad_clip=grad_clip, device=device, desc=series or "mt", stateful=())


@torch.no_grad()
def translate(model: nn.Module, src: list[list[int]], *, bos_id: int, eos_id: int, pad_id: int,
              max_len: int | Callable[[int], int] = 64, batch_size: int = 128, device: str = "cpu") -> list[list[int]]:
    """Greedy translations (token ids, without <bos>/<eos>) of source id lists, in order."""
    from ..models.seq2seq import greedy_decode, pad_batch

    was = model.training
    model.eval()
    out: list[list[int]] = []
    order = sorted(range(len(src)), key=lambda i: len(src[i]))  # length-sorted batches decode faster
    res: dict[int, list[int]] = {}
    for b in range(0, len(order), batch_size):
        idx = order[b:b + batch_size]
        s = pad_batch([src[i] for i in idx], pad_id).to(device)
        longest = max(len(src[i]) for i in idx)
        ml = max_len(longest) if callable(max_len) else max_len
        hyp = greedy_decode(model, s, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id, max_len=ml)
        for i, h in zip(idx, hyp):
            res[i] = h
    out = [res[i] for i in range(len(src))]
    model.train(was)
    return out


def evaluate_bleu(model: nn.Module, src: list[list[int]], refs: list[str], *, vocab: Any, bos_id: int, eos_id: int,
                  pad_id: int, max_len: int | Callable[[int], int] = 64, batch_size: int = 128,
                  device: str = "cpu", tokenize: str = "13a") -> dict[str, float]:
    """Corpus BLEU (sacrebleu) of greedy translations of ``src`` against reference strings ``refs``."""
    from ..data.translation import corpus_bleu

    hyp_ids = translate(model, src, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id, max_len=max_len,
                        batch_size=batch_size, device=device)
    hyps = [vocab.decode(h) for h in hyp_ids]
    exact = sum(h == r for h, r in zip(hyps, refs)) / max(1, len(refs))
    return {"bleu": corpus_bleu(hyps, refs, tokenize=tokenize), "exact_match": exact}


__all__ = [
    "METHODS",
    "METHOD_LABELS",
    "BestValCallback",
    "ControllerCallback",
    "LPData",
    "NCData",
    "NegativeSampler",
    "evaluate_bleu",
    "lp_metrics",
    "nc_metrics",
    "prepare_lp",
    "prepare_nc",
    "seq2seq_loss",
    "setup_method",
    "train_lp",
    "train_nc",
    "train_translation",
    "trainable_params",
    "translate",
    "warmup_cosine",
]
