"""Family contract suites over every registered entry (timm style), plugins and test-file registrations included.

Each test iterates the registry when it runs, so a method registered anywhere (another test module, an installed
plugin) is checked with no edit here.
"""

from __future__ import annotations

import pytest

from sparseforge.registry import METHODS, MODELS
from sparseforge.testing import check_all


@pytest.mark.parametrize("family", ["prox", "scorer", "spectral", "compressor", "model"])
def test_every_registered_entry_meets_its_family_contract(family):
    names = MODELS.names() if family == "model" else METHODS.names(family=family)
    assert names, f"no {family} registered"
    failures = check_all(family)
    assert not failures, "\n".join(f"{n}: {why}" for n, why in failures)


def test_built_in_methods_are_registered_by_family():
    assert {"wgsef", "group_lasso", "l1"} <= set(METHODS.names(family="prox"))
    assert {"magnitude", "random", "snip", "grasp", "synflow"} <= set(METHODS.names(family="scorer"))
    assert {"full", "sst", "lora", "relora", "relora_star", "galore"} <= set(METHODS.names(family="spectral"))
    assert {"magnitude", "magnitude_filter", "imp", "group_lasso_filter", "wgsef_filter", "wgsef_channel"} <= set(
        METHODS.names(family="compressor"))
    # the same name in two families is two entries
    assert METHODS.entry("magnitude", "scorer").obj is not METHODS.entry("magnitude", "compressor").obj


def test_family_lookups_fail_in_one_line():
    from sparseforge.errors import UserError

    with pytest.raises(UserError, match="unknown scorer method 'nope'") as e:
        METHODS.resolve("nope", "scorer")
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="is a prox method"):
        METHODS.resolve("l1", "scorer")
