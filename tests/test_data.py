"""Tests for sparseforge.data: digits, IDX, CIFAR-10 pickles, modular arithmetic, the registry."""

from __future__ import annotations

import gzip
import math
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from sparseforge.data import (
    CIFAR10_LABEL_NAMES,
    DataSplits,
    channel_stats,
    load_cifar10,
    load_digits_builtin,
    load_idx,
    load_mnist_dir,
    modular_arithmetic,
    normalize,
    random_crop_flip,
)
from sparseforge.data.cifar import load_cifar_batch
from sparseforge.errors import DataFormatError, UserError
from sparseforge.registry import DATASETS


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert msg and "\n" not in msg, f"error message is not one line: {msg!r}"
    return msg


# ----------------------------------------------------------------------------- IDX helpers


def idx_images_bytes(arr: np.ndarray, magic: int = 0x00000803) -> bytes:
    n, r, c = arr.shape
    return struct.pack(">IIII", magic, n, r, c) + arr.astype(np.uint8).tobytes()


def idx_labels_bytes(labels: np.ndarray, magic: int = 0x00000801) -> bytes:
    return struct.pack(">II", magic, len(labels)) + labels.astype(np.uint8).tobytes()


def write(path: Path, data: bytes, gz: bool = False) -> Path:
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.fixture
def idx_arrays() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(5, 4, 3), dtype=np.uint8), rng.integers(0, 10, size=5, dtype=np.uint8)


# ----------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, idx_arrays, gz):
    imgs, labels = idx_arrays
    # names deliberately say the opposite of the content: detection must use the magic bytes
    ip = write(tmp_path / ("imgs" if gz else "imgs.gz"), idx_images_bytes(imgs), gz)
    lp = write(tmp_path / ("labs" if gz else "labs.gz"), idx_labels_bytes(labels), gz)
    x, y = load_idx(ip, lp)
    assert x.dtype == torch.uint8 and x.shape == (5, 4, 3)
    assert y.dtype == torch.int64 and y.shape == (5,)
    assert np.array_equal(x.numpy(), imgs)
    assert np.array_equal(y.numpy(), labels.astype(np.int64))


def test_idx_wrong_magic(tmp_path, idx_arrays):
    imgs, labels = idx_arrays
    ip = write(tmp_path / "imgs", idx_images_bytes(imgs, magic=0x00000801))
    lp = write(tmp_path / "labs", idx_labels_bytes(labels))
    with pytest.raises(DataFormatError) as e:
        load_idx(ip, lp)
    msg = one_line(e)
    assert str(ip) in msg and "0x00000803" in msg
    # labels file passed as images and vice versa
    with pytest.raises(DataFormatError, match="0x00000801"):
        load_idx(
            write(tmp_path / "ok", idx_images_bytes(imgs)), write(tmp_path / "bad", idx_labels_bytes(labels, 0x803))
        )


@pytest.mark.parametrize("gz", [False, True])
def test_idx_truncated(tmp_path, idx_arrays, gz):
    imgs, labels = idx_arrays
    ip = write(tmp_path / "imgs", idx_images_bytes(imgs)[:-7], gz)
    lp = write(tmp_path / "labs", idx_labels_bytes(labels), gz)
    with pytest.raises(DataFormatError) as e:
        load_idx(ip, lp)
    msg = one_line(e)
    assert str(ip) in msg and "truncated" in msg and "60" in msg  # 5*4*3 promised
    lp2 = write(tmp_path / "labs2", idx_labels_bytes(labels)[:-1], gz)
    with pytest.raises(DataFormatError, match="truncated"):
        load_idx(write(tmp_path / "imgs_ok", idx_images_bytes(imgs), gz), lp2)
    # header cut short
    with pytest.raises(DataFormatError, match="header"):
        load_idx(write(tmp_path / "hdr", idx_images_bytes(imgs)[:10], gz), lp)
    # trailing garbage is also rejected
    with pytest.raises(DataFormatError, match="trailing"):
        load_idx(write(tmp_path / "long", idx_images_bytes(imgs) + b"\0", gz), lp)


