import re
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


# --- generic checks every config gets: ranges, finite floats, data folders -------------------

from typing import ClassVar  # noqa: E402

from sparseforge.config import config_limits, default_limit  # noqa: E402


@dataclass
class Sized(RecipeConfig):
    limits: ClassVar[dict] = {"width": 64, "p": (3, 101), "steps": None}
    epochs: int = 3
    finetune_epochs: int = 0
    steps: int = 10
    warmup_steps: int = 0
    batch_size: int = 8
    eval_batch: int = 16
    d_model: int = 32
    width: int = 8
    p: int = 7
    seq_len: int = 16
    video_size: tuple[int, ...] = (4, 4)
    seeds: tuple[int, ...] = ()
    data_seed: int | None = None
    lr: float = 0.1
    step_size: float = 0.5  # a float "size": no default range


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"epochs": "1000000000000"}, "epochs=1_000_000_000_000 is above the documented maximum"),
        ({"epochs": "0"}, "epochs must be between 1 and 100_000"),
        ({"finetune_epochs": "-1"}, "finetune_epochs"),
        ({"warmup_steps": "-1"}, "warmup_steps"),
        ({"batch_size": "0"}, "batch_size=0 is below the minimum"),
        ({"eval_batch": "-1"}, "eval_batch"),
        ({"d_model": "100000"}, "d_model"),
        ({"seq_len": "0"}, "seq_len"),
        ({"video_size": "4,0"}, "video_size=0"),
        ({"seeds": "1,-1"}, "seeds=-1"),
        ({"data_seed": "4294967296"}, "data_seed"),
        ({"seed": "-1"}, "seed=-1"),
        ({"width": "65"}, "width must be between 1 and 64"),  # declared maximum, default minimum kept
        ({"p": "2"}, "p must be between 3 and 101"),  # declared range
        ({"lr": "nan"}, "not a finite number"),
        ({"lr": "-inf"}, "not a finite number"),
        ({"lr": ""}, "has no value"),
        ({"data_seed": ""}, "has no value; give one (or none to unset it)"),
    ],
)
def test_generic_limits(overrides, match):
    with pytest.raises(ConfigError, match=re.escape(match)) as e:
        build_config(Sized, {"smoke": {}, "quick": {}, "paper": {}}, "quick", overrides)
    assert "\n" not in str(e.value)


def test_limits_can_be_lifted_and_floats_are_not_sizes():
    c = build_config(Sized, {"smoke": {}, "quick": {}, "paper": {}}, "quick",
                     {"steps": "100000000000", "step_size": "0.001", "finetune_epochs": "0", "data_seed": "none"})
    assert c.steps == 100_000_000_000 and c.step_size == 0.001 and c.data_seed is None
    lim = config_limits(Sized)
    assert "steps" not in lim and lim["width"] == (1, 64) and lim["p"] == (3, 101) and "step_size" not in lim
    assert default_limit("batch_size") == (1, 1_048_576) and default_limit("lr") is None


def test_a_subclass_that_forgets_super_post_init_is_still_checked():
    @dataclass
    class Forgetful(RecipeConfig):
        epochs: int = 3

        def __post_init__(self) -> None:  # no super().__post_init__()
            pass

    with pytest.raises(ConfigError, match="epochs"):
        build_config(Forgetful, PRESETS, "quick", {"epochs": "0"})


@dataclass
class Files(RecipeConfig):
    file_datasets: ClassVar[tuple[str, ...]] = ("mnist", "cifar10")
    data_dirs: ClassVar[dict] = {"video_dir": ("video_data", ("frames",))}
    dataset: str = "digits"
    data_dir: str | None = None
    video_data: str = "moving_shapes"
    video_dir: str | None = None


def test_data_dir_is_checked_against_the_datasets_that_read_it(tmp_path):
    P = {"smoke": {}, "quick": {}, "paper": {"dataset": "mnist"}}  # a preset may leave data_dir to the user
    assert build_config(Files, P, "paper").data_dir is None
    with pytest.raises(ConfigError, match="data_dir is read only by dataset=mnist/cifar10, and dataset='digits'"):
        build_config(Files, P, "quick", {"data_dir": str(tmp_path)})
    with pytest.raises(ConfigError, match="does not exist"):
        build_config(Files, P, "quick", {"dataset": "mnist", "data_dir": str(tmp_path / "nope")})
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        build_config(Files, P, "quick", {"dataset": "cifar10", "data_dir": str(tmp_path / "f")})
    assert build_config(Files, P, "quick", {"dataset": "mnist", "data_dir": str(tmp_path)}).data_dir == str(tmp_path)
    with pytest.raises(ConfigError, match="video_dir is read only by video_data=frames"):
        build_config(Files, P, "quick", {"video_dir": str(tmp_path)})
    assert build_config(Files, P, "quick", {"video_data": "frames", "video_dir": str(tmp_path)}).video_dir


def test_undeclared_file_datasets_do_not_check_data_dir(tmp_path):
    @dataclass
    class Legacy(RecipeConfig):
        dataset: str = "digits"
        data_dir: str | None = None

    assert build_config(Legacy, PRESETS, "quick", {"data_dir": "/anything"}).data_dir == "/anything"


def test_data_dirs_with_a_tuple_of_datasets(tmp_path):
    @dataclass
    class Multi(RecipeConfig):
        data_dirs: ClassVar[dict] = {"mnist_dir": ("datasets", ("mnist",)), "cifar10_dir": ("datasets", ("cifar10",))}
        datasets: tuple[str, ...] = ("digits",)
        mnist_dir: str | None = None
        cifar10_dir: str | None = None

    with pytest.raises(ConfigError, match="mnist_dir is read only by datasets=mnist, and datasets='digits'"):
        build_config(Multi, PRESETS, "quick", {"mnist_dir": str(tmp_path)})
    c = build_config(Multi, PRESETS, "quick", {"datasets": "digits,mnist", "mnist_dir": str(tmp_path)})
    assert c.mnist_dir == str(tmp_path)
    with pytest.raises(ConfigError, match="cifar10_dir"):
        build_config(Multi, PRESETS, "quick", {"datasets": "digits,mnist", "cifar10_dir": str(tmp_path)})
