"""``colorize eval``: the papers' protocol reproduces the published grey baseline; the files it
writes (per-image parquet, summary, self-contained HTML report); grey and broken inputs."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from colorization.checkpoint import save_checkpoint
from colorization.evaluation import grey_version, is_grey_original, make_truth
from colorization.models import create_model
from colorization.tables import load_zhang_313
from pipeline.cli import app
from pipeline.eval_stage import GREY, ORIGINALS, EvalConfig, evaluate
from tests.conftest import require
from tests.shared_paths import SHARED_DATA, SHARED_REFERENCE

pytestmark = pytest.mark.timeout(240)

COCO_VAL = SHARED_DATA / "coco-tiny" / "val2017"


def test_grey_originals_are_recognised():
    rng = np.random.default_rng(0)
    grey = np.repeat(rng.integers(0, 256, (40, 50, 1), dtype=np.uint8), 3, axis=2)
    assert is_grey_original(Image.fromarray(grey))
    assert is_grey_original(Image.fromarray(grey[..., 0], "L"))
    tinted = grey.copy()
    tinted[0, 0, 2] ^= 1  # one pixel off grey: a colour original
    assert not is_grey_original(Image.fromarray(tinted))
    assert make_truth(Image.fromarray(grey)) is None
    truth = make_truth(Image.fromarray(tinted))
    assert truth.rgb.shape == (256, 256, 3) and (truth.width, truth.height) == (50, 40)


def test_grey_version_keeps_lightness_and_drops_colour():
    photo = np.asarray(Image.open(require(sorted(COCO_VAL.glob("*.jpg"))[0])).convert("RGB"))
    g = grey_version(photo)
    assert np.abs(g[..., 0].astype(int) - g[..., 2]).max() <= 1
    from colorization import color

    dL = color.rgb_to_lab(g)[..., 0] - color.rgb_to_lab(photo)[..., 0]
    assert np.median(np.abs(dL)) < 0.3


def test_grey_baseline_reproduces_the_published_figures(tmp_path):
    """coco-tiny val2017 at 256x256: grey baseline PSNR 22.87, SSIM 0.9075, originals'
    colourfulness 38.5, 79 images with the one grey original left out."""
    summary = evaluate(EvalConfig(sources=[str(require(COCO_VAL))], out=str(tmp_path), models=[]))
    assert summary["images"] == 79 and summary["skipped_grey"] == 1
    (grey,) = summary["rows"]
    assert grey["model"] == GREY
    assert grey["psnr"] == pytest.approx(22.87, abs=0.006)
    assert grey["ssim"] == pytest.approx(0.9075, abs=0.0001)
    assert summary["originals_colorfulness"] == pytest.approx(38.5, abs=0.05)
    assert grey["colorfulness"] < 0.5


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Two untrained checkpoints: a class model and the regression baseline."""
    d = tmp_path_factory.mktemp("ckpt")
    zhang = load_zhang_313(require(SHARED_REFERENCE / "zhang2016_pts_in_hull.npy"))
    torch.manual_seed(0)
    seg = create_model("seg", base_width=8, num_classes=zhang.num_classes)
    return {
        "seg": save_checkpoint(d / "seg", seg, zhang),
        "colornet": save_checkpoint(d / "colornet", create_model("colornet", base_width=8), None),
    }


def test_eval_cli_writes_every_row_and_a_self_contained_report(tmp_path, checkpoints):
    src = tmp_path / "src"
    src.mkdir()
    photos = sorted(require(COCO_VAL).glob("*.jpg"))[:4]
    for p in photos:
        shutil.copyfile(p, src / p.name)
    Image.open(photos[0]).convert("L").save(src / "grey.png")
    (src / "broken.jpg").write_bytes(photos[1].read_bytes()[:200])
    out = tmp_path / "out"
    models = f"mine={checkpoints['seg']},{checkpoints['colornet']}"
    res = CliRunner().invoke(app, ["eval", str(src), "--out", str(out), "--models", models])
    assert res.exit_code == 0, res.output
    assert "| mine |" in res.output and "| colornet |" in res.output and GREY in res.output

    rows = pq.read_table(out / "per_image.parquet").to_pylist()
    by_status = {s: [r for r in rows if r["status"] == s] for s in ("ok", "skipped", "error")}
    assert [r["image"] for r in by_status["skipped"]] == ["grey.png"]
    assert [r["image"] for r in by_status["error"]] == ["broken.jpg"]
    assert (
        "truncated" in by_status["error"][0]["error"] or "corrupt" in by_status["error"][0]["error"]
    )
    for label in (GREY, "mine", "colornet", ORIGINALS):
        mine = [r for r in by_status["ok"] if r["model"] == label]
        assert sorted(r["image"] for r in mine) == sorted(p.name for p in photos)
    scored = [r for r in by_status["ok"] if r["model"] == "mine"]
    assert all(10 < r["psnr"] < 60 and 0 < r["ssim"] <= 1 for r in scored)

    summary = json.loads((out / "summary.json").read_text())
    assert [r["model"] for r in summary["rows"]] == [GREY, "mine", "colornet"]
    assert summary["rows"][1]["source"] == str(checkpoints["seg"])
    assert "256x256" in summary["protocol"]

    html = (out / "report.html").read_text()
    assert not re.search(r"""(src|href)=["'](?!data:)""", html)  # everything inline
    # 4 images x (grey, 2 models, original) thumbnails + 2 plots
    assert len(re.findall(r'<img src="data:image/', html)) == 4 * 4 + 2
    assert "papers" in html


def test_unknown_model_is_an_error_naming_the_choices(tmp_path):
    res = CliRunner().invoke(
        app, ["eval", str(require(COCO_VAL)), "--out", str(tmp_path), "--models", "nope"]
    )
    assert res.exit_code != 0
    assert "nope" in str(res.exception) and "shipped model" in str(res.exception)
