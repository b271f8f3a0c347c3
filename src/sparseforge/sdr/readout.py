"""Read-outs that classify Sparsey codes.

Paper: Rinkus & Leveille, "Superposed Episodic and Semantic Memory via Sparse Distributed
Representation", arXiv 1710.07829. Sparsey is unsupervised; classification adds a read-out on
the set A of active cells (the concatenated codes of the chosen levels). ``count`` and
``binary`` follow the class-node read-out described by the authors (``count`` is the
reconstructed default); ``nn_overlap`` is the model's own similarity measure (code
intersection); ``svm`` is the linear SVM the authors used on their 3-level video model:

- ``count`` (default):  C[i, y] += 1 per training item;  score_c = sum_{i in A} C[i, c] / N_c
- ``binary``:           C[i, y] = 1;                      score_c = sum_{i in A} C[i, c]
- ``nn_overlap``:       1-nearest neighbour by |A_test ∩ A_train| over all stored training codes
- ``svm``:              a linear SVM on the binary code vectors (scikit-learn)

Argmax ties go to the lowest class index (for ``nn_overlap``: the earliest training item).
:func:`pixel_knn_accuracy` is the reference baseline on raw binary pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..errors import UserError

__all__ = ["Readout", "READOUTS", "readout_accuracies", "pixel_knn_accuracy"]

READOUTS = ("count", "binary", "nn_overlap", "svm")


class Readout:
    """Supervised read-out over binary active-cell vectors ``(N, n_cells)``.

    Args:
        kind: one of ``count``, ``binary``, ``nn_overlap``, ``svm``.
        svm_c: regularisation C of the linear SVM.
        chunk: test rows per block in ``nn_overlap`` (bounds memory).
    """

    def __init__(self, kind: str = "count", *, svm_c: float = 0.1, chunk: int = 1024) -> None:
        if kind not in READOUTS:
            raise UserError(f"unknown readout {kind!r}; choose one of: {', '.join(READOUTS)}")
        self.kind = kind
        self.svm_c = svm_c
        self.chunk = chunk
        self.n_classes = 0
        self._C: Tensor | None = None
        self._n: Tensor | None = None
        self._train: Tensor | None = None
        self._ytrain: Tensor | None = None
        self._svm: Any = None

    def fit(self, A: Tensor, y: Tensor) -> Readout:
        A = torch.as_tensor(A).float()  # (N, n_cells) binary
        y = torch.as_tensor(y).long()
        if A.dim() != 2 or y.shape != (A.shape[0],):
            raise UserError(f"Readout.fit expects A (N, n_cells) and y (N,), got {tuple(A.shape)}, {tuple(y.shape)}")
        self.n_classes = int(y.max()) + 1
        if self.kind in ("count", "binary"):
            onehot = torch.nn.functional.one_hot(y, self.n_classes).float()  # (N, n_classes)
            C = A.T @ onehot  # (n_cells, n_classes) counts
            self._C = C if self.kind == "count" else (C > 0).float()
            self._n = onehot.sum(0).clamp_min(1.0)
        elif self.kind == "nn_overlap":
            self._train, self._ytrain = A, y
        else:
            from sklearn.svm import LinearSVC

            self._svm = LinearSVC(C=self.svm_c, max_iter=5000).fit(A.numpy(), y.numpy())
        return self

    def scores(self, A: Tensor) -> Tensor:
        """Class scores ``(N, n_classes)`` (``count``/``binary``/``svm``)."""
        A = torch.as_tensor(A).float()
        if self.kind == "count":
            assert self._C is not None and self._n is not None
            return (A @ self._C) / self._n
        if self.kind == "binary":
            assert self._C is not None
            return A @ self._C
        if self.kind == "svm":
            return torch.as_tensor(self._svm.decision_function(A.numpy())).float()
        raise UserError("scores() is not defined for nn_overlap; use predict()")

    def predict(self, A: Tensor) -> Tensor:
        A = torch.as_tensor(A).float()
        if self.kind == "nn_overlap":
            assert self._train is not None and self._ytrain is not None
            out = []
            for i in range(0, A.shape[0], self.chunk):
                overlap = A[i : i + self.chunk] @ self._train.T  # (n, N_train) |A ∩ A_j|
                out.append(self._ytrain[overlap.argmax(1)])
            return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)
        if self.kind == "svm":
            return torch.as_tensor(self._svm.predict(A.numpy())).long()
        return self.scores(A).argmax(1)

    def accuracy(self, A: Tensor, y: Tensor) -> float:
        return float((self.predict(A) == torch.as_tensor(y).long()).float().mean())


def readout_accuracies(
    A_train: Tensor, y_train: Tensor, A_test: Tensor, y_test: Tensor, *, kinds: Sequence[str] = READOUTS
) -> dict[str, float]:
    """Test accuracy of each read-out kind fitted on ``(A_train, y_train)``."""
    return {k: Readout(k).fit(A_train, y_train).accuracy(A_test, y_test) for k in kinds}


def pixel_knn_accuracy(x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor, *, k: int = 1) -> float:
    """k-nearest-neighbour accuracy (Euclidean) on the raw binary pixels: the reference baseline."""
    from sklearn.neighbors import KNeighborsClassifier

    knn = KNeighborsClassifier(n_neighbors=k).fit(x_train.flatten(1).numpy(), y_train.numpy())
    return float((torch.as_tensor(knn.predict(x_test.flatten(1).numpy())) == y_test).float().mean())