def test_idx_corrupt_gzip_count_mismatch_and_missing(tmp_path, idx_arrays):
    imgs, labels = idx_arrays
    ip = write(tmp_path / "imgs", idx_images_bytes(imgs))
    bad_gz = tmp_path / "labs.gz"
    bad_gz.write_bytes(gzip.compress(idx_labels_bytes(labels))[:-12])
    with pytest.raises(DataFormatError) as e:
        load_idx(ip, bad_gz)
    assert str(bad_gz) in one_line(e) and "gzip" in str(e.value)

    lp = write(tmp_path / "labs", idx_labels_bytes(labels[:4]))
    with pytest.raises(DataFormatError) as e:
        load_idx(ip, lp)
    assert "4 labels" in one_line(e) and "5" in str(e.value)

    missing = tmp_path / "nope-images-idx3-ubyte"
    with pytest.raises(DataFormatError) as e:
        load_idx(missing, lp)
    assert str(missing) in one_line(e) and "not found" in str(e.value)
    assert isinstance(e.value, ValueError)


def make_mnist_dir(root: Path, n_train: int = 6, n_test: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    arrs = {
        "train_x": rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
        "train_y": rng.integers(0, 10, size=n_train, dtype=np.uint8),
        "test_x": rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
        "test_y": rng.integers(0, 10, size=n_test, dtype=np.uint8),
    }
    arrs["train_x"][0, 0, 0], arrs["train_x"][0, 0, 1] = 0, 255
    write(root / "train-images-idx3-ubyte.gz", idx_images_bytes(arrs["train_x"]), gz=True)
    write(root / "train-labels-idx1-ubyte.gz", idx_labels_bytes(arrs["train_y"]), gz=True)
    write(root / "t10k-images-idx3-ubyte", idx_images_bytes(arrs["test_x"]))
    write(root / "t10k-labels-idx1-ubyte", idx_labels_bytes(arrs["test_y"]))
    return arrs


def test_load_mnist_dir(tmp_path):
    arrs = make_mnist_dir(tmp_path)
    x, y = load_mnist_dir(tmp_path, "train")
    assert x.shape == (6, 1, 28, 28) and x.dtype == torch.float32
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert torch.equal((x * 255).round().to(torch.uint8)[:, 0], torch.from_numpy(arrs["train_x"]))
    assert torch.equal(y, torch.from_numpy(arrs["train_y"].astype(np.int64)))
    xt, yt = load_mnist_dir(tmp_path, kind="test")
    assert xt.shape == (3, 1, 28, 28) and torch.equal(yt, torch.from_numpy(arrs["test_y"].astype(np.int64)))

    with pytest.raises(UserError):
        load_mnist_dir(tmp_path, kind="val")
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataFormatError) as e:
        load_mnist_dir(tmp_path, kind="test")
    assert "t10k-labels-idx1-ubyte" in one_line(e)
    with pytest.raises(DataFormatError, match="directory not found"):
        load_mnist_dir(tmp_path / "missing")


def test_mnist_registry_entry(tmp_path):
    make_mnist_dir(tmp_path)
    entry = DATASETS.entry("mnist")
    assert entry.meta["needs_path"] is True
    s = entry.obj(root=tmp_path)
    assert isinstance(s, DataSplits) and s.x_train.shape == (6, 1, 28, 28) and s.x_test.shape[0] == 3
    with pytest.raises(UserError) as e:
        entry.obj()
    assert "root" in one_line(e)


# ----------------------------------------------------------------------------- CIFAR-10


def write_cifar_batch(path: Path, images: np.ndarray, labels: list[int], *, bytes_keys: bool, **extra) -> None:
    d = {"data": images.reshape(len(images), -1), "labels": labels, "batch_label": "x", **extra}
    if bytes_keys:
        d = {k.encode(): v for k, v in d.items()}
    with path.open("wb") as f:
        pickle.dump(d, f, protocol=2)


