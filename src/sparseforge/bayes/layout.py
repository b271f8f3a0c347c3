"""How a layer's weights are laid out as the support matrix S of the Turbo-VBI MRF prior.

Paper: Xia, Tsang, Lau, "Structured Bayesian Compression for Deep Neural Networks Based on the
Turbo-VBI Approach", arXiv:2302.10483. Rows of S are fan-in indices and columns are output neurons,
so vertical MRF edges run along one neuron's fan-in and horizontal edges join neighbouring neurons:

* Linear ``W[out, in]``: S is ``in x out`` with S[i, o] = W[o, i].
* Conv ``W[out, in, kh, kw]``, ``"fanin_x_out"`` (default): S is ``(in·kh·kw) x out``, rows in
  lexicographic (in, kh, kw) order, i.e. S = W.reshape(out, -1).T.
* Conv ``"tf_blocks"``: the authors' demo layout, the TensorFlow kernel ``[kh, kw, in, out]`` reshaped
  row-major to ``(kh·in) x (kw·out)``. It splits one neuron over several columns; kept for comparison.

Both maps are bijections (:func:`from_support` inverts :func:`to_support`).
"""

from __future__ import annotations

from typing import Literal

import torch

from ..errors import ConfigError

__all__ = ["Layout", "LAYOUTS", "support_shape", "to_support", "from_support"]

Layout = Literal["fanin_x_out", "tf_blocks"]
LAYOUTS = ("fanin_x_out", "tf_blocks")


def _check(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ConfigError(f"conv_layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")


def support_shape(shape: torch.Size | tuple[int, ...], layout: Layout = "fanin_x_out") -> tuple[int, int]:
    """(rows, columns) of S for a weight of ``shape`` (2-D Linear or 4-D Conv)."""
    _check(layout)
    shape = tuple(shape)
    if len(shape) == 4 and layout == "tf_blocks":
        out, cin, kh, kw = shape
        return kh * cin, kw * out
    out = shape[0]
    n = 1
    for d in shape[1:]:
        n *= d
    return n, out


def to_support(w: torch.Tensor, layout: Layout = "fanin_x_out") -> torch.Tensor:
    """The weight-shaped tensor ``w`` arranged as S (a view/copy of shape :func:`support_shape`)."""
    _check(layout)
    if w.dim() == 4 and layout == "tf_blocks":
        out, cin, kh, kw = w.shape
        return w.permute(2, 3, 1, 0).reshape(kh * cin, kw * out)  # [kh, kw, in, out] row-major
    return w.reshape(w.shape[0], -1).t()


def from_support(s: torch.Tensor, shape: torch.Size | tuple[int, ...], layout: Layout = "fanin_x_out") -> torch.Tensor:
    """Inverse of :func:`to_support`: S back to a tensor of the weight's ``shape``."""
    _check(layout)
    shape = tuple(shape)
    if tuple(s.shape) != support_shape(shape, layout):
        raise ConfigError(f"support matrix of shape {tuple(s.shape)} does not fit a weight of shape {shape}")
    if len(shape) == 4 and layout == "tf_blocks":
        out, cin, kh, kw = shape
        return s.reshape(kh, kw, cin, out).permute(3, 2, 0, 1).contiguous()
    return s.t().reshape(shape).contiguous()
