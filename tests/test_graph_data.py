"""Graph data: generated Disease trees, random graphs, splits, Planetoid and HGCN-format loaders."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from sparseforge.data.graphs import (
    GraphData,
    canonical_edges,
    disease_tree,
    edge_split,
    erdos_renyi_graph,
    inherit_sources,
    load_hgcn_synthetic,
    load_planetoid,
    node_split,
    normalized_adjacency,
    pair_ids,
    random_tree,
    row_normalize,
    sample_pairs,
    save_hgcn_synthetic,
    sir_outbreak,
)
from sparseforge.errors import DataFormatError, UserError


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert msg and "\n" not in msg
    return msg


def connected(edge_index: torch.Tensor, n: int) -> bool:
    adj: dict[int, list[int]] = {i: [] for i in range(n)}
    for u, v in edge_index.t().tolist():
        adj[u].append(v)
        adj[v].append(u)
    seen, stack = {0}, [0]
    while stack:
        for w in adj[stack.pop()]:
            if w not in seen:
                seen.add(w)
                stack.append(w)
    return len(seen) == n


# ------------------------------------------------------------------------------ generators


def test_disease_tree_is_a_deterministic_tree_with_binary_labels_in_range() -> None:
    g = disease_tree(300, 40, seed=3)
    assert g.num_nodes == 300 and g.num_edges == 299 and connected(g.edge_index, 300)
    assert set(g.y.unique().tolist()) <= {0, 1} and g.num_classes == 2
    assert 0.2 <= g.meta["infected_fraction"] <= 0.8 and g.meta["in_range"]
    assert g.x.dtype == torch.float32 and set(g.x.unique().tolist()) <= {0.0, 1.0}
    again = disease_tree(300, 40, seed=3)
    assert torch.equal(g.x, again.x) and torch.equal(g.y, again.y) and torch.equal(g.edge_index, again.edge_index)
    other = disease_tree(300, 40, seed=4)
    assert not torch.equal(g.edge_index, other.edge_index)
    default = disease_tree()
    assert default.describe() == {"name": "disease_tree", "nodes": 1044, "edges": 1043, "features": 1000, "classes": 2}
    assert 0.2 <= default.meta["infected_fraction"] <= 0.8


def test_disease_features_follow_susceptibility_and_heredity() -> None:
    g = disease_tree(2000, 400, seed=0, heredity=0.0)
    s = g.meta["susceptibility"].double()
    diff = g.x[:, :200].double().mean(1) - g.x[:, 200:].double().mean(1)  # E = 0.1 (2 s - 1)
    assert torch.corrcoef(torch.stack([s, diff]))[0, 1] > 0.5
    assert 0.4 < float(s.mean()) < 0.6 and 0.03 < float(s.var()) < 0.07  # Beta(2, 2): mean 1/2, var 1/20
    # heredity: a child's bits equal its parent's far more often than chance
    h = disease_tree(500, 200, seed=1, heredity=0.7)
    par = h.meta["parent"]
    same = (h.x[1:] == h.x[par[1:]]).double().mean()
    indep = disease_tree(500, 200, seed=1, heredity=0.0)
    same0 = (indep.x[1:] == indep.x[indep.meta["parent"][1:]]).double().mean()
    assert same > same0 + 0.02


def test_inherit_sources_equals_a_sequential_loop() -> None:
    g = torch.Generator().manual_seed(0)
    parent = torch.tensor([0, 0, 1, 1, 2, 4, 5, 0])
    src = inherit_sources(parent, 6, 0.6, generator=g)
    keep = torch.rand(8, 6, generator=torch.Generator().manual_seed(0)) < 0.6
    keep[0] = False
    ref = torch.zeros(8, 6, dtype=torch.long)
    for i in range(8):
        for c in range(6):
            ref[i, c] = ref[parent[i], c] if keep[i, c] else i
    assert torch.equal(src, ref)


def test_random_tree_and_erdos_renyi() -> None:
    t = random_tree(50, seed=1)
    assert t.shape == (2, 49) and (t[0] < t[1]).all() and connected(t, 50)
    e = erdos_renyi_graph(200, 0.05, seed=2)
    assert (e[0] < e[1]).all() and pair_ids(e, 200).unique().numel() == e.shape[1]
    assert abs(e.shape[1] - 0.05 * 200 * 199 / 2) < 5 * (0.05 * 200 * 199 / 2) ** 0.5
    assert torch.equal(erdos_renyi_graph(200, 0.05, seed=2), e)  # deterministic per seed
    dense = erdos_renyi_graph(10, 0.95, seed=3)
    assert dense.shape[1] > 35
    with pytest.raises(UserError):
        erdos_renyi_graph(10, 1.5)


def test_sir_outbreak_limits() -> None:
    path = torch.stack([torch.arange(9), torch.arange(1, 10)])
    g = torch.Generator().manual_seed(0)
    assert sir_outbreak(path, 10, torch.ones(10), beta=1.0, generator=g).all()
    only_root = sir_outbreak(path, 10, torch.zeros(10), generator=g)
    assert only_root.tolist() == [True] + [False] * 9
    some = sir_outbreak(path, 10, torch.full((10,), 0.5), beta=0.5, generator=g)
    assert some[0] and bool((some[1:].long().diff() <= 0).all())  # infection is a prefix of the path


def test_canonical_edges_and_sample_pairs() -> None:
    ei = torch.tensor([[0, 1, 2, 2, 3], [1, 0, 2, 3, 2]])
    assert canonical_edges(ei, 4).tolist() == [[0, 2], [1, 3]]
    with pytest.raises(DataFormatError):
        canonical_edges(torch.tensor([[0], [9]]), 4)
    forbid = torch.sort(pair_ids(torch.tensor([[0, 0, 1], [1, 2, 2]]), 4)).values
    p = sample_pairs(4, 3, forbid=forbid, generator=torch.Generator().manual_seed(0))
    assert sorted(pair_ids(p, 4).tolist()) == sorted({0 * 4 + 3, 1 * 4 + 3, 2 * 4 + 3})
    with pytest.raises(UserError):
        sample_pairs(4, 4, forbid=forbid)


def test_normalized_adjacency() -> None:
    ei = torch.tensor([[0, 1], [1, 2]])
    a = normalized_adjacency(ei, 3).to_dense()
    torch.testing.assert_close(a.sum(1), torch.ones(3))
    assert (a.diagonal() > 0).all() and a[0, 2] == 0
    s = normalized_adjacency(ei, 3, norm="sym").to_dense()
    torch.testing.assert_close(s, s.T)
    x = torch.tensor([[1.0, 3.0], [0.0, 0.0]])
    torch.testing.assert_close(row_normalize(x), torch.tensor([[0.25, 0.75], [0.0, 0.0]]))


# ------------------------------------------------------------------------------ splits


def test_node_split_disjoint_covering_stratified() -> None:
    y = torch.tensor([0] * 70 + [1] * 30)
    s = node_split(y, val=0.1, test=0.6, seed=0)
    allidx = torch.cat([s["train"], s["val"], s["test"]])
    assert allidx.unique().numel() == 100 == allidx.numel()
    assert int((y[s["val"]] == 1).sum()) == 3 and int((y[s["val"]] == 0).sum()) == 7
    assert int((y[s["test"]] == 1).sum()) == 18 and int((y[s["test"]] == 0).sum()) == 42
    b = node_split(y, val=0.1, test=0.6, balanced=True)
    assert int((y[b["val"]] == 0).sum()) == int((y[b["val"]] == 1).sum()) == 3
    assert torch.equal(node_split(y, seed=5)["test"], node_split(y, seed=5)["test"])
    with pytest.raises(UserError):
        node_split(y, val=0.5, test=0.6)


@pytest.mark.parametrize("negatives", ("ours", "hgcn"))
def test_edge_split_holds_out_edges_from_message_passing(negatives: str) -> None:
    g = disease_tree(400, 10, seed=0)
    s = edge_split(g.edge_index, 400, val=0.05, test=0.1, seed=1, negatives=negatives)
    n_e = g.num_edges
    assert s.val_pos.shape[1] == int(n_e * 0.05) == s.val_neg.shape[1]
    assert s.test_pos.shape[1] == int(n_e * 0.1) == s.test_neg.shape[1]
    assert s.train_pos.shape[1] + s.val_pos.shape[1] + s.test_pos.shape[1] == n_e
    adj = s.adjacency().to_dense()
    for pairs in (s.val_pos, s.test_pos):
        assert (adj[pairs[0], pairs[1]] == 0).all()  # held-out edges are not in the training graph
    assert (adj[s.train_pos[0], s.train_pos[1]] > 0).all()
    edges = set(pair_ids(g.edge_index, 400).tolist())
    held_neg = set(pair_ids(torch.cat([s.val_neg, s.test_neg], 1), 400).tolist())
    assert not held_neg & edges and len(held_neg) == s.val_neg.shape[1] + s.test_neg.shape[1]
    neg = s.sample_train_negatives(5000, generator=torch.Generator().manual_seed(0))
    ids = set(pair_ids(neg, 400).tolist())
    train_ids = set(pair_ids(s.train_pos, 400).tolist())
    assert not ids & train_ids and (neg[0] != neg[1]).all()
    held = held_neg | set(pair_ids(torch.cat([s.val_pos, s.test_pos], 1), 400).tolist())
    if negatives == "ours":
        assert not ids & held
    else:  # HGCN draws held-out pairs too
        assert ids & held


# ------------------------------------------------------------------------------ Planetoid


def write_planetoid(root: Path, name: str = "toy", *, test_index: tuple[int, ...] = (5, 4)) -> dict:
    rng = np.random.default_rng(0)
    n_all, n_test = 4, len(test_index)
    parts = {
        "x": sp.csr_matrix(rng.random((2, 3))), "y": np.eye(2)[[0, 1]],
        "allx": sp.csr_matrix(rng.random((n_all, 3))), "ally": np.eye(2)[[0, 1, 1, 0]],
        "tx": sp.csr_matrix(rng.random((n_test, 3))), "ty": np.eye(2)[[1] * n_test],
        "graph": {0: [1], 1: [0, 2], 2: [1, 5], 3: [4], 4: [3, 3], 5: [2]},
    }
    parts["ty"][0] = [1, 0]
    root.mkdir(parents=True, exist_ok=True)
    for k, v in parts.items():
        with open(root / f"ind.{name}.{k}", "wb") as f:
            pickle.dump(v, f, protocol=2)
    (root / f"ind.{name}.test.index").write_text("".join(f"{i}\n" for i in test_index))
    return parts


def test_planetoid_loader_reorders_test_rows(tmp_path: Path) -> None:
    parts = write_planetoid(tmp_path)
    g = load_planetoid(tmp_path, "toy", allow_pickle=True, val_size=2)
    assert g.num_nodes == 6 and g.num_classes == 2
    tx = parts["tx"].toarray()
    torch.testing.assert_close(g.x[5], torch.tensor(tx[0], dtype=torch.float32))  # tx row i is node test.index[i]
    torch.testing.assert_close(g.x[4], torch.tensor(tx[1], dtype=torch.float32))
    torch.testing.assert_close(g.x[:4], torch.tensor(parts["allx"].toarray(), dtype=torch.float32))
    assert g.y.tolist() == [0, 1, 1, 0, 1, 0]  # node 5 <- ty[0] = class 0
    assert g.splits["train"].tolist() == [0, 1] and g.splits["val"].tolist() == [2, 3]
    assert g.splits["test"].tolist() == [4, 5]
    assert sorted(map(tuple, g.edge_index.t().tolist())) == [(0, 1), (1, 2), (2, 5), (3, 4)]  # symmetric, deduplicated


def test_planetoid_fills_missing_test_indices_with_zero_rows(tmp_path: Path) -> None:
    parts = write_planetoid(tmp_path, test_index=(7, 4))  # 5, 6 missing (Citeseer)
    g = load_planetoid(tmp_path, "toy", allow_pickle=True)
    assert g.num_nodes == 8 and g.meta["missing_test_rows"] == 2
    assert (g.x[5] == 0).all() and (g.x[6] == 0).all()
    torch.testing.assert_close(g.x[7], torch.tensor(parts["tx"].toarray()[0], dtype=torch.float32))
    assert g.splits["test"].tolist() == [4, 7]


def test_planetoid_bad_input_is_one_line(tmp_path: Path) -> None:
    write_planetoid(tmp_path)
    with pytest.raises(DataFormatError) as e:
        load_planetoid(tmp_path, "toy")
    assert "allow_pickle" in one_line(e)
    (tmp_path / "ind.toy.graph").unlink()
    with pytest.raises(DataFormatError) as e:
        load_planetoid(tmp_path, "toy", allow_pickle=True)
    assert "ind.toy.graph" in one_line(e)
    write_planetoid(tmp_path)
    blob = (tmp_path / "ind.toy.allx").read_bytes()
    (tmp_path / "ind.toy.allx").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataFormatError) as e:
        load_planetoid(tmp_path, "toy", allow_pickle=True)
    assert "ind.toy.allx" in one_line(e) and "truncated" in one_line(e)
    write_planetoid(tmp_path)
    (tmp_path / "ind.toy.test.index").write_text("5\n")
    with pytest.raises(DataFormatError) as e:
        load_planetoid(tmp_path, "toy", allow_pickle=True)
    assert "inconsistent" in one_line(e)
    with pytest.raises(DataFormatError):
        load_planetoid(tmp_path / "nowhere", "toy", allow_pickle=True)


# ------------------------------------------------------------------------------ HGCN format


def test_hgcn_synthetic_round_trip_and_id_modes(tmp_path: Path) -> None:
    g = disease_tree(60, 12, seed=2)
    save_hgcn_synthetic(g, tmp_path, "disease")
    back = load_hgcn_synthetic(tmp_path, "disease")
    assert torch.equal(back.x, g.x) and torch.equal(back.y, g.y) and torch.equal(back.edge_index, g.edge_index)
    (tmp_path / "named.edges.csv").write_text("7,3\n3,9\n")
    for ext in ("feats.npz", "labels.npy"):
        (tmp_path / f"named.{ext}").write_bytes((tmp_path / f"disease.{ext}").read_bytes())
    first = load_hgcn_synthetic(tmp_path, "named", id_mode="first_seen")
    assert sorted(map(tuple, first.edge_index.t().tolist())) == [(0, 1), (1, 2)]  # 7->0, 3->1, 9->2
    assert sorted(map(tuple, load_hgcn_synthetic(tmp_path, "named").edge_index.t().tolist())) == [(3, 7), (3, 9)]
    (tmp_path / "named.edges.csv").write_text("7;3\n")
    with pytest.raises(DataFormatError) as e:
        load_hgcn_synthetic(tmp_path, "named")
    assert "line 1" in one_line(e)
    with pytest.raises(DataFormatError) as e:
        load_hgcn_synthetic(tmp_path, "absent")
    assert "absent.edges.csv" in one_line(e)


def test_graphdata_describe() -> None:
    g = GraphData(x=torch.zeros(3, 2), edge_index=torch.tensor([[0], [1]]), y=None, num_classes=0, name="t")
    assert g.describe()["edges"] == 1
