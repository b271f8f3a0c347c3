"""Byte-level text corpora for language modelling (``sst-lm``), and a (B, T) window sampler.

* :func:`stdlib_corpus` — the offline default: the ``.py`` source files of the Python standard
  library found on the machine (``sysconfig.get_paths()["stdlib"]``, ``site-packages`` excluded).
  Deterministic: files are ordered by the SHA-1 of their path relative to the stdlib root, read in
  that order until ``max_bytes`` (default 4 MB of the ~30 MB of CPython 3.11), and a file goes to
  validation when its hash falls in the ``val_fraction`` bucket — the same files on every machine
  with the same Python version. Tokens are bytes (V = 256).
* :func:`load_text_corpus` — user corpora: one text file or a directory of files (read
  recursively in sorted order, hidden files skipped); the last ``val_fraction`` of the bytes is the
  validation stream. A missing or empty path is a one-line
  :class:`~sparseforge.errors.DataFormatError`.
* :func:`load_text_bytes` — one file's bytes as tokens; :func:`load_token_stream` — a raw
  ``uint16`` ``.bin`` or ``.npy`` array of token ids (pre-tokenised corpora).
* :class:`WindowSampler` — re-iterable random (x, y) windows of shape (B, T), y = x shifted by one.
"""

from __future__ import annotations

import hashlib
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataFormatError


@dataclass
class TextCorpus:
    """A train and a validation token stream (1-D int64) and where they came from."""

    train: torch.Tensor
    val: torch.Tensor
    vocab_size: int = 256
    source: str = ""
    files: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "n_files": len(self.files), "train_tokens": int(self.train.numel()),
                "val_tokens": int(self.val.numel()), "vocab_size": self.vocab_size}


def _bytes_tensor(b: bytes) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(b, dtype=np.uint8).astype(np.int64))


def _hash(rel: str) -> int:
    return int(hashlib.sha1(rel.encode("utf-8")).hexdigest()[:12], 16)


def stdlib_files(root: str | Path | None = None) -> list[Path]:
    """The stdlib's ``.py`` files in the deterministic (hash) order."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise DataFormatError(f"Python standard library not found at {root}; pass corpus=<text file or directory>")
    files = [p for p in root.rglob("*.py") if "site-packages" not in p.parts and "dist-packages" not in p.parts]
    return sorted(files, key=lambda p: (_hash(p.relative_to(root).as_posix()), p.as_posix()))


def stdlib_corpus(*, max_bytes: int = 4_000_000, val_fraction: float = 0.1, root: str | Path | None = None) -> TextCorpus:
    """The offline default corpus (see module docstring)."""
    if not 0 < val_fraction < 1:
        raise DataFormatError(f"val_fraction must be in (0, 1), got {val_fraction}")
    root_p = Path(root or sysconfig.get_paths()["stdlib"])
    train, val, names, total = [], [], [], 0
    buckets = 1000
    for p in stdlib_files(root_p):
        if total >= max_bytes:
            break
        try:
            data = p.read_bytes()
        except OSError:
            continue
        rel = p.relative_to(root_p).as_posix()
        (val if _hash(rel) % buckets < val_fraction * buckets else train).append(data)
        names.append(rel)
        total += len(data)
    if not val and len(train) > 1:
        val.append(train.pop())
    if not train or not val:
        raise DataFormatError(f"too little Python source under {root_p} to build a corpus; pass corpus=<path>")
    return TextCorpus(_bytes_tensor(b"".join(train)), _bytes_tensor(b"".join(val)), 256,
                      f"python-stdlib:{root_p}", names)


def load_text_bytes(path: str | Path) -> torch.Tensor:
    """The bytes of one file as an int64 token stream (V = 256)."""
    p = Path(path)
    if not p.is_file():
        raise DataFormatError(f"text file not found: {p}")
    return _bytes_tensor(p.read_bytes())


def load_token_stream(path: str | Path) -> torch.Tensor:
    """A pre-tokenised corpus: raw little-endian ``uint16`` ``.bin`` or a 1-D ``.npy`` array."""
    p = Path(path)
    if not p.is_file():
        raise DataFormatError(f"token file not found: {p}")
    if p.suffix == ".npy":
        arr = np.load(p, allow_pickle=False)
        if arr.ndim != 1:
            raise DataFormatError(f"{p}: expected a 1-D token array, got shape {arr.shape}")
    else:
        raw = p.read_bytes()
        if len(raw) % 2:
            raise DataFormatError(f"{p}: a uint16 token file must have an even number of bytes")
        arr = np.frombuffer(raw, dtype="<u2")
    return torch.from_numpy(arr.astype(np.int64))


def load_text_corpus(path: str | Path, *, val_fraction: float = 0.1, max_bytes: int | None = None) -> TextCorpus:
    """A user corpus from a text file or a directory of files (see module docstring)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataFormatError(f"corpus path not found: {p} (give a text file or a directory of text files)")
    files = [p] if p.is_file() else sorted(
        f for f in p.rglob("*") if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts)
    )
    chunks, names, total = [], [], 0
    for f in files:
        if max_bytes is not None and total >= max_bytes:
            break
        b = f.read_bytes()
        chunks.append(b)
        names.append(str(f))
        total += len(b)
    data = b"".join(chunks)
    if max_bytes is not None:
        data = data[:max_bytes]
    if len(data) < 16:
        raise DataFormatError(f"corpus at {p} is empty or too small ({len(data)} bytes)")
    cut = int(len(data) * (1 - val_fraction))
    return TextCorpus(_bytes_tensor(data[:cut]), _bytes_tensor(data[cut:]), 256, str(p), names)


