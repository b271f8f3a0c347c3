"""Datasets: offline defaults that ship with a dependency or are generated, and loaders for
the usual on-disk formats (never any download).

Offline, registered in ``sparseforge.registry.DATASETS`` (builders callable with no arguments,
returning a :class:`DataSplits`):

- ``digits``: scikit-learn's bundled 8x8 digits, stratified 1,437 / 360 split.
- ``modular``: modular-arithmetic tables for grokking.

Loaders for user files (plain functions; their registry entries, if any, carry
``needs_path=True`` and must be given ``root=...``):

- :func:`load_idx` / :func:`load_mnist_dir`: MNIST-family IDX files, raw or gzip.
- :func:`load_cifar10`: CIFAR-10 python pickles (``allow_pickle=True`` required; trusted files only).
- :func:`load_planetoid`: Planetoid ``ind.*`` files (Cora / Citeseer / PubMed; ``allow_pickle=True``);
  :func:`disease_tree` generates HGCN-style "Disease" graphs (an SIR outbreak on a random tree).
- :func:`load_parallel_text`: parallel sentence files (one sentence per line); :func:`toy_translation`
  generates a deterministic language pair with reordering and agreement; :func:`corpus_bleu` (sacrebleu).
- :func:`load_gns_npz`: GNS-style particle trajectories (``.npz`` + ``metadata.json``);
  :func:`generate_particle_splits` simulates them with the MLS-MPM generator.

Text corpora (:mod:`.text`) and moving-shape videos (:mod:`.videos`) live in their own modules.
"""

from __future__ import annotations

from .cifar import CIFAR10_LABEL_NAMES, Cifar10, channel_stats, load_cifar10, normalize, random_crop_flip
from .digits import DataSplits, load_digits_builtin
from .graphs import GraphData, disease_tree, edge_split, load_hgcn_synthetic, load_planetoid, node_split
from .idx import load_idx, load_mnist_dir, read_idx_images, read_idx_labels
from .modular import MODULAR_OPS, ModularData, modular_arithmetic, modular_labels
from .particles import Trajectory, generate_particle_splits, load_gns_dataset, load_gns_npz, save_gns_npz
from .translation import Vocab, corpus_bleu, load_parallel_text, toy_translation

__all__ = [
    "DataSplits",
    "load_digits_builtin",
    "load_idx",
    "load_mnist_dir",
    "read_idx_images",
    "read_idx_labels",
    "CIFAR10_LABEL_NAMES",
    "Cifar10",
    "load_cifar10",
    "channel_stats",
    "normalize",
    "random_crop_flip",
    "MODULAR_OPS",
    "ModularData",
    "modular_arithmetic",
    "modular_labels",
    "GraphData",
    "disease_tree",
    "edge_split",
    "load_hgcn_synthetic",
    "load_planetoid",
    "node_split",
    "Trajectory",
    "generate_particle_splits",
    "load_gns_dataset",
    "load_gns_npz",
    "save_gns_npz",
    "Vocab",
    "corpus_bleu",
    "load_parallel_text",
    "toy_translation",
]
