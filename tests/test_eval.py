"""``colorize eval``: the papers' protocol reproduces the published grey baseline; the files it
writes (per-image parquet, summary, self-contained HTML report); grey and broken inputs; the
semantic test (ImageNet labels, the judge) and Zhang et al.'s AuC."""

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

from colorization import imagenet
from colorization.checkpoint import save_checkpoint
from colorization.evaluation import (
    AUC_PRIOR_GRID,
    ab_prior,
    grey_version,
    make_truth,
    rebalancing_weights,
)
from colorization.imagenet import Judge, label_of, wnid_index
from colorization.metrics import ab_auc, ab_error, auc_of_counts, error_counts
from colorization.models import create_model
from colorization.shipped import DEFAULT_MODEL
from colorization.tables import load_zhang_313
from pipeline.cli import app
from pipeline.eval_stage import GREY, ORIGINALS, EvalConfig, evaluate
from tests.conftest import require
from tests.shared_paths import SHARED_DATA, SHARED_REFERENCE

pytestmark = pytest.mark.timeout(240)

COCO_VAL = SHARED_DATA / "coco-tiny" / "val2017"
IMAGENETTE = SHARED_DATA / "imagenette"
IMAGENET_SAMPLES = SHARED_DATA / "imagenet-samples"


def test_grey_originals_are_skipped():
    """The evaluation skips grey photos by :func:`colorization.grey.is_grey_photo`."""
    rng = np.random.default_rng(0)
    grey = np.repeat(rng.integers(0, 256, (40, 50, 1), dtype=np.uint8), 3, axis=2)
    assert make_truth(Image.fromarray(grey)) is None
    assert make_truth(Image.fromarray(grey[..., 0], "L")) is None
    tinted = grey.copy()
    tinted[..., 2] //= 2  # a yellow cast: a colour original
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
    """coco-tiny val2017 at 256x256: grey baseline PSNR 22.65, SSIM 0.9063, originals'
    colourfulness 39.0, 78 images with the two grey photos left out (000000060932.jpg, a grey
    photo with JPEG chroma noise, counted until the stages shared one definition of grey:
    79 images, PSNR 22.87, SSIM 0.9075, colourfulness 38.5)."""
    cfg = EvalConfig(sources=[str(require(COCO_VAL))], out=str(tmp_path), models=[], judge="none")
    summary = evaluate(cfg)
    assert summary["images"] == 78 and summary["skipped_grey"] == 2
    (grey,) = summary["rows"]
    assert grey["model"] == GREY
    assert grey["psnr"] == pytest.approx(22.65, abs=0.006)
    assert grey["ssim"] == pytest.approx(0.9063, abs=0.0001)
    assert summary["originals_colorfulness"] == pytest.approx(39.0, abs=0.05)
    assert grey["colorfulness"] < 0.5
    # no judge: no semantic figures, but the AuC; COCO file names carry no ImageNet label
    assert summary["judge"] is None and grey["judge_agreement"] is None
    assert summary["labelled_images"] == 0 and grey["judge_top1_accuracy"] is None
    assert 0.5 < grey["auc_raw"] < 1 and 0 < grey["auc_rebalanced"] < grey["auc_raw"]
    assert "No judge" in (tmp_path / "summary.md").read_text()


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


def test_settings_sweep_scores_each_setting_as_colorizing_at_it_would(tmp_path, checkpoints):
    """--temperatures x --saturations x --rebalance-corrections: a row per setting from one
    forward pass, each the same images as a plain evaluation at that setting; a lower
    saturation is less colourful, and the correction changes the colours."""
    photos = [str(p) for p in sorted(require(COCO_VAL).glob("*.jpg"))[:3]]
    model = f"m={checkpoints['seg']}"
    cfg = EvalConfig(photos, str(tmp_path / "sweep"), [model], judge="none")
    cfg.temperatures, cfg.saturations = [0.3, 1.0], [0.5, 1.0]
    cfg.rebalance_corrections = [0.0, 1.0]
    rows = {r["model"]: r for r in evaluate(cfg)["rows"]}
    grid = [(t, s, c) for t in (0.3, 1.0) for s in (0.5, 1.0) for c in ("", " c=1")]
    assert set(rows) == {GREY} | {f"m T={t:g} s={s:g}{c}" for t, s, c in grid}
    for corrected in (False, True):
        one = EvalConfig(photos, str(tmp_path / "one"), [model], 1.0, 0.5, judge="none")
        one.rebalance_correction = 1.0 if corrected else None
        alone = evaluate(one)["rows"][1]
        swept = rows["m T=1 s=0.5" + (" c=1" if corrected else "")]
        assert (alone["temperature"], alone["saturation"]) == (swept["temperature"], 0.5)
        assert alone["rebalance_correction"] == swept["rebalance_correction"] == float(corrected)
        assert alone["psnr"] == pytest.approx(swept["psnr"], abs=1e-9)
    assert rows["m T=0.3 s=0.5"]["colorfulness"] < rows["m T=0.3 s=1"]["colorfulness"]
    assert rows["m T=0.3 s=1"]["psnr"] != pytest.approx(rows["m T=0.3 s=1 c=1"]["psnr"], abs=1e-3)


