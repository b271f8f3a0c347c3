"""Graph datasets: generated Disease-style trees, random graphs, Planetoid and HGCN-format loaders, splits.

Used by the hyperbolic part of Zhao et al., "Sparse Spectral Training and Inference on Euclidean
and Hyperbolic Neural Networks", arXiv:2405.15481 (node classification and link prediction with
HyboNet / GCN), following the data conventions of HGCN (Chami et al., arXiv:1910.12933).

Offline default — :func:`disease_tree`, a generated stand-in for HGCN's Disease set (1,044 nodes,
1,043 edges, 2 classes, 1,000 features, a tree); every rule below is a reconstructed default:

* tree: node 0 is the root, node i >= 1 attaches to a parent drawn uniformly from {0, ..., i-1};
* susceptibility s_i ~ Beta(2, 2);
* discrete-time SIR outbreak from the infected root: an infected node stays infectious for 3 steps
  and in each step infects each susceptible neighbour j with probability beta s_j, beta = 1
  (with beta = 0.5 the outbreak on a 1,044-node random recursive tree never reached 20% of the
  nodes: at most 19.7% over 100 redraws for each of 10 seeds; beta = 1 lands in 20-80% in 20-90%
  of the draws);
* label y_i = 1 if node i was ever infected; the outbreak is redrawn (up to 100 tries) until
  20-80% of the nodes are infected;
* binary features: the first half of the dimensions ~ Bernoulli(0.02 + 0.1 s_i), the second half
  ~ Bernoulli(0.02 + 0.1 (1 - s_i));
* heredity h = 0.7: a child keeps its parent's susceptibility with probability h (else draws its
  own, so s stays Beta(2, 2)-distributed) and each of its feature bits is its parent's bit with
  probability h (else drawn from its own rate). With h = 0 (independent features) no feature says
  anything about a held-out tree edge, whose removal always disconnects its endpoints in the
  training graph: measured link-prediction ROC-AUC 0.38-0.52 for HyboNet and GCN (500 nodes,
  300 epochs) and 0.52 for an oracle ranking by the true susceptibility gap. With h = 0.7,
  full-rank HyboNet / GCN reach NC F1 ~0.9-0.95 and LP ROC-AUC ~0.92-0.95, the regime of HGCN's
  Disease results (HyboNet: 96.0 / 96.8).

Also :func:`random_tree`, :func:`erdos_renyi_graph`, :func:`sir_outbreak`.

Loaders (user files, never a download):

* :func:`load_planetoid` — Planetoid raw files ``ind.{name}.{x,y,tx,ty,allx,ally,graph}`` and
  ``ind.{name}.test.index`` (Cora / Citeseer / PubMed as distributed by Yang et al. and Kipf &
  Welling). They are Python-2 pickles: ``allow_pickle=True`` is required (trusted files only).
  Features = vstack(allx, tx) with the test rows reordered to sorted test-index order (same for
  labels); missing test indices (Citeseer) are filled with zero rows; train = range(len(y)),
  val = the next 500, test = sorted(test.index); the adjacency is made symmetric without self-loops.
* :func:`load_hgcn_synthetic` / :func:`save_hgcn_synthetic` — HGCN's synthetic format:
  ``{name}.edges.csv`` (one "u,v" per line), ``{name}.feats.npz`` (scipy CSR, ``save_npz``),
  ``{name}.labels.npy``. ``id_mode="int"`` (default) parses ids as row indices; ``"first_seen"``
  reproduces HGCN's first-appearance numbering.

Splits (HGCN conventions): :func:`node_split` (stratified; 10% validation, 60% test, rest train for
Disease NC); :func:`edge_split` (positive edges shuffled, 5% validation, 10% test, as many sampled
non-edges for validation and test; message passing on the training edges only; training negatives
resampled every epoch by :meth:`EdgeSplit.sample_train_negatives` from the non-edges that are no
validation/test pair — ``negatives="hgcn"`` reproduces HGCN, whose training negatives are all
non-edges plus the held-out positives). :func:`normalized_adjacency` builds the sparse row-normalised
A + I of GCN/HGCN.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ..errors import DataFormatError, UserError

# --------------------------------------------------------------------------------------------
# containers and edge utilities
# --------------------------------------------------------------------------------------------


@dataclass
class GraphData:
    """One graph: node features, undirected edges (each once, u < v), labels and optional splits.

    Attributes:
        x: (N, F) float32 features.
        edge_index: (2, E) int64, u < v, no duplicates, no self-loops.
        y: (N,) int64 labels, or None.
        num_classes: number of label classes (0 without labels).
        name: where it came from.
        splits: optional given node splits {"train", "val", "test"} -> int64 indices (Planetoid).
        meta: free-form extras (generator parameters, infected fraction, ...).
    """

    x: torch.Tensor
    edge_index: torch.Tensor
    y: torch.Tensor | None
    num_classes: int
    name: str = ""
    splits: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_nodes(self) -> int:
        return int(self.x.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "nodes": self.num_nodes, "edges": self.num_edges,
                "features": int(self.x.shape[1]), "classes": self.num_classes}


def canonical_edges(edge_index: torch.Tensor, n: int) -> torch.Tensor:
    """Undirected edge list: (u, v) with u < v, self-loops and duplicates removed, sorted."""
    ei = torch.as_tensor(edge_index, dtype=torch.long).reshape(2, -1)
    if ei.numel() and (int(ei.min()) < 0 or int(ei.max()) >= n):
        raise DataFormatError(f"edge list refers to node {int(ei.max())} (or a negative id) but the graph has {n} nodes")
    u, v = torch.minimum(ei[0], ei[1]), torch.maximum(ei[0], ei[1])
    keep = u != v
    ids = torch.unique(u[keep] * n + v[keep])
    return torch.stack([ids // n, ids % n])


def pair_ids(pairs: torch.Tensor, n: int) -> torch.Tensor:
    """Unordered pair ids min(u, v) * n + max(u, v) of (2, M) pairs."""
    return torch.minimum(pairs[0], pairs[1]) * n + torch.maximum(pairs[0], pairs[1])


def _isin_sorted(ids: torch.Tensor, sorted_ids: torch.Tensor) -> torch.Tensor:
    if sorted_ids.numel() == 0:
        return torch.zeros_like(ids, dtype=torch.bool)
    pos = torch.searchsorted(sorted_ids, ids).clamp_max(sorted_ids.numel() - 1)
    return sorted_ids[pos] == ids


def sample_pairs(n: int, m: int, *, forbid: torch.Tensor | None = None, distinct: bool = True,
                 generator: torch.Generator | None = None, max_rounds: int = 100) -> torch.Tensor:
    """``m`` uniformly random unordered node pairs (u < v) outside ``forbid`` (sorted pair ids).

    Rejection sampling in vectorised rounds (efficient for sparse graphs). With ``distinct`` the
    pairs are different from each other. Returns (2, m) int64.
    """
    forbid = torch.empty(0, dtype=torch.long) if forbid is None else forbid
    total = n * (n - 1) // 2
    if m > total - forbid.numel() and distinct:
        raise UserError(f"cannot draw {m} distinct non-edges from a graph of {n} nodes with {forbid.numel()} excluded pairs")
    got = torch.empty(0, dtype=torch.long)
    for _ in range(max_rounds):
        need = m - got.numel()
        if need <= 0:
            break
        draw = max(2 * need, 64)
        u = torch.randint(0, n, (draw,), generator=generator)
        v = torch.randint(0, n, (draw,), generator=generator)
        ok = u != v
        ids = pair_ids(torch.stack([u[ok], v[ok]]), n)
        ids = ids[~_isin_sorted(ids, forbid)]
        if distinct:
            allids = torch.cat([got, ids])
            uniq, inv = torch.unique(allids, return_inverse=True)
            first = torch.full((uniq.numel(),), allids.numel(), dtype=torch.long).scatter_reduce_(
                0, inv, torch.arange(allids.numel()), "amin")
            got = allids[torch.sort(first).values]  # first occurrences, in draw order
        else:
            got = torch.cat([got, ids])
    if got.numel() < m:
        raise UserError(f"could not sample {m} non-edges in {max_rounds} rounds; the graph is too dense for rejection sampling")
    got = got[:m]
    return torch.stack([got // n, got % n])


def normalized_adjacency(edge_index: torch.Tensor, n: int, *, self_loops: bool = True,
                         norm: Literal["row", "sym", "none"] = "row", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Sparse (N, N) operator of the undirected graph: row-normalised A + I (GCN / HGCN) by default.

    ``norm="sym"`` gives D^-1/2 (A + I) D^-1/2; ``"none"`` the plain (A + I).
    """
    ei = canonical_edges(edge_index, n)
    rows = torch.cat([ei[0], ei[1]])
    cols = torch.cat([ei[1], ei[0]])
    if self_loops:
        ar = torch.arange(n)
        rows, cols = torch.cat([rows, ar]), torch.cat([cols, ar])
    vals = torch.ones(rows.numel(), dtype=dtype)
    deg = torch.zeros(n, dtype=dtype).index_add_(0, rows, vals).clamp_min(1)
    if norm == "row":
        vals = vals / deg[rows]
    elif norm == "sym":
        dis = deg.rsqrt()
        vals = vals * dis[rows] * dis[cols]
    elif norm != "none":
        raise UserError(f"adjacency norm must be row, sym or none, got {norm!r}")
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (n, n), check_invariants=False).coalesce()