def load_corpus(spec: str = "stdlib", *, max_bytes: int = 4_000_000, val_fraction: float = 0.1) -> TextCorpus:
    """``"stdlib"`` -> :func:`stdlib_corpus`; anything else is a path for :func:`load_text_corpus`."""
    if spec in ("", "stdlib"):
        return stdlib_corpus(max_bytes=max_bytes, val_fraction=val_fraction)
    return load_text_corpus(spec, val_fraction=val_fraction, max_bytes=max_bytes)


class WindowSampler:
    """Random (x, y) windows of shape (B, T) from a token stream; y is x shifted by one token.

    Re-iterable: each pass yields ``batches_per_epoch`` batches from a generator seeded by
    ``(seed, rank, pass number)`` — ranks see different windows, runs are reproducible.
    """

    def __init__(self, tokens: torch.Tensor, batch_size: int, seq_len: int, *, seed: int = 0, rank: int = 0,
                 batches_per_epoch: int | None = None) -> None:
        if tokens.numel() < seq_len + 2:
            raise DataFormatError(f"token stream of {tokens.numel()} tokens is shorter than seq_len + 2 = {seq_len + 2}")
        self.tokens, self.B, self.T = tokens, int(batch_size), int(seq_len)
        self.seed, self.rank = int(seed), int(rank)
        self.batches_per_epoch = batches_per_epoch or max(1, tokens.numel() // (self.B * self.T))
        self._epoch = 0

    def __len__(self) -> int:
        return self.batches_per_epoch

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass the ``epoch``-th one (what a resumed training calls before continuing)."""
        self._epoch = int(epoch)

    def batch(self, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(0, self.tokens.numel() - self.T - 1, (self.B,), generator=g)  # (B,)
        offs = starts[:, None] + torch.arange(self.T + 1)  # (B, T+1)
        w = self.tokens[offs]
        return w[:, :-1], w[:, 1:]  # (B, T), (B, T)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.rank * 7919 + self._epoch)
        self._epoch += 1
        for _ in range(self.batches_per_epoch):
            yield self.batch(g)


def eval_windows(tokens: torch.Tensor, seq_len: int, *, max_tokens: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-overlapping (x, y) windows covering the stream (up to ``max_tokens`` targets)."""
    n = (tokens.numel() - 1) // seq_len
    if max_tokens is not None:
        n = max(1, min(n, max_tokens // seq_len))
    x = tokens[: n * seq_len].view(n, seq_len)
    y = tokens[1 : n * seq_len + 1].view(n, seq_len)
    return x, y


__all__ = [
    "TextCorpus",
    "WindowSampler",
    "eval_windows",
    "load_corpus",
    "load_text_bytes",
    "load_text_corpus",
    "load_token_stream",
    "stdlib_corpus",
    "stdlib_files",
]