def test_unknown_model_is_an_error_naming_the_choices(tmp_path):
    res = CliRunner().invoke(
        app, ["eval", str(require(COCO_VAL)), "--out", str(tmp_path), "--models", "nope"]
    )
    assert res.exit_code != 0
    assert "nope" in str(res.exception) and "shipped model" in str(res.exception)


# --- ImageNet labels and the judge ------------------------------------------------------------
def test_label_of_reads_wnids_from_file_names_and_folders():
    sample = sorted(require(IMAGENET_SAMPLES).glob("n01440764_*.jpg"))[0]
    assert label_of(str(sample)) == 0  # n01440764_tench.jpg
    assert label_of("n15075141_toilet_tissue.jpg") == 999
    assert label_of("n03888257_10026.JPEG") == wnid_index("n03888257")  # ImageNet train naming
    photo = sorted(require(IMAGENETTE / "n03888257").glob("*.JPEG"))[0]
    assert photo.name.startswith("ILSVRC2012_val_")  # no wnid in the file name itself
    assert label_of(str(photo)) == wnid_index("n03888257") == 701  # parachute
    assert label_of(f"n03888257/{photo.name}") == 701  # an eval key of a glob source
    assert label_of(f"s3://bucket/imagenette/n02102040/{photo.name}") == 217
    assert label_of(f"n02102040/n03888257/{photo.name}") == 701  # the nearest folder wins
    assert label_of(photo.name) is None
    assert label_of("coco/000000000139.jpg") is None
    assert label_of("n00000001_not_imagenet.jpg") is None  # a wnid outside ImageNet-1k
    assert label_of("xn01440764/a.jpg") is None and label_of("n014407640_a.jpg") is None


def test_wnid_table_is_imagenet_1k_in_class_index_order():
    wnids = imagenet.wnids()
    assert len(wnids) == 1000 and len(set(wnids)) == 1000
    assert list(wnids) == sorted(wnids)  # index = rank of the wnid among the 1000 sorted
    assert wnid_index("n01440764") == 0 and wnid_index("n15075141") == 999
    with pytest.raises(KeyError, match="not one of"):
        wnid_index("n00000001")
    names = dict(zip(wnids, imagenet.class_names(), strict=True))
    samples = sorted(require(IMAGENET_SAMPLES).glob("n*_*.jpg"))
    assert len(samples) == 972
    for f in samples:  # every sample's wnid is listed, under the same class name
        wnid, name = f.stem.split("_", 1)
        assert names[wnid] == name, f.name
    folders = [d.name for d in require(IMAGENETTE).iterdir() if d.is_dir()]
    assert len(folders) == 10 and set(folders) <= set(wnids)


def _imagenette_photos(per_class: int) -> list[Path]:
    return [
        p
        for d in sorted(require(IMAGENETTE).iterdir())
        for p in sorted(d.glob("*.JPEG"))[:per_class]
    ]


def test_the_judge_recognises_imagenette_photos_and_not_noise():
    photos = _imagenette_photos(1)  # one photo from each of the 10 classes
    images = [np.asarray(Image.open(p).convert("RGB")) for p in photos]
    labels = np.array([label_of(str(p)) for p in photos])
    noise = list(np.random.default_rng(0).integers(0, 256, (10, 224, 224, 3), dtype=np.uint8))
    judge = Judge("lite2", batch_size=8)
    probs = judge.probabilities(images + noise)
    assert probs.shape == (20, 1000) and np.allclose(probs.sum(1), 1, atol=1e-4)
    top, p = judge.top1(images + noise)
    assert (top == probs.argmax(1)).all() and np.allclose(p, probs.max(1))
    on_photos, on_noise = (top[:10] == labels).sum(), (top[10:] == labels).sum()
    assert on_photos >= 7 and on_noise <= 1, (top, labels)
    assert probs[np.arange(10), labels].mean() > 0.5 > probs[10 + np.arange(10), labels].mean()