def row_normalize(x: torch.Tensor) -> torch.Tensor:
    """Features divided by their row sums (rows summing to 0 stay 0): HGCN's feature normalisation."""
    s = x.sum(dim=1, keepdim=True)
    return torch.where(s != 0, x / torch.where(s != 0, s, torch.ones_like(s)), x)


# --------------------------------------------------------------------------------------------
# generators
# --------------------------------------------------------------------------------------------


def _gen(seed: int | torch.Generator | None) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    return torch.Generator().manual_seed(0 if seed is None else int(seed))


def random_tree(n: int, *, seed: int | torch.Generator | None = 0) -> torch.Tensor:
    """A random recursive tree: node i >= 1 attaches to a uniform parent in {0, ..., i-1}; (2, n-1) edges."""
    if n < 1:
        raise UserError(f"a tree needs n >= 1 nodes, got {n}")
    g = _gen(seed)
    child = torch.arange(1, n)
    parent = (torch.rand(n - 1, generator=g, dtype=torch.float64) * child).long().clamp_max(child - 1)
    return torch.stack([parent, child])


def erdos_renyi_graph(n: int, p: float, *, seed: int | torch.Generator | None = 0) -> torch.Tensor:
    """G(n, p): every unordered pair is an edge independently with probability ``p``; (2, E) edges."""
    if not 0.0 <= p <= 1.0:
        raise UserError(f"edge probability p must be in [0, 1], got {p}")
    g = _gen(seed)
    total = n * (n - 1) // 2
    m = int(torch.binomial(torch.tensor([float(total)]), torch.tensor([float(p)]), generator=g).item()) if total else 0
    if m == 0:
        return torch.empty(2, 0, dtype=torch.long)
    if m > total // 2:  # dense: enumerate the triangle
        iu = torch.triu_indices(n, n, 1)
        return canonical_edges(iu[:, torch.randperm(total, generator=g)[:m]], n)
    return canonical_edges(sample_pairs(n, m, generator=g), n)


