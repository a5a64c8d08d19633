"""Checkpoints (colorization/checkpoint.py): exact round trips for every registered model, and
every kind of mismatch or damage refused with a :class:`CheckpointError` that names it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from colorization.abgrid import AbGrid
from colorization.checkpoint import (
    FORMAT,
    META,
    STATE,
    TABLE,
    WEIGHTS,
    CheckpointError,
    copy_checkpoint,
    load_model,
    load_training_state,
    read_header,
    read_meta,
    save_checkpoint,
)
from colorization.color import rgb_to_lab
from colorization.models import create_model, list_models
from colorization.tables import ColorTable, load_zhang_313
from tests.conftest import require
from tests.shared_paths import SHARED_DATA, SHARED_REFERENCE

pytestmark = pytest.mark.timeout(60)

WIDTH = 8
N_CATEGORIES = 5
SIZE = 32


@pytest.fixture(scope="module")
def table() -> ColorTable:
    """A colour table from the ab histogram of one real photograph (coco-tiny val2017)."""
    photo = sorted(require(SHARED_DATA / "coco-tiny" / "val2017").glob("*.jpg"))[0]
    rgb = np.asarray(Image.open(photo).convert("RGB"))[::4, ::4]
    grid = AbGrid()
    hist = np.bincount(grid.cell_of(rgb_to_lab(rgb)[..., 1:]).ravel(), minlength=grid.n_cells)
    return ColorTable.from_histogram(hist, source=photo.name)


@pytest.fixture(scope="module")
def zhang() -> ColorTable:
    return load_zhang_313(require(SHARED_REFERENCE / "zhang2016_pts_in_hull.npy"))


def make_model(
    name: str, table: ColorTable | None, width: int = WIDTH, seed: int = 0, **kwargs: Any
):
    """A tiny model with non-trivial BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    kwargs = {"base_width": width, "num_categories": N_CATEGORIES, **kwargs}
    if name != "colornet":
        kwargs["num_classes"] = table.num_classes
    model = create_model(name, **kwargs)
    model.train()
    with torch.no_grad():
        for _ in range(2):  # update the running statistics away from their defaults
            model(torch.rand(2, 1, SIZE, SIZE) * 100)
    return model.eval()


def table_for(name: str, table: ColorTable) -> ColorTable | None:
    return None if name == "colornet" else table


def outputs(model, L: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return model(L)


@pytest.fixture
def saved(tmp_path: Path, table: ColorTable) -> Path:
    """A cls-afm checkpoint with its table."""
    return save_checkpoint(tmp_path / "ckpt", make_model("cls-afm", table), table)


# --- round trips ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list_models())
def test_round_trip_gives_identical_outputs(name: str, tmp_path: Path, table: ColorTable):
    model = make_model(name, table)
    tab = table_for(name, table)
    d = save_checkpoint(tmp_path / name, model, tab, meta={"step": 7})
    assert (d / WEIGHTS).is_file() and (d / TABLE).is_file() == (tab is not None)

    loaded, loaded_table = load_model(d, expect_model=name, expect_table=tab)

    assert not loaded.training
    assert loaded.variant == name and loaded.config == model.config
    if tab is None:
        assert loaded_table is None
    else:
        assert loaded_table.fingerprint == table.fingerprint
        assert np.array_equal(loaded_table.centres, table.centres)
    own, back = model.state_dict(), loaded.state_dict()
    assert own.keys() == back.keys()
    assert all(torch.equal(own[k], back[k]) for k in own)  # buffers included
    L = torch.rand(2, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1)) * 100
    before, after = outputs(model, L), outputs(loaded, L)
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), f"output {k!r} changed after the round trip"
    meta = read_meta(d)
    assert meta["step"] == 7 and meta["model"] == name
    assert read_header(d)["tables_fingerprint"] == (tab.fingerprint if tab else "")


