"""scikit-learn's bundled 8x8 digits, and the :class:`DataSplits` container.

The digits set ships with scikit-learn (a core dependency), so it is the offline default
for the image recipes: 1,797 images, 10 classes, pixel values
0-16, divided by 16 and reshaped to ``(1, 8, 8)``; a stratified split
(``train_test_split(test_size=0.2, stratify=y, random_state=seed)``) gives 1,437 train and
360 test images.

Registered datasets (``sparseforge.registry.DATASETS``) are builders callable with no
arguments that return a :class:`DataSplits`. Builders that need a user path carry the
metadata ``needs_path=True`` and must be called with ``root=...``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import UserError
from ..registry import register_dataset

__all__ = ["DataSplits", "load_digits_builtin", "digits"]


@dataclass
class DataSplits:
    """Train and test tensors of one dataset, plus what a model needs to know about them.

    Attributes:
        x_train: Training inputs, ``(N_train, *input_shape)``.
        y_train: Training labels, int64 ``(N_train,)``.
        x_test: Test inputs, ``(N_test, *input_shape)``.
        y_test: Test labels, int64 ``(N_test,)``.
        num_classes: Number of output classes.
        input_shape: Shape of one input (without the batch dimension).
        input_dtype: ``"float"`` for real-valued inputs, ``"long"`` for token ids.
        meta: Free-form extras (e.g. ``vocab_size``, ``label_names``, ``p``).
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    input_dtype: str = "float"
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def train(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_train, y_train)``, ready for ``engine.make_loader``."""
        return self.x_train, self.y_train

    @property
    def test(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_test, y_test)``."""
        return self.x_test, self.y_test


def load_digits_builtin(
    split_seed: int = 0, *, test_size: float = 0.2, n_train: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits as tensors, with a stratified train/test split.

    Args:
        split_seed: ``random_state`` of the stratified split (or seed of the permutation).
        test_size: Fraction of the images held out for test (0.2 gives 1,437 / 360).
        n_train: If given, ignore ``test_size`` and use the image protocol
            of the grokking-tickets paper: a seeded permutation whose first ``n_train``
            images train (1,000 there) and the rest test.

    Returns:
        ``(X_train, y_train, X_test, y_test)``: float32 images ``(N, 1, 8, 8)`` in [0, 1]
        and int64 labels.
    """
    if not 0.0 < test_size < 1.0:
        raise UserError(f"test_size must be in (0, 1), got {test_size}")
    # Imported here: sklearn is slow to import and this module is imported by load_all().
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.data.astype("float32") / 16.0).reshape(-1, 1, 8, 8)  # (1797, 1, 8, 8)
    y = bunch.target.astype("int64")
    if n_train is not None:
        if not 0 < n_train < len(y):
            raise UserError(f"n_train must be in [1, {len(y) - 1}], got {n_train}")
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(int(split_seed)))
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        tr, te = perm[:n_train], perm[n_train:]
        return xt[tr].contiguous(), yt[tr].contiguous(), xt[te].contiguous(), yt[te].contiguous()
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_size, stratify=y, random_state=split_seed)
    return (
        torch.from_numpy(x_tr).contiguous(),
        torch.from_numpy(y_tr).contiguous(),
        torch.from_numpy(x_te).contiguous(),
        torch.from_numpy(y_te).contiguous(),
    )


@register_dataset("digits", num_classes=10, input_shape=(1, 8, 8), needs_path=False)
def digits(*, split_seed: int = 0, flatten: bool = False, n_train: int | None = None) -> DataSplits:
    """The bundled digits as a :class:`DataSplits` (offline default for image recipes).

    Args:
        split_seed: Seed of the stratified 1,437 / 360 split.
        flatten: Return inputs as ``(N, 64)`` vectors (for MLPs) instead of ``(N, 1, 8, 8)``.
        n_train: Use a seeded permutation with this many training images instead
            (grokking protocol: ``n_train=1000``, ``flatten=True``).
    """
    x_tr, y_tr, x_te, y_te = load_digits_builtin(split_seed, n_train=n_train)
    shape: tuple[int, ...] = (1, 8, 8)
    if flatten:
        x_tr, x_te, shape = x_tr.flatten(1), x_te.flatten(1), (64,)
    return DataSplits(x_tr, y_tr, x_te, y_te, num_classes=10, input_shape=shape, meta={"name": "digits"})
