"""DataLoaders that shard themselves under DDP."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, TensorDataset

from . import distributed as D


def make_loader(
    dataset: Dataset | tuple[torch.Tensor, ...],
    batch_size: int,
    *,
    shuffle: bool = True,
    seed: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader over ``dataset`` (or a tuple of tensors), sharded across ranks under DDP.

    Shuffling uses a generator seeded with ``seed`` so runs are reproducible.
    """
    if isinstance(dataset, tuple):
        dataset = TensorDataset(*dataset)
    if D.world_size() > 1:
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last)
    g = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=g, drop_last=drop_last)
