"""DataLoaders whose shuffling depends only on (seed, epoch), sharded under DDP.

Because the order of epoch ``e`` is a pure function of ``(seed, e)``, a run resumed from a
checkpoint sees exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, TensorDataset

from . import distributed as D


class EpochSampler(Sampler[int]):
    """A random permutation per epoch, drawn from a generator seeded with ``seed + epoch``.

    :func:`sparseforge.engine.fit` calls :meth:`set_epoch` before every epoch.
    """

    def __init__(self, n: int, *, seed: int = 0, shuffle: bool = True) -> None:
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip_once(self, n: int) -> None:
        """The next pass starts at its ``n``-th index (a resumed epoch; later passes are whole)."""
        self._skip = max(0, int(n))

    def __iter__(self) -> Iterator[int]:
        skip, self._skip = self._skip, 0
        if not self.shuffle:
            return iter(range(skip, self.n))
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g)[skip:].tolist())

    def __len__(self) -> int:
        return self.n


def make_loader(
    dataset: Dataset | tuple[torch.Tensor, ...],
    batch_size: int,
    *,
    shuffle: bool = True,
    seed: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader over ``dataset`` (or a tuple of tensors), sharded across ranks under DDP."""
    if isinstance(dataset, tuple):
        dataset = TensorDataset(*dataset)
    if D.world_size() > 1:
        sampler: Sampler[int] = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
    else:
        sampler = EpochSampler(len(dataset), seed=seed, shuffle=shuffle)  # type: ignore[arg-type]
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last)
