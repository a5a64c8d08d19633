"""Typed configs from YAML (pipeline/config.py): the shipped training config, ``key=value``
overrides, clear errors for unknown keys and bad values, and a save/load round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.config import apply_overrides, from_dict, load_config, save_config, to_dict
from pipeline.prepare_stage import PrepareConfig
from pipeline.sources import StorageOptions
from pipeline.train_stage import LossConfig, ModelConfig, TrainConfig
from tests.shared_paths import REPO

pytestmark = pytest.mark.timeout(30)

TRAIN_SMALL = REPO / "jobs" / "configs" / "train_small.yaml"


def test_train_small_yaml_loads_with_its_values():
    cfg = load_config(TrainConfig, TRAIN_SMALL)
    raw = yaml.safe_load(TRAIN_SMALL.read_text())
    assert isinstance(cfg.model, ModelConfig) and isinstance(cfg.loss, LossConfig)
    assert cfg.model.name == raw["model"]["name"] == "seg"
    assert cfg.model.base_width == raw["model"]["base_width"]
    for key in ("data", "val_data", "tables", "crop", "batch_size", "steps", "num_workers"):
        assert getattr(cfg, key) == raw[key], key
    assert cfg.crop % 16 == 0
    assert cfg.lr == TrainConfig.lr and cfg.loss == LossConfig()  # defaults where unset


def test_overrides_reach_nested_fields():
    cfg = load_config(
        TrainConfig,
        TRAIN_SMALL,
        ["steps=5", "model.name=cls-afm", "model.kwargs.num_attn_blocks=1", "lr=1e-3"],
    )
    assert cfg.steps == 5 and isinstance(cfg.steps, int)
    assert cfg.model.name == "cls-afm"
    assert cfg.model.kwargs == {"num_attn_blocks": 1}
    assert cfg.model.base_width == 16  # the sibling from the file survives
    assert cfg.lr == pytest.approx(1e-3) and isinstance(cfg.lr, float)


def test_overrides_do_not_mutate_their_input():
    data = {"data": "d", "model": {"name": "seg"}}
    out = apply_overrides(data, ["model.name=colornet", "val_data=null"])
    assert data == {"data": "d", "model": {"name": "seg"}}
    assert out["model"]["name"] == "colornet" and out["val_data"] is None
    assert from_dict(TrainConfig, out).val_data is None


def test_load_without_a_file_uses_defaults_and_overrides():
    cfg = load_config(TrainConfig, None, ["data=somewhere"])
    assert cfg == TrainConfig(data="somewhere")


@pytest.mark.parametrize(
    "override, where",
    [("nope=1", "nope"), ("model.nope=1", "nope"), ("loss.colour=2", "colour")],
)
def test_unknown_keys_are_errors(override: str, where: str):
    with pytest.raises(ValueError, match="unknown keys") as e:
        load_config(TrainConfig, TRAIN_SMALL, [override])
    assert where in str(e.value)


def test_unknown_key_in_the_file_is_an_error(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("data: x\nstepz: 3\n")
    with pytest.raises(ValueError, match=r"unknown keys \['stepz'\]"):
        load_config(TrainConfig, path)


@pytest.mark.parametrize(
    "override, message",
    [
        ("steps=abc", "expected int, got 'abc'"),
        ("lr=fast", "expected float, got 'fast'"),
        ("model=seg", "expected a mapping"),
        ("use_gpu=maybe", "not a boolean: 'maybe'"),
    ],
)
def test_bad_values_are_errors_naming_the_field(override: str, message: str):
    field = override.split("=")[0]
    with pytest.raises(ValueError, match=message) as e:
        load_config(TrainConfig, TRAIN_SMALL, [override])
    assert field in str(e.value)


def test_override_without_equals_sign_is_an_error():
    with pytest.raises(ValueError, match="not key=value"):
        load_config(TrainConfig, TRAIN_SMALL, ["steps"])


@pytest.mark.parametrize(
    "value, expected",
    [("true", True), ("false", False), ("yes", True), ("no", False), ("1", True), ("0", False)],
)
def test_bool_parsing(value: str, expected: bool):
    assert load_config(TrainConfig, TRAIN_SMALL, [f"amp={value}"]).amp is expected
    # strings that reach the dataclass unparsed (e.g. from JSON) follow the same rule
    assert from_dict(TrainConfig, {"data": "d", "amp": value.upper()}).amp is expected


def test_python_tags_in_yaml_are_refused(tmp_path: Path):
    path = tmp_path / "evil.yaml"
    path.write_text("data: !!python/object/apply:os.getcwd []\n")
    with pytest.raises(yaml.YAMLError):
        load_config(TrainConfig, path)


def test_save_config_round_trip(tmp_path: Path):
    cfg = load_config(
        TrainConfig, TRAIN_SMALL, ["model.kwargs.num_attn_blocks=1", "use_gpu=true", "tables=null"]
    )
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert load_config(TrainConfig, path) == cfg
    assert yaml.safe_load(path.read_text()) == to_dict(cfg)


def test_prepare_config_round_trip_with_lists_and_frozen_options(tmp_path: Path):
    cfg = load_config(
        PrepareConfig, None, ["sources=a/b", "out=o", "storage.endpoint_url=http://127.0.0.1:9"]
    )
    assert cfg.sources == ["a/b"]  # a single value becomes a one-item list
    assert cfg.storage == StorageOptions(endpoint_url="http://127.0.0.1:9")
    assert load_config(PrepareConfig, save_config(cfg, tmp_path / "p.yaml")) == cfg


def test_non_integer_number_for_an_int_field_is_an_error():
    with pytest.raises(ValueError):
        load_config(TrainConfig, TRAIN_SMALL, ["steps=1.7"])


def test_override_below_a_scalar_is_a_value_error():
    with pytest.raises(ValueError, match="steps"):
        load_config(TrainConfig, TRAIN_SMALL, ["steps.x=1"])
