from dataclasses import dataclass
from typing import Literal

import pytest

from sparseforge.config import RecipeConfig, build_config, config_hash, parse_overrides
from sparseforge.errors import ConfigError


@dataclass
class Cfg(RecipeConfig):
    epochs: int = 3
    lr: float = 0.1
    name: str = "a"
    flag: bool = False
    sizes: tuple[int, ...] = (1, 2)
    mode: Literal["x", "y"] = "x"
    path: str | None = None


PRESETS = {"smoke": {"epochs": 1}, "quick": {}, "paper": {"epochs": 100, "lr": 0.01}}


def test_presets_and_overrides_are_typed():
    c = build_config(Cfg, PRESETS, "smoke", {"lr": "0.5", "flag": "true", "sizes": "3,4,5", "mode": "y", "path": "none"})
    assert (c.epochs, c.lr, c.flag, c.sizes, c.mode, c.path) == (1, 0.5, True, (3, 4, 5), "y", None)
    assert build_config(Cfg, PRESETS, "paper").epochs == 100
    assert build_config(Cfg, PRESETS, "quick", seed=7).seed == 7


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"epoch": "3"}, "unknown config key 'epoch'"),
        ({"epochs": "three"}, "expected an integer"),
        ({"lr": "fast"}, "expected a number"),
        ({"flag": "maybe"}, "expected a boolean"),
        ({"mode": "z"}, "expected one of x, y"),
    ],
)
def test_bad_overrides_are_one_line_config_errors(overrides, match):
    with pytest.raises(ConfigError, match=match) as e:
        build_config(Cfg, PRESETS, "quick", overrides)
    assert "\n" not in str(e.value)


def test_unknown_preset_and_bad_pairs():
    with pytest.raises(ConfigError, match="unknown preset"):
        build_config(Cfg, PRESETS, "huge")
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["epochs"])
    with pytest.raises(ConfigError, match="device"):
        Cfg(device="tpu")


def test_config_hash_is_stable_and_sensitive():
    a, b = Cfg(), Cfg()
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(Cfg(lr=0.2))
