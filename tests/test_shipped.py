"""The model that ships in the package: found by name, small, documented, and as good on the
held-out coco-tiny val2017 as its model card says; the demo colorizes with it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from colorization.checkpoint import CheckpointError, read_header, save_checkpoint
from colorization.shipped import DEFAULT_MODEL, load, models_dir, resolve_model, shipped_models
from pipeline.eval_stage import GREY, EvalConfig, evaluate
from tests.conftest import require
from tests.shared_paths import SHARED_DATA

pytestmark = pytest.mark.timeout(300)


def test_default_model_ships_inside_the_package_and_is_small():
    assert DEFAULT_MODEL in shipped_models()
    path = resolve_model()
    assert path == models_dir() / DEFAULT_MODEL
    assert "colorization" in path.parts  # package data, not a path of this checkout
    size = sum(p.stat().st_size for p in path.iterdir())
    assert size <= 25 * 2**20
    assert not (path / "training_state.pt").exists()
    assert read_header(path)["model"] == "seg"


def test_model_card_says_how_it_was_made_and_how_it_scores():
    card = (resolve_model() / "MODEL_CARD.md").read_text()
    for needed in (
        "coco-tiny/annotations/instances_train2017.json",
        "coco128-train",
        "bsds500",
        "imagenet-samples",
        "imagenette",
        "camvid",
        "wall time",
        "colorize train --config jobs/configs/train_shipped.yaml",
        "validation split",
        GREY,
        "PSNR",
    ):
        assert needed in card, needed


def test_shipped_model_scores_what_its_card_says_on_held_out_photos(tmp_path):
    """coco-tiny val2017 (never trained on, never used to choose a setting): colourfulness at
    least 30 (its card: 31.4; the target is 28) and PSNR at most 0.5 dB under the grey
    baseline (its card: 0.12 under; the target is 0.5)."""
    val = require(SHARED_DATA / "coco-tiny" / "val2017")
    cfg = EvalConfig(sources=[str(val)], out=str(tmp_path), judge="none")  # no semantic test
    summary = evaluate(cfg)
    grey, mine = summary["rows"]
    assert mine["model"] == DEFAULT_MODEL and summary["images"] == 78
    assert mine["colorfulness"] >= 30.0
    assert mine["psnr"] >= grey["psnr"] - 0.5
    assert mine["ssim"] > 0.895


def test_models_resolve_by_checkpoint_and_run_directory(tmp_path):
    model, table, _ = load()
    run = tmp_path / "run"
    for step, name in ((10, "checkpoint_a"), (30, "checkpoint_b"), (20, "checkpoint_c")):
        save_checkpoint(run / name, model, table, meta={"step": step})
    assert resolve_model(run / "checkpoint_a") == run / "checkpoint_a"
    assert resolve_model(run) == run / "checkpoint_b"  # the newest step
    with pytest.raises(CheckpointError, match=DEFAULT_MODEL):
        resolve_model("no-such-model")


def test_demo_colorizes_the_sample_photos_with_the_shipped_model(ray_local, tmp_path):
    from pipeline.demo import SHEET_ROW_HEIGHT, run_demo

    text = run_demo(tmp_path)
    assert DEFAULT_MODEL in text
    samples = sorted((tmp_path / "samples").iterdir())
    assert len(samples) >= 6
    for p in samples:
        original = Image.open(p)
        after = Image.open(tmp_path / "after" / f"{p.stem}.png")
        strip = Image.open(tmp_path / "before_after" / f"{p.stem}.jpg")
        assert after.size == original.size and after.mode == "RGB"
        assert strip.size == (3 * original.width, original.height)
    sheet = Image.open(tmp_path / "sheet.jpg")  # every strip, one row each
    assert sheet.height == len(samples) * SHEET_ROW_HEIGHT
    # the colorized photos have colour (the grey inputs had none)
    after = np.asarray(Image.open(tmp_path / "after" / "chelsea.png"), dtype=int)
    assert np.abs(after[..., 0] - after[..., 2]).mean() > 3
    assert (tmp_path / "tables" / "classes.parquet").exists()