def make_cifar_dir(root: Path, n: int = 3, meta: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2)
    imgs = rng.integers(0, 256, size=(6 * n, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, size=6 * n)
    for i in range(5):
        sl = slice(i * n, (i + 1) * n)
        write_cifar_batch(root / f"data_batch_{i + 1}", imgs[sl], labels[sl].tolist(), bytes_keys=i % 2 == 0)
    write_cifar_batch(root / "test_batch", imgs[5 * n :], labels[5 * n :].tolist(), bytes_keys=False)
    if meta:
        with (root / "batches.meta").open("wb") as f:
            pickle.dump({b"label_names": [n.encode() for n in CIFAR10_LABEL_NAMES[::-1]]}, f, protocol=2)
    return imgs, labels


def test_cifar_round_trip_bytes_and_str_keys(tmp_path):
    imgs, labels = make_cifar_dir(tmp_path)
    data = load_cifar10(tmp_path, allow_pickle=True)
    x_tr, y_tr, x_te, y_te, names = data  # unpacks like a tuple
    assert x_tr.shape == (15, 3, 32, 32) and x_tr.dtype == torch.uint8
    assert x_te.shape == (3, 3, 32, 32) and y_te.dtype == torch.int64
    assert torch.equal(x_tr, torch.from_numpy(imgs[:15])) and torch.equal(x_te, torch.from_numpy(imgs[15:]))
    assert y_tr.tolist() == labels[:15].tolist() and y_te.tolist() == labels[15:].tolist()
    assert names == CIFAR10_LABEL_NAMES[::-1] and all(isinstance(n, str) for n in names)
    # channel layout: first 1024 bytes of a row are the red plane, row-major
    row = imgs[0].reshape(-1)
    assert torch.equal(x_tr[0, 0], torch.from_numpy(row[:1024].reshape(32, 32)))
    assert torch.equal(x_tr[0, 2, 5], torch.from_numpy(row[2048 + 5 * 32 : 2048 + 6 * 32]))


def test_cifar_without_meta_uses_standard_names(tmp_path):
    make_cifar_dir(tmp_path, n=1, meta=False)
    assert load_cifar10(tmp_path, allow_pickle=True).label_names == CIFAR10_LABEL_NAMES


def test_cifar_refuses_pickle_by_default(tmp_path):
    make_cifar_dir(tmp_path, n=1)
    for call in (lambda: load_cifar10(tmp_path), lambda: load_cifar_batch(tmp_path / "test_batch")):
        with pytest.raises(DataFormatError) as e:
            call()
        assert "allow_pickle=True" in one_line(e) and "allow_pickle=true" in str(e.value)
    # refuses before touching the file system
    with pytest.raises(DataFormatError, match="allow_pickle"):
        load_cifar10(tmp_path / "does-not-exist")


def test_cifar_malformed(tmp_path):
    make_cifar_dir(tmp_path, n=2)
    bad = tmp_path / "data_batch_3"
    write_cifar_batch(bad, np.zeros((2, 3, 32, 31), np.uint8), [0, 1], bytes_keys=True)
    with pytest.raises(DataFormatError) as e:
        load_cifar10(tmp_path, allow_pickle=True)
    assert str(bad) in one_line(e) and "3072" in str(e.value)

    write_cifar_batch(bad, np.zeros((2, 3, 32, 32), np.uint8), [0], bytes_keys=True)
    with pytest.raises(DataFormatError, match="labels"):
        load_cifar_batch(bad, allow_pickle=True)
    write_cifar_batch(bad, np.zeros((2, 3, 32, 32), np.uint8), [0, 10], bytes_keys=False)
    with pytest.raises(DataFormatError, match="0..9"):
        load_cifar_batch(bad, allow_pickle=True)
    with bad.open("wb") as f:
        pickle.dump({b"data": np.zeros((1, 3072), np.uint8)}, f, protocol=2)
    with pytest.raises(DataFormatError, match="'labels'"):
        load_cifar_batch(bad, allow_pickle=True)
    bad.write_bytes(b"definitely not a pickle")
    with pytest.raises(DataFormatError) as e:
        load_cifar_batch(bad, allow_pickle=True)
    assert str(bad) in one_line(e)

    (tmp_path / "test_batch").unlink()
    make_cifar_dir(tmp_path, n=2)  # repair the batches, then remove the test batch
    (tmp_path / "test_batch").unlink()
    with pytest.raises(DataFormatError) as e:
        load_cifar10(tmp_path, allow_pickle=True)
    assert "test_batch" in one_line(e) and "not found" in str(e.value)


def test_channel_stats_and_normalize():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (7, 3, 5, 4), generator=g, dtype=torch.uint8)
    mean, std = channel_stats(x, chunk=3)  # chunked path
    xf = x.double() / 255
    assert torch.allclose(mean.double(), xf.mean(dim=(0, 2, 3)), atol=1e-6)
    assert torch.allclose(std.double(), xf.std(dim=(0, 2, 3), unbiased=False), atol=1e-6)
    z = normalize(x, mean, std)
    assert z.dtype == torch.float32 and z.shape == x.shape
    assert torch.allclose(z.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(z.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-5)


def test_random_crop_flip_matches_loop_reference():
    b, c, h, w, pad = 64, 3, 6, 5, 2
    x = torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(0)) + 1.0  # no zeros: crops are unique
    x0 = x.clone()
    out = random_crop_flip(x, padding=pad, generator=torch.Generator().manual_seed(1))
    again = random_crop_flip(x, padding=pad, generator=torch.Generator().manual_seed(1))
    assert torch.equal(x, x0), "input was modified"
    assert torch.equal(out, again), "not reproducible with the same generator"
    assert out.shape == x.shape and out.dtype == x.dtype
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    offsets, flips = set(), 0
    for i in range(b):
        matches = [
            (oy, ox, f)
            for oy in range(2 * pad + 1)
            for ox in range(2 * pad + 1)
            for f in (False, True)
            if torch.equal(out[i], (lambda v: v.flip(-1) if f else v)(padded[i, :, oy : oy + h, ox : ox + w]))
        ]
        assert len(matches) == 1, f"image {i} is not a padded crop (+flip) of its input"
        offsets.add(matches[0][:2])
        flips += matches[0][2]
    assert len(offsets) > 5 and 10 < flips < 54  # offsets and flips actually vary
    # no padding and no flip: identity; uint8 keeps its dtype
    assert torch.equal(random_crop_flip(x, padding=0, flip=False), x)
    xu = (x * 100).to(torch.uint8)
    assert random_crop_flip(xu, generator=torch.Generator().manual_seed(0)).dtype == torch.uint8


