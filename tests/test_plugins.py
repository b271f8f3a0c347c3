"""Methods registered outside the library: in a test file, and by an installed plugin package (entry points)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sparseforge import spectral
from sparseforge.pruning import scores
from sparseforge.registry import METHODS, register_method
from sparseforge.spectral import SpectralMethod


# -- a scorer and a spectral method defined here: usable through the public API, checked by the family suites
@register_method("test_grad_abs", family="scorer")
def grad_abs(model, params, *, batch=None, **options):
    """|dL/dw|: a plain function is enough for the scorer family."""
    x, y = batch
    loss = F.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, list(params.values()))
    return {n: g.abs() for n, g in zip(params, grads)}


class ScaledLinear(nn.Module):
    """A frozen weight with a trainable per-output scale (1 + d): a toy spectral-family layer."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("w0", weight.detach().clone())
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())
        self.d = nn.Parameter(torch.zeros(weight.shape[0]))

    @classmethod
    def from_linear(cls, linear: nn.Linear, rank: int, **opts) -> ScaledLinear:
        return cls(linear.weight, linear.bias)

    def forward(self, x):
        return F.linear(x, self.w0 * (1 + self.d)[:, None], self.bias)

    def merge(self) -> nn.Linear:
        lin = nn.Linear(self.w0.shape[1], self.w0.shape[0], bias=self.bias is not None)
        with torch.no_grad():
            lin.weight.copy_(self.w0 * (1 + self.d)[:, None])
            if self.bias is not None:
                lin.bias.copy_(self.bias)
        return lin


register_method("test_scaled", family="spectral")(SpectralMethod("toy per-output scale", layer=ScaledLinear,
                                                                  trainable=lambda m, n, r, bias: m + (m if bias else 0)))


def test_methods_registered_in_a_test_file_work_through_the_public_api():
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    batch = (torch.randn(5, 4), torch.randint(0, 3, (5,)))
    s = scores(model, "test_grad_abs", batch=batch, targets=["0"])
    assert set(s) == {"0.weight"} and s["0.weight"].shape == (6, 4)
    x = torch.randn(2, 4)
    ref = model(x)
    spectral.convert(model, "test_scaled", rank=1, targets=["2"])
    assert isinstance(model[2], ScaledLinear) and torch.allclose(model(x), ref)
    assert spectral.memory.analytic_trainable(3, 6, 1, "test_scaled") == 6
    assert type(spectral.merge(model)[2]) is nn.Linear
    # the family suites (tests/test_families.py) iterate the registry when they run: these are in it
    assert "test_grad_abs" in METHODS.names(family="scorer") and "test_scaled" in METHODS.names(family="spectral")


# -- an installed plugin: a module named by an entry point of group sparseforge.methods
PLUGIN = '''
"""A third-party scorer package for sparseforge."""
import torch
from sparseforge.registry import register_method


@register_method("plugin_weight_sq", family="scorer")
def weight_sq(model, params, *, batch=None, **options):
    return {n: p.detach() ** 2 for n, p in params.items()}
'''


def _install(site: Path, name: str, module_src: str, dist: str) -> None:
    """What `pip install` leaves: the module and a dist-info folder with entry_points.txt."""
    (site / f"{name}.py").write_text(textwrap.dedent(module_src))
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"  # pip normalises the folder name
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[sparseforge.methods]\n{name} = {name}\n")
    (info / "RECORD").write_text("")


def _run(args, site: Path, tmp: Path):
    env = dict(os.environ, PYTHONPATH=str(site), SPARSEFORGE_NO_PROGRESS="1", CI="1")
    return subprocess.run([sys.executable, "-m", "sparseforge.cli", *args], capture_output=True, text=True,
                          env=env, cwd=tmp, timeout=300)


def test_an_installed_plugin_scorer_is_used_by_a_recipe(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    _install(site, "sf_plugin_demo", PLUGIN, "sf-plugin-demo")
    _install(site, "sf_plugin_broken", "raise ImportError('this plugin is broken')\n", "sf-plugin-broken")
    out = tmp_path / "run"
    r = _run(["run", "pruning-at-init", "--preset", "smoke", "--set", "methods=snip,plugin_weight_sq",
              "--out", str(out)], site, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert any("plugin_weight_sq" in k for k in summary), sorted(summary)[:10]
    warn = [ln for ln in r.stderr.splitlines() if "sf_plugin_broken" in ln]
    assert len(warn) == 1 and "failed to import" in warn[0] and "Traceback" not in r.stderr
    listed = _run(["list", "methods"], site, tmp_path)
    assert listed.returncode == 0 and "plugin_weight_sq" in listed.stdout
