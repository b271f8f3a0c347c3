"""Modular-arithmetic tables for grokking experiments (Power et al., arXiv 2201.02177; Minegishi et al., arXiv 2310.19470).

Each example is a token pair ``(a, b)`` with ``a, b in {0, ..., p-1}`` and the label
``c = op(a, b) mod p``. Nothing is stored: the table and its train/test split are a pure
function of ``(p, op, symmetric, include_diagonal, train_frac, seed)``.

Operations (``op``; aliases in parentheses):

============== ============================ ============== ===========
name           label                        default pairs  classes
============== ============================ ============== ===========
``add``        (a + b) mod p                a <= b         p
``sub``        (a - b) mod p                all p^2        p
``mul``        (a * b) mod p                a <= b         p
``div``        a * b^-1 mod p               gcd(b, p) = 1  p
``x2y2``       (a^2 + b^2) mod p            a <= b         p
               (``x^2+y^2``)
``poly``       (a^2 + ab + b^2) mod p       a <= b         p
               (``x^2+xy+y^2``)
``x3xy``       (a^3 + ab) mod p             all p^2        p
               (``x^3+xy``)
``rand``       fixed random table T[a, b]   all p^2        p
``add_nomod``  a + b                        a <= b         2p - 1
============== ============================ ============== ===========

"a <= b" is the unordered pair set used for commutative operations (``symmetric=True``;
``include_diagonal=False`` drops ``a == b``). The split permutes the pairs with a seeded
``torch.Generator`` and puts the first ``floor(train_frac * N)`` in training: for the default
``p=67, op="add"`` that is 911 train and 1,367 test pairs out of 2,278.

Two input encodings are provided by :class:`ModularData`: token ids ``[a, b]`` (long, for
the one-layer transformer and the embedding MLP) and the concatenation of two one-hot
vectors (float, ``2p`` wide, for a plain MLP).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from ..errors import UserError
from ..registry import register_dataset
from .digits import DataSplits

__all__ = ["MODULAR_OPS", "ModularData", "modular_arithmetic", "modular_labels", "modular"]

# canonical name -> (commutative, number of classes as a function of p)
MODULAR_OPS: dict[str, bool] = {
    "add": True,
    "sub": False,
    "mul": True,
    "div": False,
    "x2y2": True,
    "poly": True,
    "x3xy": False,
    "rand": False,
    "add_nomod": True,
}
_ALIASES = {
    "+": "add",
    "-": "sub",
    "*": "mul",
    "/": "div",
    "x^2+y^2": "x2y2",
    "x^2+xy+y^2": "poly",
    "x^3+xy": "x3xy",
}
_RAND_TABLE_SEED = 1234  # the "rand" table is fixed; only the split depends on ``seed``


def _canonical_op(op: str) -> str:
    key = _ALIASES.get(op.replace(" ", ""), op)
    if key not in MODULAR_OPS:
        choices = ", ".join(list(MODULAR_OPS) + list(_ALIASES))
        raise UserError(f"unknown modular op {op!r}; choose one of: {choices}")
    return key


def modular_labels(a: torch.Tensor, b: torch.Tensor, p: int, op: str = "add") -> torch.Tensor:
    """Labels ``op(a, b) mod p`` for integer tensors ``a`` and ``b`` (same shape).

    Args:
        a: First operands, integers in ``[0, p)``.
        b: Second operands, integers in ``[0, p)``; for ``div`` every ``b`` must be invertible mod p.
        p: Modulus.
        op: Operation name or alias (see the module docstring).

    Returns:
        int64 tensor of labels, the shape of ``a``.
    """
    op = _canonical_op(op)
    a, b = a.long(), b.long()
    if op == "add":
        return (a + b) % p
    if op == "sub":
        return (a - b) % p
    if op == "mul":
        return (a * b) % p
    if op == "div":
        inv = torch.tensor([pow(v, -1, p) if math.gcd(v, p) == 1 else -1 for v in range(p)], dtype=torch.long)
        inv_b = inv[b]
        if bool((inv_b < 0).any()):
            raise UserError(f"div needs every b to be invertible mod {p}")
        return (a * inv_b) % p
    if op == "x2y2":
        return (a * a + b * b) % p
    if op == "poly":
        return (a * a + a * b + b * b) % p
    if op == "x3xy":
        return ((a * a % p) * a + a * b) % p
    if op == "rand":
        g = torch.Generator().manual_seed(_RAND_TABLE_SEED + p)
        table = torch.randint(0, p, (p, p), generator=g)  # (p, p)
        return table[a, b]
    return a + b  # add_nomod


@dataclass
class ModularData:
    """A modular-arithmetic table split into train and test.

    Attributes:
        train_pairs: Token ids ``[a, b]``, long ``(N_train, 2)``.
        train_labels: long ``(N_train,)``.
        test_pairs: long ``(N_test, 2)``.
        test_labels: long ``(N_test,)``.
        p: Modulus (and vocabulary size).
        op: Canonical operation name.
        num_classes: ``p``, or ``2p - 1`` for ``add_nomod``.
        symmetric: Whether only unordered pairs ``a <= b`` are used.
        include_diagonal: Whether pairs ``a == b`` are included (symmetric tables only).
        train_frac: Fraction of the pairs used for training.
        seed: Seed of the split permutation.
    """

    train_pairs: torch.Tensor
    train_labels: torch.Tensor
    test_pairs: torch.Tensor
    test_labels: torch.Tensor
    p: int
    op: str
    num_classes: int
    symmetric: bool
    include_diagonal: bool
    train_frac: float
    seed: int

    @property
    def vocab_size(self) -> int:
        """Number of distinct input tokens (``p``)."""
        return self.p

    def one_hot(self, pairs: torch.Tensor) -> torch.Tensor:
        """Concatenated one-hot encoding ``[onehot(a), onehot(b)]``, float32 ``(N, 2p)``."""
        return torch.nn.functional.one_hot(pairs, self.p).flatten(1).float()  # (N, 2, p) -> (N, 2p)

    @property
    def train_onehot(self) -> torch.Tensor:
        return self.one_hot(self.train_pairs)

    @property
    def test_onehot(self) -> torch.Tensor:
        return self.one_hot(self.test_pairs)

    def to_splits(self, encoding: Literal["tokens", "onehot"] = "tokens") -> DataSplits:
        """This table as a :class:`DataSplits` with token-id or one-hot inputs."""
        meta = {"name": "modular", "p": self.p, "op": self.op, "vocab_size": self.p, "seed": self.seed}
        if encoding == "tokens":
            return DataSplits(
                self.train_pairs, self.train_labels, self.test_pairs, self.test_labels,
                num_classes=self.num_classes, input_shape=(2,), input_dtype="long", meta=meta,
            )  # fmt: skip
        if encoding == "onehot":
            return DataSplits(
                self.train_onehot, self.train_labels, self.test_onehot, self.test_labels,
                num_classes=self.num_classes, input_shape=(2 * self.p,), input_dtype="float", meta=meta,
            )  # fmt: skip
        raise UserError(f"unknown encoding {encoding!r}; choose 'tokens' or 'onehot'")


def modular_arithmetic(
    p: int = 67,
    op: str = "add",
    train_frac: float = 0.4,
    seed: int = 0,
    *,
    symmetric: bool | None = None,
    include_diagonal: bool = True,
) -> ModularData:
    """Generate the table ``op(a, b) mod p`` and split it deterministically.

    Args:
        p: Modulus, at least 2 (the paper uses 67).
        op: Operation name or alias (see the module docstring).
        train_frac: Fraction of the pairs used for training, in (0, 1).
        seed: Seed of the permutation that decides the split.
        symmetric: Use unordered pairs ``a <= b`` only. Default: True for commutative ops.
        include_diagonal: Keep the pairs ``a == b`` when ``symmetric`` (default True).

    Returns:
        A :class:`ModularData`; every pair of the table is in exactly one of train / test.

    Raises:
        UserError: unknown op, ``p < 2``, ``train_frac`` outside (0, 1), or an empty split.
    """
    if isinstance(p, bool) or not isinstance(p, int) or p < 2:
        raise UserError(f"p must be an integer >= 2, got {p!r}")
    if not 0.0 < float(train_frac) < 1.0:
        raise UserError(f"train_frac must be in (0, 1), got {train_frac}")
    op = _canonical_op(op)
    if symmetric is None:
        symmetric = MODULAR_OPS[op]

    ar = torch.arange(p)
    a, b = torch.meshgrid(ar, ar, indexing="ij")  # (p, p) each
    a, b = a.reshape(-1), b.reshape(-1)  # (p*p,), row-major in (a, b)
    keep = torch.ones_like(a, dtype=torch.bool)
    if symmetric:
        keep &= (a <= b) if include_diagonal else (a < b)
    if op == "div":
        keep &= torch.tensor([math.gcd(v, p) == 1 for v in range(p)])[b]
    pairs = torch.stack([a[keep], b[keep]], dim=1)  # (N, 2)
    labels = modular_labels(pairs[:, 0], pairs[:, 1], p, op)  # (N,)

    n = pairs.shape[0]
    n_train = math.floor(float(train_frac) * n)
    if n_train < 1 or n_train >= n:
        raise UserError(f"train_frac={train_frac} leaves an empty split of the {n} pairs; use a value nearer 0.5")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    tr, te = perm[:n_train], perm[n_train:]
    return ModularData(
        train_pairs=pairs[tr].contiguous(),
        train_labels=labels[tr].contiguous(),
        test_pairs=pairs[te].contiguous(),
        test_labels=labels[te].contiguous(),
        p=p,
        op=op,
        num_classes=2 * p - 1 if op == "add_nomod" else p,
        symmetric=bool(symmetric),
        include_diagonal=bool(include_diagonal),
        train_frac=float(train_frac),
        seed=int(seed),
    )


@register_dataset("modular", input_shape=(2,), input_dtype="long", needs_path=False)
def modular(
    *,
    p: int = 67,
    op: str = "add",
    train_frac: float = 0.4,
    seed: int = 0,
    encoding: Literal["tokens", "onehot"] = "tokens",
) -> DataSplits:
    """Registered builder: :func:`modular_arithmetic` as a :class:`DataSplits`.

    ``encoding="tokens"`` gives long ``(N, 2)`` token ids (``meta["vocab_size"] = p``);
    ``"onehot"`` gives float ``(N, 2p)``.
    """
    return modular_arithmetic(p, op, train_frac, seed).to_splits(encoding)