def test_training_state_round_trip_and_copy(tmp_path: Path, table: ColorTable):
    model = make_model("cls-afm", table)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    model(torch.rand(1, 1, SIZE, SIZE) * 100)["logits"].mean().backward()
    opt.step()
    model.eval()
    state = {"optimizer": opt.state_dict(), "step": 3}
    d = save_checkpoint(tmp_path / "c", model, table, training_state=state)

    back = load_training_state(d)
    assert back["step"] == 3
    fresh = torch.optim.AdamW(model.parameters(), lr=1e-3)
    fresh.load_state_dict(back["optimizer"])
    exp_avg = opt.state_dict()["state"][0]["exp_avg"]
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"], exp_avg)

    copy = copy_checkpoint(d, tmp_path / "copy")
    assert sorted(p.name for p in copy.iterdir()) == sorted([WEIGHTS, TABLE, META])
    assert load_training_state(copy) is None
    loaded, _ = load_model(copy, expect_model="cls-afm", expect_table=table)
    L = torch.rand(1, 1, SIZE, SIZE) * 100
    assert torch.equal(outputs(model, L)["logits"], outputs(loaded, L)["logits"])


def test_export_leaves_out_the_category_head_and_keeps_the_colours(
    tmp_path: Path, table: ColorTable
):
    """``colorize export-model`` of a Lite0 seg model with the 1000-class ImageNet head: the
    shipped weights lack the head (smaller file, ``num_categories`` 0, strict load, no optimizer
    state) and colorize a real photo exactly as the training checkpoint does."""
    from colorization.inference import colorize_images
    from colorization.shipped import load
    from pipeline.export import export_model

    model = make_model("seg", table, encoder="lite0", pretrained=False, num_categories=1000)
    src = save_checkpoint(
        tmp_path / "run" / "checkpoint_1", model, table, {"step": 1}, meta={"step": 1}
    )
    dest = export_model(src, tmp_path / "shipped")

    assert sorted(p.name for p in dest.iterdir()) == sorted(["MODEL_CARD.md", WEIGHTS, TABLE, META])
    config = json.loads(read_header(dest)["model_config"])
    assert config == {**model.config, "num_categories": 0}
    own, shipped = load_file(src / WEIGHTS), load_file(dest / WEIGHTS)
    assert not [k for k in shipped if "category_head" in k]
    assert shipped.keys() == {k for k in own if not k.startswith("category_head.")}
    assert all(torch.equal(own[k], shipped[k]) for k in shipped)
    assert (dest / WEIGHTS).stat().st_size < (src / WEIGHTS).stat().st_size

    photo = sorted(require(SHARED_DATA / "coco-tiny" / "val2017").glob("*.jpg"))[0]
    image = Image.open(photo)
    colours = []
    for spec in (src, dest):
        loaded, tab, _ = load(spec)
        colours.append(np.asarray(colorize_images(loaded, tab, [image])[0]))
    assert loaded.category_head is None
    assert np.array_equal(colours[0], colours[1])


def test_export_refuses_an_input_side_the_model_cannot_see(tmp_path: Path, saved: Path):
    from pipeline.export import export_model

    for side in (150, 0):
        with pytest.raises(ValueError, match="multiple of 16"):
            export_model(saved, tmp_path / "shipped", inference={"size": side})
    assert not (tmp_path / "shipped").exists()  # refused before anything is written


# --- mismatches ---------------------------------------------------------------------------------
def test_wrong_expected_model_is_named(saved: Path):
    with pytest.raises(CheckpointError, match=r"'cls-afm'.*expected 'seg'"):
        load_model(saved, expect_model="seg")


def test_different_expected_table_is_refused(saved: Path, table: ColorTable, zhang: ColorTable):
    with pytest.raises(CheckpointError, match="expected " + zhang.fingerprint[:12]) as e:
        load_model(saved, expect_table=zhang)
    assert table.fingerprint[:12] in str(e.value)


def test_replaced_table_file_is_a_fingerprint_mismatch(
    saved: Path, table: ColorTable, zhang: ColorTable
):
    zhang.save(saved / TABLE)
    with pytest.raises(CheckpointError, match="fingerprint") as e:
        load_model(saved)
    assert zhang.fingerprint[:12] in str(e.value) and table.fingerprint[:12] in str(e.value)


def test_missing_table_file_is_refused(saved: Path):
    (saved / TABLE).unlink()
    with pytest.raises(CheckpointError, match="colour table is missing or invalid"):
        load_model(saved)


def test_weights_of_another_width_name_the_parameter(saved: Path, table: ColorTable):
    header = read_header(saved)  # the base_width=8 model's header ...
    wide = make_model("cls-afm", table, width=2 * WIDTH)  # ... over base_width=16 weights
    save_file({k: v.contiguous() for k, v in wide.state_dict().items()}, saved / WEIGHTS, header)
    with pytest.raises(CheckpointError, match="shape mismatch") as e:
        load_model(saved)
    message = str(e.value)
    small = make_model("cls-afm", table).state_dict()
    named = [
        k
        for k, v in wide.state_dict().items()
        if f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(small[k].shape)}" in message
    ]
    assert named, f"no parameter named with both shapes in: {message}"


def test_missing_tensor_is_named(saved: Path):
    header = read_header(saved)
    state = load_file(saved / WEIGHTS)
    dropped = sorted(state)[0]
    del state[dropped]
    save_file(state, saved / WEIGHTS, header)
    with pytest.raises(CheckpointError, match="missing") as e:
        load_model(saved)
    assert dropped in str(e.value)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_corrupt_weights_file(saved: Path, damage: str):
    path = saved / WEIGHTS
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(len(data)))
    else:
        path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_model(saved)


def test_directory_without_weights(tmp_path: Path):
    (tmp_path / META).write_text("{}")
    with pytest.raises(CheckpointError, match=f"no {WEIGHTS}"):
        load_model(tmp_path)


def test_foreign_safetensors_format_is_refused(tmp_path: Path):
    save_file({"w": torch.zeros(2)}, tmp_path / WEIGHTS, {"format": "someone-else/3"})
    with pytest.raises(CheckpointError, match="format 'someone-else/3'"):
        load_model(tmp_path)


def test_unknown_model_in_header_is_refused(saved: Path):
    header = dict(read_header(saved), model="no-such-model")
    save_file(load_file(saved / WEIGHTS), saved / WEIGHTS, header)
    with pytest.raises(CheckpointError, match="cannot rebuild model 'no-such-model'"):
        load_model(saved)


def test_header_without_model_name_is_a_checkpoint_error(tmp_path: Path):
    save_file({"w": torch.zeros(2)}, tmp_path / WEIGHTS, {"format": FORMAT})
    with pytest.raises(CheckpointError):
        load_model(tmp_path)


def test_table_with_wrong_number_of_classes_is_refused(tmp_path: Path, table, zhang):
    with pytest.raises(CheckpointError, match="classes"):
        save_checkpoint(tmp_path / "c", make_model("cls-afm", table), zhang)
    with pytest.raises(CheckpointError, match="no table"):
        save_checkpoint(tmp_path / "d", make_model("cls-afm", table), None)


# --- training state: never unpickle code ---------------------------------------------------------
class Payload:
    """An object whose unpickling would run code: it creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_training_state_with_arbitrary_object_is_refused(saved: Path, tmp_path: Path):
    marker = tmp_path / "code-ran"
    torch.save({"step": 1, "payload": Payload(marker)}, saved / STATE)
    with pytest.raises(CheckpointError, match="unreadable training state"):
        load_training_state(saved)
    assert not marker.exists(), "loading the training state executed code from the file"


def test_training_state_absent_is_none(saved: Path):
    assert load_training_state(saved) is None
    assert json.loads((saved / META).read_text())["format"] == FORMAT
