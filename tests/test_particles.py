"""GNS .npz + metadata.json: round trips, pickle gate, bad files, statistics, window batches."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sparseforge.data.particles import (
    Trajectory,
    WindowBatches,
    compute_metadata,
    generate_particle_splits,
    load_gns_dataset,
    load_gns_npz,
    load_metadata,
    load_nclaw_states,
    save_gns_npz,
    write_particle_dataset,
)
from sparseforge.errors import DataFormatError, UserError


def _trajs(n: int = 3) -> list[Trajectory]:
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        pos = torch.rand(7, 10 + i, 2, generator=g)
        props = torch.rand(10 + i, 2, generator=g) if i == 1 else None
        out.append(Trajectory(pos, torch.full((10 + i,), 5, dtype=torch.long), props))
    return out


@pytest.mark.parametrize("layout", ["per_key", "gns_data", "arrays"])
def test_npz_round_trip(tmp_path, layout):
    trajs = _trajs()
    p = tmp_path / f"{layout}.npz"
    save_gns_npz(p, trajs, layout=layout)
    back = load_gns_npz(p, allow_pickle=layout != "arrays")
    assert len(back) == 3
    for a, b in zip(trajs, back):
        assert torch.equal(a.position, b.position) and torch.equal(a.particle_type, b.particle_type)
        assert (a.material_properties is None) == (b.material_properties is None)
        if a.material_properties is not None:
            assert torch.equal(a.material_properties, b.material_properties)


def test_reads_a_hand_written_gns_file(tmp_path):
    pos = np.random.default_rng(0).random((5, 4, 3)).astype(np.float64)
    item = np.empty(2, dtype=object)
    item[0], item[1] = pos, np.array([5, 5, 6, 6])
    np.savez(tmp_path / "test.npz", simulation_0=item, simulation_1=item)
    trajs = load_gns_npz(tmp_path / "test.npz", allow_pickle=True)
    assert len(trajs) == 2 and trajs[0].position.shape == (5, 4, 3) and trajs[0].position.dtype == torch.float32


def test_pickle_gate_and_bad_files(tmp_path):
    p = tmp_path / "x.npz"
    save_gns_npz(p, _trajs())
    with pytest.raises(DataFormatError, match="allow_pickle=True") as e:
        load_gns_npz(p)
    assert "\n" not in str(e.value)
    with pytest.raises(DataFormatError, match="no particle file"):
        load_gns_npz(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataFormatError, match="not a readable"):
        load_gns_npz(tmp_path / "junk.npz")
    # wrong shape / dtype
    np.savez(tmp_path / "shape.npz", **{"s/position": np.zeros((5, 4), np.float32), "s/particle_type": np.zeros(4, np.int64)})
    with pytest.raises(DataFormatError, match=r"\(T, N, 2 or 3\)"):
        load_gns_npz(tmp_path / "shape.npz")
    np.savez(tmp_path / "dtype.npz", **{"s/position": np.zeros((5, 4, 2), np.int32), "s/particle_type": np.zeros(4, np.int64)})
    with pytest.raises(DataFormatError, match="float"):
        load_gns_npz(tmp_path / "dtype.npz")
    np.savez(tmp_path / "types.npz", **{"s/position": np.zeros((5, 4, 2), np.float32), "s/particle_type": np.zeros(3, np.float32)})
    with pytest.raises(DataFormatError, match="particle_type"):
        load_gns_npz(tmp_path / "types.npz")


def test_metadata_statistics_equal_numpy(tmp_path):
    trajs = _trajs()
    meta = compute_metadata(trajs, bounds=[[0, 1], [0, 1]], connectivity_radius=0.1, dt=0.01)
    x = [t.position.numpy().astype(np.float64) for t in trajs]
    v = np.concatenate([(a[1:] - a[:-1]).reshape(-1, 2) for a in x])
    acc = np.concatenate([(a[2:] - 2 * a[1:-1] + a[:-2]).reshape(-1, 2) for a in x])
    np.testing.assert_allclose(meta["vel_mean"], v.mean(0), rtol=1e-6)
    np.testing.assert_allclose(meta["vel_std"], v.std(0), rtol=1e-6)
    np.testing.assert_allclose(meta["acc_mean"], acc.mean(0), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(meta["acc_std"], acc.std(0), rtol=1e-6)
    # round trip through a file and through the loaded trajectories
    save_gns_npz(tmp_path / "train.npz", trajs)
    (tmp_path / "metadata.json").write_text(json.dumps({"train": meta, "rollout": {"x": 1}}))
    back, meta2 = load_gns_dataset(tmp_path, "train", allow_pickle=True)
    again = compute_metadata(back, bounds=meta2["bounds"], connectivity_radius=0.1, dt=0.01)
    np.testing.assert_allclose(again["acc_std"], meta["acc_std"], rtol=1e-6)
    assert meta2["default_connectivity_radius"] == 0.1
    (tmp_path / "metadata.json").write_text(json.dumps({"bounds": [[0, 1], [0, 1]]}))
    with pytest.raises(DataFormatError, match="lacks"):
        load_metadata(tmp_path)


def test_generated_splits_and_writer(tmp_path):
    s = generate_particle_splits("water", n_train=2, n_valid=1, n_test=1, n_particles=120, n_frames=12, seed=1)
    assert len(s.train) == 2 and len(s.valid) == 1 and len(s.test) == 1
    assert s.train[0].position.shape == (12, 120, 2) and int(s.train[0].particle_type[0]) == 5
    assert s.metadata["default_connectivity_radius"] > 0 and s.metadata["sequence_length"] == 12
    write_particle_dataset(tmp_path, s, layout="arrays")
    trajs, meta = load_gns_dataset(tmp_path, "test")
    assert torch.equal(trajs[0].position, s.test[0].position) and meta["material"] == "water"
    with pytest.raises(UserError):
        generate_particle_splits("water", n_train=0)


def test_window_batches():
    trajs = _trajs()
    wb = WindowBatches(trajs, window=3, batch_size=2, batches_per_epoch=4, seed=0)
    batches = list(wb)
    assert len(batches) == 4
    b = batches[0]
    assert b["position"].shape[1:] == (5, 2) and b["batch"].max() == 1
    assert b["position"].shape[0] == b["particle_type"].shape[0] == b["batch"].shape[0]
    first = list(WindowBatches(trajs, window=3, batch_size=2, batches_per_epoch=4, seed=0))
    assert all(torch.equal(x["position"], y["position"]) for x, y in zip(batches, first))
    with pytest.raises(UserError):
        WindowBatches(trajs, window=6)


def test_nclaw_states(tmp_path):
    (tmp_path / "state").mkdir()
    for i in range(3):
        torch.save({"x": torch.full((4, 3), float(i))}, tmp_path / "state" / f"{i:04d}.pt")
    x = load_nclaw_states(tmp_path)
    assert x.shape == (3, 4, 3) and float(x[2, 0, 0]) == 2.0
