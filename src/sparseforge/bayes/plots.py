"""Figures of a Turbo-VBI run: support posteriors as images and outer-loop convergence.

Paper: Xia, Tsang, Lau, "Structured Bayesian Compression for Deep Neural Networks Based on the
Turbo-VBI Approach", arXiv:2302.10483. The support posteriors π̃ are drawn in the layout the MRF prior
sees (rows = fan-in, columns = neurons, :mod:`sparseforge.bayes.layout`), so clustering inside
neurons shows as vertical runs and removed neurons as empty columns.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["support_figure", "convergence_figure"]


def support_figure(images: Mapping[str, Mapping[str, torch.Tensor]], *, title: str = "") -> Any:
    """One row per layer, one column per variant: π̃ (or any per-weight map) as the prior lays it out.

    Args:
        images: ``{variant: {layer: (R, C) tensor in [0, 1]}}`` (e.g. :meth:`TurboVBI.support_images` per run).
        title: figure title prefix (e.g. the model name).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(images)
    layers = list(images[variants[0]])
    fig, axes = plt.subplots(len(layers), len(variants), figsize=(3.5 * len(variants), 1.9 * len(layers) + 0.6),
                             squeeze=False)
    for r, layer in enumerate(layers):
        for c, v in enumerate(variants):
            ax = axes[r][c]
            im = ax.imshow(images[v][layer].numpy(), vmin=0, vmax=1, cmap="viridis", aspect="auto", interpolation="nearest")
            ax.set_title(f"{v}: {layer} ({'x'.join(map(str, images[v][layer].shape))})", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.colorbar(im, ax=axes, shrink=0.6, label="π̃ = q(s = 1)")
    fig.suptitle(f"{title}: support posteriors (rows = fan-in, columns = neurons)".lstrip(": "), fontsize=9)
    return fig


def convergence_figure(history: Mapping[str, list[dict[str, float]]]) -> Any:
    """ELBO estimate and relative changes of ã, b̃, π̃ per outer round, one line per variant.

    Args:
        history: ``{variant: TurboVBICallback.history}``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9.0, 3.2))
    for v, rows in history.items():
        t = [r["round"] for r in rows]
        a1.plot(t, [r.get("elbo", r["elbo_prior_per_example"]) for r in rows], label=v, lw=1.2)
        for k, ls in (("d_a", ":"), ("d_b", "--"), ("d_pi", "-")):
            a2.semilogy(t, [max(r[k], 1e-12) for r in rows], ls, label=f"{v} {k}", lw=1.0)
    a1.set_xlabel("outer round")
    a1.set_ylabel("ELBO estimate per example")
    a2.set_xlabel("outer round")
    a2.set_ylabel("relative change")
    a1.legend(fontsize=7)
    a2.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig
