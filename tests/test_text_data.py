"""Byte-level text corpora (sparseforge.data.text)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparseforge.data.text import (
    WindowSampler,
    eval_windows,
    load_corpus,
    load_text_bytes,
    load_text_corpus,
    load_token_stream,
    stdlib_corpus,
)
from sparseforge.errors import DataFormatError


def test_stdlib_corpus_deterministic_and_disjoint() -> None:
    a = stdlib_corpus(max_bytes=200_000)
    b = stdlib_corpus(max_bytes=200_000)
    assert torch.equal(a.train, b.train) and torch.equal(a.val, b.val) and a.files == b.files
    assert a.train.numel() > 50_000 and a.val.numel() > 0
    assert a.train.dtype == torch.int64 and int(a.train.max()) < 256 and int(a.train.min()) >= 0
    assert b"def " in bytes(a.train[:200_000].to(torch.uint8).numpy())


def test_user_corpus_file_and_dir(tmp_path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_bytes(b"hello world " * 50)
    (tmp_path / "d" / "b.txt").write_bytes(b"zzz" * 100)
    (tmp_path / "d" / ".hidden").write_bytes(b"SECRET" * 100)
    c = load_text_corpus(tmp_path / "d", val_fraction=0.2)
    assert c.train.numel() + c.val.numel() == 900
    assert c.val.numel() == 180 and bytes(c.val.to(torch.uint8).numpy()) == b"z" * 180
    single = load_corpus(str(tmp_path / "d" / "a.txt"))
    assert bytes(torch.cat([single.train, single.val]).to(torch.uint8).numpy()) == b"hello world " * 50
    assert torch.equal(load_text_bytes(tmp_path / "d" / "b.txt"), torch.full((300,), ord("z")))


def test_missing_and_empty_paths_are_one_line_errors(tmp_path) -> None:
    with pytest.raises(DataFormatError, match="not found") as e:
        load_corpus(str(tmp_path / "nope"))
    assert "\n" not in str(e.value)
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(DataFormatError, match="empty"):
        load_text_corpus(tmp_path / "empty.txt")


def test_token_stream_roundtrip(tmp_path) -> None:
    ids = np.array([0, 5, 65535, 300], dtype=np.uint16)
    ids.tofile(tmp_path / "t.bin")
    np.save(tmp_path / "t.npy", ids.astype(np.int64))
    assert load_token_stream(tmp_path / "t.bin").tolist() == ids.tolist()
    assert load_token_stream(tmp_path / "t.npy").tolist() == ids.tolist()


def test_window_sampler_shapes_shift_and_seed() -> None:
    toks = torch.arange(1000)
    s = WindowSampler(toks, 4, 16, seed=1, batches_per_epoch=3)
    batches = list(s)
    assert len(batches) == 3
    x, y = batches[0]
    assert x.shape == (4, 16) and y.shape == (4, 16)
    assert torch.equal(y, x + 1)  # y is x shifted by one token
    again = list(WindowSampler(toks, 4, 16, seed=1, batches_per_epoch=3))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again))
    other_rank = list(WindowSampler(toks, 4, 16, seed=1, rank=1, batches_per_epoch=3))
    assert not torch.equal(other_rank[0][0], batches[0][0])
    ex, ey = eval_windows(toks, 10, max_tokens=50)
    assert ex.shape == (5, 10) and torch.equal(ey, ex + 1)
