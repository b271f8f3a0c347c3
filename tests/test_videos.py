"""Tests of the generated moving-shape videos and the frame-folder loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparseforge.data.videos import DIRECTIONS, load_frame_folders, moving_shapes, read_pgm
from sparseforge.errors import DataFormatError


def test_moving_shapes_deterministic_and_moves_one_pixel_per_frame():
    X, y = moving_shapes(5, frames=6, size=16, seed=3)
    X2, y2 = moving_shapes(5, frames=6, size=16, seed=3)
    assert torch.equal(X, X2) and torch.equal(y, y2)
    assert not torch.equal(X, moving_shapes(5, frames=6, size=16, seed=4)[0])
    assert X.shape == (20, 6, 16, 16) and set(torch.unique(X).tolist()) == {0.0, 1.0}
    assert bool((X.sum((2, 3)) == 9).all())  # a whole 3x3 square in every frame
    step = {0: (-1, 0), 1: (1, 0), 2: (0, -1), 3: (0, 1)}
    for i in range(20):
        dy, dx = step[int(y[i])]
        for t in range(5):
            assert torch.equal(torch.roll(X[i, t], shifts=(dy, dx), dims=(0, 1)), X[i, t + 1])
    assert len(DIRECTIONS) == 4


def _write_pgm(path, img: np.ndarray, binary: bool = True) -> None:
    h, w = img.shape
    if binary:
        path.write_bytes(f"P5\n# test\n{w} {h}\n255\n".encode() + img.astype(np.uint8).tobytes())
    else:
        path.write_text(f"P2\n{w} {h}\n255\n" + " ".join(str(v) for v in img.flatten()) + "\n")


def test_frame_folders_pgm_png_npy(tmp_path):
    from PIL import Image

    img = np.zeros((6, 4), dtype=np.uint8)
    img[0, :] = 255  # asymmetric: top row and one pixel bottom-right
    img[5, 3] = 200
    a = tmp_path / "walk" / "seq1"
    a.mkdir(parents=True)
    _write_pgm(a / "f000.pgm", img)
    _write_pgm(a / "f001.pgm", img[::-1].copy(), binary=False)
    b = tmp_path / "wave" / "seq1"
    b.mkdir(parents=True)
    Image.fromarray(img).save(b / "0.png")
    np.save(tmp_path / "wave" / "seq2.npy", np.stack([img, img, img]) / 255.0)
    seqs, labels, names = load_frame_folders(tmp_path)
    assert names == ["walk", "wave"] and labels.tolist() == [0, 1, 1]
    assert [tuple(s.shape) for s in seqs] == [(2, 6, 4), (1, 6, 4), (3, 6, 4)]
    expect = torch.from_numpy(img > 127).float()
    assert torch.equal(seqs[0][0], expect) and torch.equal(seqs[0][1], expect.flip(0))
    assert torch.equal(seqs[1][0], expect) and torch.equal(seqs[2][2], expect)
    resized, _, _ = load_frame_folders(tmp_path, size=(3, 2))
    assert resized[0].shape == (2, 3, 2)
    assert read_pgm(a / "f000.pgm").shape == (6, 4)


def test_frame_folders_errors_are_one_line(tmp_path):
    cases = [tmp_path / "missing", tmp_path]  # missing path; a folder with no class folders
    bad = tmp_path / "c" / "s"
    bad.mkdir(parents=True)
    (bad / "0.pgm").write_bytes(b"P5\n4 4\n255\n\x00\x00")  # truncated pixels
    for root in cases[:1]:
        with pytest.raises(DataFormatError) as e:
            load_frame_folders(root)
        assert "\n" not in str(e.value)
    with pytest.raises(DataFormatError) as e:
        load_frame_folders(tmp_path)
    assert "\n" not in str(e.value) and "expected" in str(e.value)
    (bad / "0.pgm").write_bytes(b"NOTPGM")
    with pytest.raises(DataFormatError):
        load_frame_folders(tmp_path)


def test_frame_folder_splits_noisy_copies(tmp_path):
    import numpy as np

    from sparseforge.data.videos import frame_folder_splits

    rng = np.random.default_rng(0)
    for c in ("jump", "walk"):
        (tmp_path / c).mkdir()
        for k in range(2):
            np.save(tmp_path / c / f"s{k}.npy", (rng.random((3, 10, 10)) < 0.3).astype(np.float32))
    train, ytr, test, yte = frame_folder_splits(tmp_path, noise=0.5, seed=1)
    assert len(train) == len(test) == 4 and torch.equal(ytr, yte)
    for a, b in zip(train, test):
        assert torch.equal(a.sum((1, 2)), b.sum((1, 2))) and not torch.equal(a, b)  # same density, moved pixels