def test_cifar_registry_entry(tmp_path):
    make_cifar_dir(tmp_path, n=2)
    entry = DATASETS.entry("cifar10")
    assert entry.meta["needs_path"] is True
    s = entry.obj(root=tmp_path, allow_pickle=True)
    assert s.x_train.dtype == torch.float32 and s.x_train.shape == (10, 3, 32, 32)
    assert torch.allclose(s.x_train.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert s.meta["label_names"] == CIFAR10_LABEL_NAMES[::-1]
    with pytest.raises(DataFormatError, match="allow_pickle"):
        entry.obj(root=tmp_path)
    with pytest.raises(UserError):
        entry.obj()


# ----------------------------------------------------------------------------- digits


def test_digits_split_sizes_and_values():
    x_tr, y_tr, x_te, y_te = load_digits_builtin()
    assert x_tr.shape == (1437, 1, 8, 8) and x_te.shape == (360, 1, 8, 8)
    assert x_tr.dtype == torch.float32 and y_tr.dtype == torch.int64 and y_te.dtype == torch.int64
    assert float(x_tr.min()) == 0.0 and float(x_tr.max()) == 1.0
    assert torch.equal(x_tr * 16, (x_tr * 16).round())  # pixels were 0..16, divided by 16


def test_digits_stratified_and_deterministic():
    from sklearn.datasets import load_digits

    full = load_digits()
    x_tr, y_tr, x_te, y_te = load_digits_builtin(split_seed=0)
    counts = np.bincount(full.target, minlength=10)
    tr_c, te_c = np.bincount(y_tr.numpy(), minlength=10), np.bincount(y_te.numpy(), minlength=10)
    assert np.array_equal(tr_c + te_c, counts)
    assert np.all(np.abs(te_c - 0.2 * counts) <= 1), te_c
    # the split is a partition of the whole set (compare the sorted rows)
    both = np.concatenate([x_tr.reshape(-1, 64).numpy(), x_te.reshape(-1, 64).numpy()]) * 16
    ref = full.data.astype(np.float32)
    assert np.array_equal(both[np.lexsort(both.T)], ref[np.lexsort(ref.T)])
    a = load_digits_builtin(split_seed=0)
    b = load_digits_builtin(split_seed=1)
    assert all(torch.equal(u, v) for u, v in zip((x_tr, y_tr, x_te, y_te), a))
    assert not torch.equal(a[1], b[1])


def test_digits_grokking_permutation_split():
    x_tr, y_tr, x_te, y_te = load_digits_builtin(3, n_train=1000)
    assert x_tr.shape == (1000, 1, 8, 8) and x_te.shape == (797, 1, 8, 8)
    again = load_digits_builtin(3, n_train=1000)
    assert torch.equal(again[0], x_tr) and not torch.equal(load_digits_builtin(4, n_train=1000)[1], y_tr)
    ref = load_digits_builtin()
    assert torch.equal(torch.cat([y_tr, y_te]).bincount(), torch.cat([ref[1], ref[3]]).bincount())
    assert float(torch.cat([x_tr, x_te]).double().sum()) == float(torch.cat([ref[0], ref[2]]).double().sum())
    with pytest.raises(UserError):
        load_digits_builtin(n_train=1797)


# ----------------------------------------------------------------------------- modular arithmetic

P = 7
REFERENCE = {
    "add": lambda a, b: (a + b) % P,
    "sub": lambda a, b: (a - b) % P,
    "mul": lambda a, b: (a * b) % P,
    "div": lambda a, b: (a * pow(b, P - 2, P)) % P,
    "x2y2": lambda a, b: (a**2 + b**2) % P,
    "poly": lambda a, b: (a**2 + a * b + b**2) % P,
    "x3xy": lambda a, b: (a**3 + a * b) % P,
    "add_nomod": lambda a, b: a + b,
}
EXPECTED_PAIRS = {
    "add": lambda a, b: a <= b,
    "sub": lambda a, b: True,
    "mul": lambda a, b: a <= b,
    "div": lambda a, b: b != 0,
    "x2y2": lambda a, b: a <= b,
    "poly": lambda a, b: a <= b,
    "x3xy": lambda a, b: True,
    "rand": lambda a, b: True,
    "add_nomod": lambda a, b: a <= b,
}


@pytest.mark.parametrize("op", list(EXPECTED_PAIRS))
def test_modular_pairs_partition_and_labels(op):
    d = modular_arithmetic(P, op, 0.5, seed=3)
    pairs = torch.cat([d.train_pairs, d.test_pairs]).tolist()
    labels = torch.cat([d.train_labels, d.test_labels]).tolist()
    expected = sorted((a, b) for a in range(P) for b in range(P) if EXPECTED_PAIRS[op](a, b))
    assert sorted(map(tuple, pairs)) == expected  # every pair exactly once across train + test
    assert d.train_pairs.dtype == torch.long and d.train_labels.dtype == torch.long
    assert d.train_pairs.shape[0] == math.floor(0.5 * len(expected))
    if op == "rand":
        assert all(0 <= c < P for c in labels)
        other = modular_arithmetic(P, op, 0.3, seed=9)  # the table is fixed; only the split changes
        table = dict(zip(map(tuple, pairs), labels))
        for (a, b), c in zip(other.train_pairs.tolist(), other.train_labels.tolist()):
            assert table[(a, b)] == c
    else:
        assert labels == [REFERENCE[op](a, b) for a, b in pairs]
    assert d.num_classes == (2 * P - 1 if op == "add_nomod" else P)
    assert max(labels) < d.num_classes


def test_modular_default_paper_sizes_and_options():
    d = modular_arithmetic()
    assert (d.p, d.op, len(d.train_pairs), len(d.test_pairs)) == (67, "add", 911, 1367)
    nd = modular_arithmetic(include_diagonal=False)
    assert len(nd.train_pairs) + len(nd.test_pairs) == 2211
    assert bool((torch.cat([nd.train_pairs, nd.test_pairs]).diff(dim=1) > 0).all())
    full = modular_arithmetic(op="add", symmetric=False)
    assert len(full.train_pairs) + len(full.test_pairs) == 67 * 67
    alias = modular_arithmetic(11, "x^2+xy+y^2", seed=2)
    canon = modular_arithmetic(11, "poly", seed=2)
    assert alias.op == "poly" and torch.equal(alias.train_labels, canon.train_labels)


def test_modular_div_non_prime_modulus():
    d = modular_arithmetic(8, "div", 0.5)
    pairs = torch.cat([d.train_pairs, d.test_pairs])
    labels = torch.cat([d.train_labels, d.test_labels])
    assert bool((pairs[:, 1] % 2 == 1).all()) and len(pairs) == 8 * 4  # only invertible b
    assert torch.equal((labels * pairs[:, 1]) % 8, pairs[:, 0])


def test_modular_split_deterministic():
    a, b = modular_arithmetic(13, "sub", 0.4, seed=5), modular_arithmetic(13, "sub", 0.4, seed=5)
    c = modular_arithmetic(13, "sub", 0.4, seed=6)
    assert torch.equal(a.train_pairs, b.train_pairs) and torch.equal(a.test_labels, b.test_labels)
    assert not torch.equal(a.train_pairs, c.train_pairs)


def test_modular_encodings():
    d = modular_arithmetic(5, "add", 0.6, seed=0)
    oh = d.train_onehot
    assert oh.shape == (len(d.train_pairs), 10) and oh.dtype == torch.float32
    assert torch.equal(oh.sum(1), torch.full((len(oh),), 2.0))
    assert torch.equal(oh[:, :5].argmax(1), d.train_pairs[:, 0]) and torch.equal(
        oh[:, 5:].argmax(1), d.train_pairs[:, 1]
    )
    tok = d.to_splits("tokens")
    assert tok.input_shape == (2,) and tok.input_dtype == "long" and tok.meta["vocab_size"] == 5
    assert torch.equal(tok.x_train, d.train_pairs)
    assert d.to_splits("onehot").x_test.shape == (len(d.test_pairs), 10)
    with pytest.raises(UserError):
        d.to_splits("bits")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"op": "pow"},
        {"p": 1},
        {"p": 0},
        {"train_frac": 0.0},
        {"train_frac": 1.0},
        {"train_frac": 1.5},
        {"p": 2, "train_frac": 0.1},
    ],
)
def test_modular_bad_input(kwargs):
    with pytest.raises(UserError) as e:
        modular_arithmetic(**kwargs)
    one_line(e)