def neighbours_csr(edge_index: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Directed (src, dst) arrays of both orientations of the undirected edges."""
    ei = canonical_edges(edge_index, n)
    return torch.cat([ei[0], ei[1]]), torch.cat([ei[1], ei[0]])


def sir_outbreak(edge_index: torch.Tensor, n: int, susceptibility: torch.Tensor, *, root: int = 0,
                 infectious_steps: int = 3, beta: float = 0.5, generator: torch.Generator | None = None,
                 max_steps: int | None = None) -> torch.Tensor:
    """Discrete-time SIR on a graph: which nodes were ever infected (bool (N,)).

    The root starts infected; an infected node is infectious for ``infectious_steps`` steps, and in
    each of them infects each susceptible neighbour j independently with probability beta s_j.
    Vectorised over edges; the loop runs over time steps until nobody is infectious.
    """
    src, dst = neighbours_csr(edge_index, n)
    p_edge = (beta * susceptibility.double())[dst].clamp(0, 1)  # (2E,)
    ever = torch.zeros(n, dtype=torch.bool)
    remaining = torch.zeros(n, dtype=torch.long)  # infectious steps left
    ever[root] = True
    remaining[root] = infectious_steps
    for _ in range(max_steps or 10 * n + infectious_steps):
        infectious = remaining > 0
        if not bool(infectious.any()):
            break
        active = infectious[src] & ~ever[dst]
        hit = active & (torch.rand(src.numel(), generator=generator, dtype=torch.float64) < p_edge)
        new = torch.zeros(n, dtype=torch.bool)
        new[dst[hit]] = True
        new &= ~ever
        remaining = (remaining - 1).clamp_min(0)
        ever |= new
        remaining[new] = infectious_steps
    return ever


def inherit_sources(parent: torch.Tensor, cols: int, heredity: float, *, generator: torch.Generator) -> torch.Tensor:
    """For every (node, column): the ancestor-or-self whose own draw the node carries, (N, cols) int64.

    Each non-root node keeps its parent's value with probability ``heredity`` independently per
    column (``parent[i] < i``, root 0). Vectorised by pointer jumping (log-depth gathers).
    """
    n = parent.numel()
    keep = torch.rand(n, cols, generator=generator) < heredity
    keep[0] = False
    ar = torch.arange(n)[:, None].expand(n, cols)
    src = torch.where(keep, parent[:, None].expand(n, cols), ar)
    for _ in range(max(1, n.bit_length() + 1)):
        nxt = torch.gather(src, 0, src)
        if torch.equal(nxt, src):
            break
        src = nxt
    return src


def disease_tree(n: int = 1044, feat_dim: int = 1000, *, seed: int = 0, infectious_steps: int = 3,
                 beta: float = 1.0, heredity: float = 0.7, infected_range: tuple[float, float] = (0.2, 0.8),
                 tries: int = 100) -> GraphData:
    """HGCN-Disease-style tree with SIR labels and susceptibility-driven binary features (see module doc).

    If no outbreak of ``tries`` lands in ``infected_range`` the one closest to it is kept and
    ``meta["in_range"]`` is False.
    """
    if n < 2 or feat_dim < 2:
        raise UserError(f"disease_tree needs n >= 2 nodes and feat_dim >= 2 features, got n={n}, feat_dim={feat_dim}")
    if not 0.0 <= heredity < 1.0:
        raise UserError(f"heredity must be in [0, 1), got {heredity}")
    g = torch.Generator().manual_seed(int(seed))
    edges = random_tree(n, seed=g)
    parent = torch.zeros(n, dtype=torch.long)
    parent[edges[1]] = edges[0]
    sus = _beta22(n, g)[inherit_sources(parent, 1, heredity, generator=g)[:, 0]]  # (N,) ~ Beta(2, 2)
    lo, hi = infected_range
    best, best_gap, n_try = None, float("inf"), 0
    for n_try in range(1, tries + 1):  # noqa: B007
        inf = sir_outbreak(edges, n, sus, infectious_steps=infectious_steps, beta=beta, generator=g)
        frac = float(inf.double().mean())
        gap = max(lo - frac, frac - hi, 0.0)
        if gap < best_gap:
            best, best_gap = inf, gap
        if gap == 0.0:
            break
    assert best is not None
    y = best.long()
    half = feat_dim // 2
    p = torch.cat([(0.02 + 0.1 * sus)[:, None].expand(n, half),
                   (0.02 + 0.1 * (1 - sus))[:, None].expand(n, feat_dim - half)], dim=1)  # (N, F)
    own = (torch.rand(n, feat_dim, generator=g, dtype=torch.float64) < p).float()  # each node's own draws
    x = torch.gather(own, 0, inherit_sources(parent, feat_dim, heredity, generator=g))
    return GraphData(x=x, edge_index=canonical_edges(edges, n), y=y, num_classes=2, name="disease_tree",
                     meta={"seed": seed, "infected_fraction": float(y.double().mean()), "outbreak_tries": n_try,
                           "in_range": best_gap == 0.0, "heredity": heredity, "susceptibility": sus.float(),
                           "parent": parent})


def _beta22(n: int, g: torch.Generator) -> torch.Tensor:
    """Beta(2, 2) samples from a torch generator: the median of three uniforms is Beta(2, 2)."""
    u = torch.rand(n, 3, generator=g, dtype=torch.float64)
    return u.median(dim=1).values


# --------------------------------------------------------------------------------------------
# splits
# --------------------------------------------------------------------------------------------


def node_split(y: torch.Tensor, *, val: float = 0.1, test: float = 0.6, seed: int = 0,
               balanced: bool = False) -> dict[str, torch.Tensor]:
    """Stratified node split {"train", "val", "test"} (sorted int64 indices, disjoint, covering all nodes).

    Each class contributes round(val * n_c) validation and round(test * n_c) test nodes.
    ``balanced=True`` is HGCN's ``split_data``: every class gives round(val * n_min) and
    round(test * n_min) nodes, n_min the smallest class size; the rest trains.
    """
    if val < 0 or test < 0 or val + test >= 1:
        raise UserError(f"node split fractions must be >= 0 with val + test < 1, got val={val}, test={test}")
    g = torch.Generator().manual_seed(int(seed))
    y = torch.as_tensor(y).long()
    classes = torch.unique(y)
    n_min = min(int((y == c).sum()) for c in classes)
    out: dict[str, list[torch.Tensor]] = {"train": [], "val": [], "test": []}
    for c in classes:
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=g)]
        base = n_min if balanced else idx.numel()
        nv, nt = round(val * base), round(test * base)
        out["val"].append(idx[:nv])
        out["test"].append(idx[nv:nv + nt])
        out["train"].append(idx[nv + nt:])
    return {k: torch.sort(torch.cat(v)).values for k, v in out.items()}


@dataclass
class EdgeSplit:
    """Link-prediction split of an undirected graph (all pair tensors (2, M), u < v).

    Attributes:
        n: number of nodes.
        train_pos / val_pos / val_neg / test_pos / test_neg: the pairs.
        forbidden: sorted pair ids never drawn as training negatives.
        negatives: ``"ours"`` (no validation/test pair is a training negative) or ``"hgcn"``.
    """

    n: int
    train_pos: torch.Tensor
    val_pos: torch.Tensor
    val_neg: torch.Tensor
    test_pos: torch.Tensor
    test_neg: torch.Tensor
    forbidden: torch.Tensor
    negatives: str = "ours"

    def sample_train_negatives(self, m: int | None = None, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """``m`` (default: one per training edge) uniform training negatives, with replacement."""
        m = self.train_pos.shape[1] if m is None else m
        return sample_pairs(self.n, m, forbid=self.forbidden, distinct=False, generator=generator)

    def adjacency(self, **kw: Any) -> torch.Tensor:
        """The message-passing operator on the training edges only (see :func:`normalized_adjacency`)."""
        return normalized_adjacency(self.train_pos, self.n, **kw)


def edge_split(edge_index: torch.Tensor, n: int, *, val: float = 0.05, test: float = 0.1, seed: int = 0,
               negatives: Literal["ours", "hgcn"] = "ours") -> EdgeSplit:
    """HGCN's ``mask_edges``: shuffle the positive edges; ``val`` / ``test`` fractions held out, with as
    many sampled non-edges each. Training negatives come from :meth:`EdgeSplit.sample_train_negatives`."""
    if val < 0 or test < 0 or val + test >= 1:
        raise UserError(f"edge split fractions must be >= 0 with val + test < 1, got val={val}, test={test}")
    if negatives not in ("ours", "hgcn"):
        raise UserError(f"negatives must be 'ours' or 'hgcn', got {negatives!r}")
    g = torch.Generator().manual_seed(int(seed))
    ei = canonical_edges(edge_index, n)
    m = ei.shape[1]
    ei = ei[:, torch.randperm(m, generator=g)]
    nv, nt = int(m * val), int(m * test)
    val_pos, test_pos, train_pos = ei[:, :nv], ei[:, nv:nv + nt], ei[:, nv + nt:]
    all_pos = torch.sort(pair_ids(ei, n)).values
    held_neg = sample_pairs(n, nv + nt, forbid=all_pos, generator=g)
    val_neg, test_neg = held_neg[:, :nv], held_neg[:, nv:]
    if negatives == "ours":
        forbidden = torch.sort(torch.cat([all_pos, pair_ids(held_neg, n)])).values
    else:  # HGCN: only the training positives are excluded
        forbidden = torch.sort(pair_ids(train_pos, n)).values
    return EdgeSplit(n, train_pos, val_pos, val_neg, test_pos, test_neg, forbidden, negatives)


# --------------------------------------------------------------------------------------------
# Planetoid
# --------------------------------------------------------------------------------------------

PLANETOID_PARTS = ("x", "y", "tx", "ty", "allx", "ally", "graph")


def _unpickle(path: Path) -> Any:
    if not path.is_file():
        raise DataFormatError(f"Planetoid file {path} is missing; expected ind.<name>.{{x,y,tx,ty,allx,ally,graph,test.index}}")
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, ImportError, IndexError) as e:
        raise DataFormatError(f"Planetoid file {path} is truncated or not a pickle ({type(e).__name__}: {e})") from None


def _dense(a: Any, path: str) -> np.ndarray:
    if hasattr(a, "toarray"):
        a = a.toarray()
    arr = np.asarray(a)
    if arr.ndim != 2:
        raise DataFormatError(f"Planetoid file {path} holds an array of shape {arr.shape}; expected a 2-D matrix")
    return arr


def load_planetoid(root: str | Path, name: str, *, allow_pickle: bool = False, val_size: int = 500) -> GraphData:
    """Load Planetoid raw ``ind.{name}.*`` files (Cora, Citeseer, PubMed) from ``root``.

    Raises:
        DataFormatError: ``allow_pickle`` not given, a file missing or truncated, inconsistent sizes.
    """
    root = Path(root)
    if not allow_pickle:
        raise DataFormatError(f"Planetoid files in {root} are Python pickles that can run code when loaded; "
                              "pass allow_pickle=True (--set allow_pickle=true) only for files you trust")
    if not root.is_dir():
        raise DataFormatError(f"Planetoid directory {root} does not exist")
    objs = {p: _unpickle(root / f"ind.{name}.{p}") for p in PLANETOID_PARTS}
    idx_path = root / f"ind.{name}.test.index"
    if not idx_path.is_file():
        raise DataFormatError(f"Planetoid file {idx_path} is missing")
    test_idx = []
    for i, line in enumerate(idx_path.read_text().splitlines(), 1):
        if line.strip():
            try:
                test_idx.append(int(line.strip()))
            except ValueError:
                raise DataFormatError(f"{idx_path} line {i}: expected one integer node index, got {line.strip()!r}") from None
    test_idx_arr = np.asarray(test_idx, dtype=np.int64)
    x, tx, allx = (_dense(objs[p], f"ind.{name}.{p}") for p in ("x", "tx", "allx"))
    y, ty, ally = (_dense(objs[p], f"ind.{name}.{p}") for p in ("y", "ty", "ally"))
    if len(tx) != len(ty) or len(allx) != len(ally) or len(x) != len(y) or len(tx) != len(test_idx_arr):
        raise DataFormatError(f"Planetoid {name} in {root}: inconsistent sizes (x {len(x)}, y {len(y)}, tx {len(tx)}, "
                              f"ty {len(ty)}, allx {len(allx)}, ally {len(ally)}, test.index {len(test_idx_arr)})")
    if len(test_idx_arr) == 0:
        raise DataFormatError(f"{idx_path} lists no test node")
    srt = np.sort(test_idx_arr)
    lo, hi = int(srt[0]), int(srt[-1])
    if lo != len(allx):
        raise DataFormatError(f"Planetoid {name}: the smallest test index is {lo} but allx has {len(allx)} rows; "
                              "the test rows must follow allx")
    full = hi - lo + 1  # missing test indices (Citeseer) get zero rows
    tx_full = np.zeros((full, tx.shape[1]), dtype=tx.dtype)
    ty_full = np.zeros((full, ty.shape[1]), dtype=ty.dtype)
    tx_full[srt - lo] = tx
    ty_full[srt - lo] = ty
    feats = np.vstack([allx, tx_full])
    labels = np.vstack([ally, ty_full])
    feats[test_idx_arr] = feats[srt]
    labels[test_idx_arr] = labels[srt]
    n = feats.shape[0]
    graph = objs["graph"]
    if not isinstance(graph, dict):
        raise DataFormatError(f"Planetoid file ind.{name}.graph must hold a dict node -> neighbour list, got {type(graph).__name__}")
    src = [int(u) for u, nbrs in graph.items() for _ in nbrs]
    dst = [int(v) for _, nbrs in graph.items() for v in nbrs]
    ei = torch.tensor([src, dst], dtype=torch.long) if src else torch.empty(2, 0, dtype=torch.long)
    if ei.numel() and int(ei.max()) >= n:
        raise DataFormatError(f"Planetoid {name}: the graph names node {int(ei.max())} but there are only {n} feature rows")
    n_train = len(y)
    splits = {"train": torch.arange(n_train), "val": torch.arange(n_train, min(n_train + val_size, n)),
              "test": torch.from_numpy(srt.copy())}
    yt = torch.from_numpy(labels.argmax(1).astype(np.int64))
    return GraphData(x=torch.from_numpy(feats.astype(np.float32)), edge_index=canonical_edges(ei, n), y=yt,
                     num_classes=int(labels.shape[1]), name=name, splits=splits,
                     meta={"source": str(root), "missing_test_rows": int(full - len(srt))})


# --------------------------------------------------------------------------------------------
# HGCN synthetic format
# --------------------------------------------------------------------------------------------


def save_hgcn_synthetic(graph: GraphData, root: str | Path, name: str) -> Path:
    """Write ``{name}.edges.csv``, ``{name}.feats.npz`` (scipy CSR) and ``{name}.labels.npy`` under ``root``."""
    import scipy.sparse as sp

    from ..engine.checkpoint import atomic_write_text

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    ei = graph.edge_index
    atomic_write_text(root / f"{name}.edges.csv", "".join(f"{u},{v}\n" for u, v in ei.t().tolist()))
    tmp = root / f".{name}.feats.tmp.npz"
    sp.save_npz(tmp, sp.csr_matrix(graph.x.numpy()))
    tmp.replace(root / f"{name}.feats.npz")
    labels = (graph.y if graph.y is not None else torch.zeros(graph.num_nodes, dtype=torch.long)).numpy()
    tmp = root / f".{name}.labels.tmp.npy"
    np.save(tmp, labels)
    tmp.replace(root / f"{name}.labels.npy")
    return root


def load_hgcn_synthetic(root: str | Path, name: str, *, id_mode: Literal["int", "first_seen"] = "int") -> GraphData:
    """Load HGCN's synthetic-graph format (see the module docstring).

    Raises:
        DataFormatError: a missing file, a malformed edge line, or sizes that do not agree.
    """
    import scipy.sparse as sp

    root = Path(root)
    paths = {k: root / f"{name}.{k}" for k in ("edges.csv", "feats.npz", "labels.npy")}
    for p in paths.values():
        if not p.is_file():
            raise DataFormatError(f"HGCN graph file {p} is missing")
    if id_mode not in ("int", "first_seen"):
        raise UserError(f"id_mode must be 'int' or 'first_seen', got {id_mode!r}")
    ids: dict[str, int] = {}
    src, dst = [], []
    for i, line in enumerate(paths["edges.csv"].read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.strip().split(",")
        if len(parts) != 2:
            raise DataFormatError(f"{paths['edges.csv']} line {i}: expected 'u,v', got {line.strip()!r}")
        ends = []
        for tok in parts:
            tok = tok.strip()
            if id_mode == "first_seen":
                ends.append(ids.setdefault(tok, len(ids)))
            else:
                try:
                    ends.append(int(tok))
                except ValueError:
                    raise DataFormatError(f"{paths['edges.csv']} line {i}: node id {tok!r} is not an integer "
                                          "(use id_mode='first_seen' for named nodes)") from None
        src.append(ends[0])
        dst.append(ends[1])
    try:
        feats = sp.load_npz(paths["feats.npz"]).toarray().astype(np.float32)
    except Exception as e:  # noqa: BLE001  # a corrupt archive raises many types
        raise DataFormatError(f"{paths['feats.npz']} is not a scipy sparse .npz file ({type(e).__name__})") from None
    try:
        labels = np.load(paths["labels.npy"], allow_pickle=False)
    except Exception as e:  # noqa: BLE001
        raise DataFormatError(f"{paths['labels.npy']} is not a numeric .npy array ({type(e).__name__})") from None
    n = feats.shape[0]
    if labels.shape[0] != n:
        raise DataFormatError(f"{paths['labels.npy']} has {labels.shape[0]} labels but {paths['feats.npz']} has {n} rows")
    ei = torch.tensor([src, dst], dtype=torch.long) if src else torch.empty(2, 0, dtype=torch.long)
    y = torch.from_numpy(labels.astype(np.int64))
    return GraphData(x=torch.from_numpy(feats), edge_index=canonical_edges(ei, n), y=y,
                     num_classes=int(y.max()) + 1 if y.numel() else 0, name=name, meta={"source": str(root), "id_mode": id_mode})


__all__ = [
    "EdgeSplit",
    "GraphData",
    "PLANETOID_PARTS",
    "canonical_edges",
    "disease_tree",
    "edge_split",
    "erdos_renyi_graph",
    "inherit_sources",
    "load_hgcn_synthetic",
    "load_planetoid",
    "node_split",
    "normalized_adjacency",
    "pair_ids",
    "random_tree",
    "row_normalize",
    "sample_pairs",
    "save_hgcn_synthetic",
    "sir_outbreak",
]