# --- Zhang et al.'s AuC ----------------------------------------------------------------------
def test_auc_of_a_known_error_distribution():
    err = np.full((4, 5), 10.0)  # every pixel exactly 10 ab units off
    counts = error_counts(err)
    assert counts[10] == 20 and counts.sum() == 20
    # CDF 0 for t < 10, 1 from 10 to 150: trapezoid area (141 - 0.5) / 150
    assert auc_of_counts(counts) == pytest.approx(140.5 / 150)
    err[0] = 200.0  # beyond the last threshold: never counted as within
    assert auc_of_counts(error_counts(err)) == pytest.approx(0.75 * 140.5 / 150)
    assert auc_of_counts(error_counts(np.zeros((3, 3)))) == 1.0


def test_auc_is_one_for_the_original_lower_for_grey_and_rebalancing_counts():
    photo = np.asarray(Image.open(require(sorted(COCO_VAL.glob("*.jpg"))[0])).convert("RGB"))
    truth = make_truth(Image.fromarray(photo)).rgb
    grey = grey_version(truth)
    weights = rebalancing_weights(truth, ab_prior([truth]))
    assert ab_auc(truth, truth) == 1.0 and ab_auc(truth, truth, weights) == 1.0
    raw, rebalanced = ab_auc(truth, grey), ab_auc(truth, grey, weights)
    assert 0.5 < raw < 0.99
    # grey is right on the common near-neutral pixels and wrong on the rare saturated ones,
    # which rebalancing weighs up
    assert rebalanced < raw - 0.02
    # pooled over the set, the rebalanced curve is the mean over ab bins of each bin's curve
    err = ab_error(truth, grey)
    from colorization import color

    cells = AUC_PRIOR_GRID.cell_of(color.rgb_to_lab(truth)[..., 1:])
    per_bin = [auc_of_counts(error_counts(err[cells == c])) for c in np.unique(cells)]
    assert rebalanced == pytest.approx(np.mean(per_bin), abs=1e-9)


def test_eval_on_labelled_photos_writes_the_semantic_figures(tmp_path):
    src = tmp_path / "src"
    photos = _imagenette_photos(1)[:6]  # 6 photos, 6 classes, labelled by their folders
    for p in photos:
        (src / p.parent.name).mkdir(parents=True)
        shutil.copyfile(p, src / p.parent.name / p.name)
    out = tmp_path / "out"
    summary = evaluate(EvalConfig(sources=[str(src)], out=str(out), models=[DEFAULT_MODEL]))
    assert summary["judge"]["variant"] == "lite2" and summary["judge"]["resolution"] == 260
    assert summary["labelled_images"] == 6
    assert summary["originals_judge_agreement"] == 100.0
    assert summary["originals_judge_top1_accuracy"] >= 50.0  # Lite2 is ~80% accurate
    grey, model = summary["rows"]
    assert (grey["model"], model["model"]) == (GREY, DEFAULT_MODEL)
    for r in (grey, model):
        assert 0.0 <= r["judge_agreement"] <= 100.0 and r["labelled_images"] == 6
        assert 0.0 <= r["judge_top1_accuracy"] <= 100.0
        assert 0.3 < r["auc_raw"] < 1 and 0 < r["auc_rebalanced"] < 1
        assert r["auc_rebalanced"] != pytest.approx(r["auc_raw"], abs=1e-3)

    rows = [r for r in pq.read_table(out / "per_image.parquet").to_pylist() if r["status"] == "ok"]
    by_model = {m: [r for r in rows if r["model"] == m] for m in (GREY, DEFAULT_MODEL, ORIGINALS)}
    assert all(len(v) == 6 for v in by_model.values())
    truth_top = {r["image"]: r["judge_top1"] for r in by_model[ORIGINALS]}
    for r in rows:
        assert r["label"] == wnid_index(r["image"].split("/")[0])
        assert r["judge_agrees"] == (r["judge_top1"] == truth_top[r["image"]])
        assert r["judge_correct"] == (r["judge_top1"] == r["label"])
    for m, r in ((GREY, grey), (DEFAULT_MODEL, model)):
        mine = by_model[m]
        assert r["judge_agreement"] == pytest.approx(
            100 * np.mean([x["judge_agrees"] for x in mine])
        )
        # every image is 256x256: the pooled raw AuC is the mean of the per-image ones
        assert r["auc_raw"] == pytest.approx(np.mean([x["auc_raw"] for x in mine]), abs=1e-9)
    md = (out / "summary.md").read_text()
    assert (
        "Judge: EfficientNet-Lite2" in md and "6 labelled images" in md and "auc_rebalanced" in md
    )
    html = (out / "report.html").read_text()
    assert "EfficientNet-Lite2" in html and "judge agreement %" in html