# ----------------------------------------------------------------------------- registry


def test_every_offline_dataset_builds_with_no_args():
    offline = [e for e in DATASETS.entries() if not e.meta.get("needs_path")]
    assert {"digits", "modular"} <= {e.name for e in offline}
    for entry in offline:
        s = entry.obj()
        assert isinstance(s, DataSplits), entry.name
        assert tuple(s.x_train.shape[1:]) == tuple(s.input_shape) == tuple(s.x_test.shape[1:]), entry.name
        assert s.x_train.shape[0] == s.y_train.shape[0] > 0 and s.x_test.shape[0] == s.y_test.shape[0] > 0
        assert s.y_train.dtype == torch.int64 and 0 <= int(s.y_train.min()) and int(s.y_train.max()) < s.num_classes
        want = torch.long if s.input_dtype == "long" else torch.float32
        assert s.x_train.dtype == want, entry.name
        if "input_shape" in entry.meta:
            assert tuple(entry.meta["input_shape"]) == tuple(s.input_shape), entry.name


def test_registered_digits_and_modular_options():
    flat = DATASETS.get("digits")(flatten=True)
    assert flat.x_train.shape == (1437, 64) and flat.input_shape == (64,)
    oh = DATASETS.get("modular")(p=11, encoding="onehot")
    assert oh.x_train.shape[1] == 22 and oh.num_classes == 11
