"""Stage 2a (pipeline/prepare_stage.py) end to end on real photos with one local Ray instance:
a status row per input, the label vocabulary, segmentation maps from COCO json, coco128
panoptic masks and CamVid aligned with their photos, the category teacher's probabilities,
streamed samples, sharding over ranks; and ``collate`` from pipeline/train_stage.py on
hand-made samples."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray.data
from PIL import Image

from colorization.grey import is_grey_photo
from colorization.segmentation import SEG_CLASS_NAMES, SEG_IGNORE, decode_mask, map_mask
from pipeline.prepare_stage import MaskSource, PrepareConfig, prepare
from pipeline.prepared import Sample, read_dataset_info, read_prepared, samples_of
from pipeline.sources import StorageOptions
from tests.shared_paths import SHARED_DATA

SIZE = 64
COCO_ANN = SHARED_DATA / "coco-tiny" / "annotations" / "instances_train2017.json"
COCO_IMAGES = SHARED_DATA / "coco-tiny" / "train2017"
IMAGENET = SHARED_DATA / "imagenet-samples"
COCO128 = SHARED_DATA / "coco128-train"
COCO128_MASKS = SHARED_DATA / "coco128-train-masks"
CAMVID = SHARED_DATA / "camvid"
IMAGENETTE_TENCH = SHARED_DATA / "imagenette" / "n01440764" / "ILSVRC2012_val_00000293.JPEG"
BROKEN = {"empty.jpg": "empty", "notes.txt": "not an image", "truncated.jpg": "truncated"}
#: coco128 photos with their masks; 149: a field under the sky
COCO128_PAIRED = ("000000000009", "000000000025", "000000000149")
COCO128_NO_MASK = "000000000540"  # no mask file: a row without seg, not a warning
COCO128_BAD_MASK = {"000000000030": "unreadable", "000000000034": "mask is 480x360"}
CAMVID_FRAMES = ("0001TP_006690", "0001TP_006720", "0001TP_006750")
ROTATED = "rotated_0001TP_006690"  # a CamVid frame stored sideways with EXIF orientation 6


# --- one prepared dataset for the module ------------------------------------------------------
@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    for p in (COCO_ANN, IMAGENET, COCO128_MASKS, CAMVID, IMAGENETTE_TENCH):
        if not p.exists():
            pytest.skip(f"shared data missing: {p}")
    root = tmp_path_factory.mktemp("inputs")
    dirs = {n: root / n for n in ("broken", "imagenet", "coco128", "c128masks", "camvid", "cvmask")}
    for d in dirs.values():
        d.mkdir()
    broken, inet = dirs["broken"], dirs["imagenet"]
    (broken / "empty.jpg").write_bytes(b"")
    (broken / "notes.txt").write_text("a text file in an image folder\n")
    jpeg = sorted(COCO_IMAGES.glob("*.jpg"))[0].read_bytes()
    (broken / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    for src in sorted(IMAGENET.glob("n*.jpg"))[:5]:
        shutil.copyfile(src, inet / src.name)
    (inet / "n01440764").mkdir()  # Imagenette's layout: the class is the folder
    shutil.copyfile(IMAGENETTE_TENCH, inet / "n01440764" / IMAGENETTE_TENCH.name)
    for stem in (*COCO128_PAIRED, COCO128_NO_MASK, *COCO128_BAD_MASK):
        shutil.copyfile(COCO128 / f"{stem}.jpg", dirs["coco128"] / f"{stem}.jpg")
    for stem in COCO128_PAIRED:
        shutil.copyfile(COCO128_MASKS / f"{stem}.png", dirs["c128masks"] / f"{stem}.png")
    shutil.copyfile(COCO128_MASKS / "classes.yaml", dirs["c128masks"] / "classes.yaml")
    bad, wrong = COCO128_BAD_MASK
    (dirs["c128masks"] / f"{bad}.png").write_bytes((COCO128_MASKS / f"{bad}.png").read_bytes()[:99])
    shutil.copyfile(
        CAMVID / "trainannot" / f"{CAMVID_FRAMES[0]}.png", dirs["c128masks"] / f"{wrong}.png"
    )
    for stem in CAMVID_FRAMES:
        shutil.copyfile(CAMVID / "train" / f"{stem}.jpg", dirs["camvid"] / f"{stem}.jpg")
        shutil.copyfile(CAMVID / "trainannot" / f"{stem}.png", dirs["cvmask"] / f"{stem}.png")
    # stored pixels turned 90 degrees counter-clockwise, EXIF orientation 6 shows them upright
    frame = Image.open(CAMVID / "train" / f"{CAMVID_FRAMES[0]}.jpg").convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    frame.transpose(Image.Transpose.ROTATE_90).save(dirs["camvid"] / f"{ROTATED}.png", exif=exif)
    label = Image.open(CAMVID / "trainannot" / f"{CAMVID_FRAMES[0]}.png")
    label.transpose(Image.Transpose.ROTATE_90).save(dirs["cvmask"] / f"{ROTATED}.png")
    return dirs


def mask_specs(inputs: dict[str, Path]) -> list[str]:
    return [
        f"coco-panoptic:{inputs['coco128']}={inputs['c128masks']}",
        f"camvid:{inputs['camvid']}={inputs['cvmask']}",
    ]


def run_prepare(inputs: dict[str, Path], out: Path) -> dict:
    sources = [str(COCO_ANN), str(inputs["broken"]), str(inputs["imagenet"])]
    sources += [str(inputs["coco128"]), str(inputs["camvid"])]
    cfg = PrepareConfig(
        sources=sources, out=str(out), size=SIZE, rows_per_file=16, masks=mask_specs(inputs)
    )
    return prepare(cfg)


@pytest.fixture(scope="module")
def prepared(ray_local, inputs, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("prepared")
    return out, run_prepare(inputs, out)


@pytest.fixture(scope="module")
def coco() -> dict:
    return json.loads(COCO_ANN.read_text())


def all_rows(out: Path, columns=("key", "status", "error", "labels", "has_seg")) -> list[dict]:
    return [
        r
        for f in sorted(out.glob("*.parquet"))
        for r in pq.read_table(f, columns=list(columns)).to_pylist()
    ]


def read_samples(out: Path | str, **kw) -> list[Sample]:
    """Every ok row of a prepared dataset, through the training stage's reader."""
    size = int(read_dataset_info(str(out), kw.get("storage", StorageOptions()))["size"])
    ds = read_prepared(str(out), **kw)
    return [
        s for b in ds.iter_batches(batch_size=64, batch_format="numpy") for s in samples_of(b, size)
    ]


def folder_keys(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def coco_vocab(coco: dict) -> list[str]:
    return [f"coco:{c['name']}" for c in sorted(coco["categories"], key=lambda c: c["id"])]


# --- dataset.json and the status rows ---------------------------------------------------------
@pytest.mark.ray
@pytest.mark.timeout(120)
def test_summary_counts_and_failures(prepared, inputs, coco):
    out, summary = prepared
    assert summary == json.loads((out / "dataset.json").read_text())
    n_coco = len(coco["images"])
    n_folders = sum(len(folder_keys(inputs[k])) for k in ("imagenet", "coco128", "camvid"))
    assert summary["n_listed"] == n_coco + len(BROKEN) + n_folders
    assert summary["n_ok"] + summary["n_skipped"] + summary["n_error"] == summary["n_listed"]
    assert summary["size"] == SIZE

    failures = {f["key"]: f["error"] for f in summary["failures"]}
    assert summary["n_error"] == len(failures) == len(BROKEN)
    for key, reason in BROKEN.items():
        assert reason in failures[key], failures[key]

    rows = all_rows(out)
    assert len(rows) == summary["n_listed"]  # every input has exactly one row
    assert sorted(r["key"] for r in rows) == sorted(
        [im["file_name"] for im in coco["images"]]
        + list(BROKEN)
        + [k for name in ("imagenet", "coco128", "camvid") for k in folder_keys(inputs[name])]
    )
    by_status = {s: [r for r in rows if r["status"] == s] for s in ("ok", "skipped", "error")}
    assert {k: len(v) for k, v in by_status.items()} == {
        "ok": summary["n_ok"],
        "skipped": summary["n_skipped"],
        "error": summary["n_error"],
    }


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_grey_coco_images_are_skipped(prepared, coco):
    out, _ = prepared
    skipped = {r["key"]: r["error"] for r in all_rows(out) if r["status"] == "skipped"}
    grey = {
        im["file_name"]
        for im in coco["images"]
        if is_grey_photo(Image.open(COCO_IMAGES / im["file_name"]))
    }
    assert grey, "coco-tiny train2017 is expected to hold at least one grey photo"
    assert grey <= set(skipped)
    coco_names = {im["file_name"] for im in coco["images"]}
    assert all(k in coco_names and e == "grey image" for k, e in skipped.items())


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_label_vocabulary_and_row_labels(prepared, inputs, coco):
    out, summary = prepared
    vocab = summary["labels"]
    inet = folder_keys(inputs["imagenet"])
    wnids = sorted({k[:9] for k in inet})
    assert vocab == coco_vocab(coco) + wnids

    names = {c["id"]: f"coco:{c['name']}" for c in coco["categories"]}
    cats: dict[int, set[str]] = {}
    for a in coco["annotations"]:
        cats.setdefault(a["image_id"], set()).add(names[a["category_id"]])
    expected = {
        im["file_name"]: {vocab.index(n) for n in cats.get(im["id"], ())} for im in coco["images"]
    }
    # a <wnid>_ file name, or a <wnid>/ folder (Imagenette's ILSVRC2012_val_* files)
    expected.update({k: {vocab.index(k[:9])} for k in inet})
    assert f"n01440764/{IMAGENETTE_TENCH.name}" in expected
    coco_keys = {im["file_name"] for im in coco["images"]}
    for r in all_rows(out):
        if r["key"] in expected:
            assert set(r["labels"]) == expected[r["key"]], r["key"]
            assert r["has_seg"] == (r["status"] == "ok" and r["key"] in coco_keys)


# --- streaming -----------------------------------------------------------------------------------
@pytest.mark.ray
@pytest.mark.timeout(120)
def test_stream_yields_images_seg_maps_and_labels(prepared, coco):
    out, summary = prepared
    samples = read_samples(out)
    assert len(samples) == summary["n_ok"]
    coco_keys = {im["file_name"] for im in coco["images"]}
    paired = {f"{k}.jpg" for k in (*COCO128_PAIRED, *CAMVID_FRAMES)} | {f"{ROTATED}.png"}
    n_objects = 0
    for s in samples:
        assert s.rgb.shape == (SIZE, SIZE, 3) and s.rgb.dtype == np.uint8
        assert s.teacher.shape == (1000,) and s.teacher.dtype == np.float32
        if s.key not in coco_keys | paired:
            assert s.seg is None, s.key
            continue
        assert s.seg.shape == (SIZE, SIZE) and s.seg.dtype == np.uint8
        if s.key not in coco_keys:
            continue
        assert s.labels, s.key
        values = set(np.unique(s.seg).tolist())
        # COCO instances: things only (class id = contiguous label), nothing else is known
        assert values <= set(range(80)) | {SEG_IGNORE}
        assert values - {SEG_IGNORE} <= set(s.labels), s.key
        n_objects += len(values - {SEG_IGNORE}) > 0
    assert n_objects >= 0.9 * sum(s.key in coco_keys for s in samples)
    assert {s.key for s in samples if s.seg is not None} == coco_keys & {
        s.key for s in samples
    } | paired


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_stored_pixels_are_the_photo(prepared):
    """The stored square is the centre of the photo (same channel order and orientation)."""
    out, _ = prepared
    samples = {s.key: s for s in read_samples(out)}
    for key in sorted(k for k in samples if (COCO_IMAGES / k).is_file())[:5]:
        im = Image.open(COCO_IMAGES / key).convert("RGB")
        side = min(im.size)
        left, top = (im.width - side) // 2, (im.height - side) // 2
        centre = np.asarray(im.crop((left, top, left + side, top + side)), dtype=np.float64)
        stored = samples[key].rgb.astype(np.float64)
        assert np.abs(centre.mean((0, 1)) - stored.mean((0, 1))).max() < 4, key
        small = np.asarray(
            Image.fromarray(centre.astype(np.uint8)).resize((8, 8), Image.BOX), np.float64
        )
        coarse = np.asarray(Image.fromarray(samples[key].rgb).resize((8, 8), Image.BOX), np.float64)
        assert np.abs(small - coarse).mean() < 8, key


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_every_epoch_reads_every_row_once_in_a_new_order_set_by_the_seed(prepared):
    out, summary = prepared
    ok = sorted(r["key"] for r in all_rows(out) if r["status"] == "ok")
    assert len(list(out.glob("*.parquet"))) >= 3, "the test needs several shards"

    def epochs(seed: int, n: int) -> list[list[str]]:
        ds = read_prepared(str(out), columns=["key"], shuffle_seed=seed)
        return [[str(k) for b in ds.iter_batches(batch_format="numpy") for k in b["key"]]
                for _ in range(n)]  # fmt: skip

    # in stored order, as the training stage reads it (its DataConfig preserves the order)
    ctx = ray.data.DataContext.get_current()
    before = ctx.execution_options.preserve_order
    ctx.execution_options.preserve_order = True
    try:
        first = epochs(3, 4)
        again, other = epochs(3, 4), epochs(4, 4)
    finally:
        ctx.execution_options.preserve_order = before
    for keys in first:
        assert sorted(keys) == ok
    assert len({tuple(keys) for keys in first}) > 1  # epochs differ (3 shards: 6 orders)
    assert again == first  # the same seed replays the same epochs
    assert other != first


# --- segmentation maps --------------------------------------------------------------------------
def expected_square(im: Image.Image, resample: int) -> np.ndarray:
    """The shorter side resized to SIZE, then the centre SIZE x SIZE crop (written out again
    here, independently of the stage's code)."""
    w, h = im.size
    scale = SIZE / min(w, h)
    nw, nh = max(SIZE, round(w * scale)), max(SIZE, round(h * scale))
    big = np.asarray(im.resize((nw, nh), resample))
    top, left = (nh - SIZE) // 2, (nw - SIZE) // 2
    return big[top : top + SIZE, left : left + SIZE]


def paired_files() -> list[tuple[str, Path, Path, str]]:
    """(key, photo, mask, format) of every input prepared with a mask file."""
    out = [(f"{k}.jpg", COCO128 / f"{k}.jpg", COCO128_MASKS / f"{k}.png", "coco-panoptic")
           for k in COCO128_PAIRED]  # fmt: skip
    out += [(f"{k}.jpg", CAMVID / "train" / f"{k}.jpg", CAMVID / "trainannot" / f"{k}.png",
             "camvid") for k in CAMVID_FRAMES]  # fmt: skip
    return out


@pytest.fixture(scope="module")
def samples(prepared) -> dict[str, Sample]:
    return {s.key: s for s in read_samples(prepared[0])}


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_masks_are_cropped_with_their_photos(samples):
    """The stored square of a photo is the crop of the resized photo, and its seg map the
    same crop of the resized (NEAREST) mask, mapped into the 133 classes."""
    for key, photo, mask, fmt in paired_files():
        s = samples[key]
        assert np.array_equal(
            s.rgb, expected_square(Image.open(photo).convert("RGB"), Image.BICUBIC)
        ), key
        raw = Image.fromarray(decode_mask(mask.read_bytes()))
        assert np.array_equal(s.seg, map_mask(expected_square(raw, Image.NEAREST), fmt)), key
        assert (s.seg != SEG_IGNORE).mean() > 0.5, key
    # and the classes sit where the photo shows them
    sky, grass = SEG_CLASS_NAMES.index("sky-other-merged"), SEG_CLASS_NAMES.index("grass-merged")
    field = samples["000000000149.jpg"]
    rows = np.arange(SIZE)[:, None] + np.zeros(SIZE)
    assert rows[field.seg == sky].mean() < rows[field.seg == grass].mean()
    sky_rgb, grass_rgb = field.rgb[field.seg == sky].mean(0), field.rgb[field.seg == grass].mean(0)
    assert sky_rgb[2] > sky_rgb[0] and grass_rgb[1] > grass_rgb[2]
    street = samples[f"{CAMVID_FRAMES[0]}.jpg"]
    assert rows[street.seg == sky].mean() < SIZE / 3
    assert rows[street.seg == SEG_CLASS_NAMES.index("road")].mean() > SIZE / 2


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_exif_orientation_turns_photo_and_mask_together(samples):
    """A frame stored sideways with EXIF orientation 6 (its label map stored sideways too)
    gives exactly the square of the upright frame."""
    upright, turned = samples[f"{CAMVID_FRAMES[0]}.jpg"], samples[f"{ROTATED}.png"]
    assert np.array_equal(turned.rgb, upright.rgb)
    assert np.array_equal(turned.seg, upright.seg)


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_unusable_masks_are_counted_warnings_not_errors(prepared, inputs):
    out, summary = prepared
    rows = {r["key"]: r for r in all_rows(out, ("key", "status", "warning", "has_seg", "seg"))}
    for stem, reason in COCO128_BAD_MASK.items():
        r = rows[f"{stem}.jpg"]
        assert r["status"] == "ok" and not r["has_seg"] and r["seg"] == b"", stem
        assert reason in r["warning"], r["warning"]
    no_mask = rows[f"{COCO128_NO_MASK}.jpg"]
    assert no_mask["status"] == "ok" and not no_mask["has_seg"] and not no_mask["warning"]
    assert summary["n_mask_warnings"] == 2
    assert {w["key"] for w in summary["mask_warnings"]} == {f"{k}.jpg" for k in COCO128_BAD_MASK}
    assert summary["n_seg"] == sum(r["has_seg"] for r in rows.values())


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_dataset_json_records_label_space_and_masks_per_source(prepared, inputs, coco):
    out, summary = prepared
    assert summary["segmentation"] == {"space": "coco-panoptic-133", "ignore": 255}
    n_coco_ok = sum(
        r["status"] == "ok"
        for r in all_rows(out)
        if r["key"] in {im["file_name"] for im in coco["images"]}
    )
    assert summary["seg_sources"] == {
        f"coco-instances:{COCO_ANN}": {
            "format": "coco-instances", "images": 80, "with_mask": n_coco_ok, "mask_warnings": 0,
        },
        f"coco-panoptic:{inputs['coco128']}": {
            "format": "coco-panoptic", "images": 6, "paired": 5, "no_mask_file": 1,
            "unmatched_masks": 0, "with_mask": 3, "mask_warnings": 2,
        },
        f"camvid:{inputs['camvid']}": {
            "format": "camvid", "images": 4, "paired": 4, "no_mask_file": 0,
            "unmatched_masks": 0, "with_mask": 4, "mask_warnings": 0,
        },
    }  # fmt: skip


# --- the category teacher ------------------------------------------------------------------------
@pytest.mark.ray
@pytest.mark.timeout(120)
def test_teacher_probabilities_are_the_classifiers(prepared, samples):
    from colorization.models.efficientnet import imagenet_classifier
    from pipeline.prepare_stage import teacher_probabilities

    out, summary = prepared
    assert summary["teacher"] == {"model": "efficientnet-lite0", "input": 224}
    probs = np.stack([s.teacher for s in samples.values()])
    assert probs.min() >= 0 and np.allclose(probs.sum(1), 1, atol=2e-3)
    assert samples["n01440764_tench.jpg"].teacher.argmax() == 0
    assert samples["n01443537_goldfish.jpg"].teacher.argmax() == 1
    # each row holds its own photo's prediction (not a neighbour's, not a stale one)
    keys = ["n01440764_tench.jpg", "n01443537_goldfish.jpg", "000000000149.jpg"]
    direct = teacher_probabilities(
        imagenet_classifier("lite0"), np.stack([samples[k].rgb for k in keys]), 224
    )
    for k, p in zip(keys, direct, strict=True):
        assert np.abs(samples[k].teacher - p).max() < 2e-3, k
    rows = all_rows(out, ("status", "teacher"))
    assert all((len(r["teacher"]) == 2000) == (r["status"] == "ok") for r in rows)


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_without_teacher(ray_local, inputs, tmp_path):
    cfg = PrepareConfig(
        sources=[str(inputs["camvid"])], out=str(tmp_path), size=32, teacher=None,
        masks=mask_specs(inputs)[1:],
    )  # fmt: skip
    summary = prepare(cfg)
    assert summary["teacher"] is None and summary["n_ok"] == summary["n_seg"] == 4
    got = read_samples(tmp_path)
    assert len(got) == 4 and all(s.teacher is None and s.seg.shape == (32, 32) for s in got)


@pytest.mark.timeout(30)
def test_bad_mask_and_teacher_options_fail_before_running(inputs, tmp_path):
    for spec in ("cityscapes:a=b", "camvid:a", "camvid:=b", "a=b"):
        with pytest.raises(ValueError, match="FORMAT:IMAGES_DIR=MASKS_DIR"):
            MaskSource.parse(spec)
    assert MaskSource.parse("camvid:s3://b/x=s3://b/y") == MaskSource(
        "camvid", "s3://b/x", "s3://b/y"
    )
    nowhere = PrepareConfig(
        sources=[str(inputs["camvid"])], out=str(tmp_path),
        masks=[f"camvid:{inputs['coco128']}={inputs['cvmask']}"],
    )  # fmt: skip
    with pytest.raises(ValueError, match="no listed input below it"):
        prepare(nowhere)
    with pytest.raises(ValueError, match="unknown teacher"):
        prepare(PrepareConfig(sources=[str(inputs["camvid"])], out=str(tmp_path), teacher="b7"))


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_rerun_replaces_the_output(prepared, inputs):
    out, summary = prepared
    before = sorted((r["key"], r["status"]) for r in all_rows(out))
    (out / "stale.parquet").write_bytes(b"not a shard")
    again = run_prepare(inputs, out)
    assert not (out / "stale.parquet").exists()
    assert sorted((r["key"], r["status"]) for r in all_rows(out)) == before
    for k in ("n_listed", "n_ok", "n_skipped", "n_error", "labels"):
        assert again[k] == summary[k]


@pytest.mark.timeout(60)
def test_semantic_maps_draw_smaller_objects_last(coco):
    from colorization.coco import CONTIGUOUS, annotation_mask, semantic_map
    from pipeline.sources import list_items

    areas = {a["id"]: a["area"] for a in coco["annotations"]}
    by_image: dict[int, list[int]] = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a["id"])
    for item in list_items(str(COCO_ANN)):
        anns = list(item.annotations)
        if len(anns) < 2:
            continue
        h, w = anns[0]["height"], anns[0]["width"]
        order = np.argsort([-areas[i] for i in by_image[item.image_id]], kind="stable")
        expected = np.zeros((h, w), np.uint8)
        for k in order:  # largest first, smallest last
            expected[annotation_mask(anns[k]["segmentation"], h, w)] = (
                CONTIGUOUS[anns[k]["category_id"]] + 1
            )
        assert np.array_equal(semantic_map(anns, h, w), expected), item.key


# --- collate (no Ray) -------------------------------------------------------------------------------
def coordinate_sample(size: int, with_seg: bool, teacher: int | None, key: str = "s") -> Sample:
    """rgb[y, x] = (y, x, 7) and seg[y, x] = x: every crop and flip is readable from pixels;
    the teacher (if any) puts all its mass on class ``teacher``."""
    y, x = np.mgrid[:size, :size].astype(np.uint8)
    rgb = np.stack([y, x, np.full_like(y, 7)], axis=-1)
    probs = None if teacher is None else np.eye(1000, dtype=np.float32)[teacher]
    return Sample(rgb, x.copy() if with_seg else None, [], key, probs)


@pytest.mark.timeout(30)
def test_collate_crops_flips_and_teacher():
    from pipeline.train_stage import collate

    size, crop = 40, 16
    samples = [
        coordinate_sample(size, True, 3, "a"),
        coordinate_sample(size, False, None, "b"),
        coordinate_sample(size, True, 999, "c"),
    ]
    rng = np.random.default_rng(0)
    flips = set()
    for _ in range(20):
        b = collate(samples, crop, rng)
        assert b["rgb"].shape == (3, 3, crop, crop) and b["rgb"].dtype.is_floating_point
        assert b["seg"].shape == (3, crop, crop) and str(b["seg"].dtype) == "torch.int64"
        assert b["rgb"].min() >= 0 and b["rgb"].max() <= 1
        rgb = (b["rgb"] * 255).round().long().numpy()
        for i in range(3):
            rows, cols = rgb[i, 0], rgb[i, 1]
            assert (rgb[i, 2] == 7).all()
            assert (rows == rows[:, :1]).all() and np.array_equal(
                np.diff(rows[:, 0]), np.ones(crop - 1)
            )
            step = np.diff(cols[0])
            assert (step == 1).all() or (step == -1).all()  # a window, maybe mirrored
            flips.add(bool(step[0] == -1))
            assert cols.min() >= 0 and cols.max() <= size - 1 and rows.max() <= size - 1
            seg = b["seg"][i].numpy()
            if samples[i].seg is None:
                assert (seg == SEG_IGNORE).all()
            else:
                assert np.array_equal(seg, cols)  # seg cropped and flipped with the image
        assert b["teacher"].shape == (3, 1000)
        assert b["teacher"].argmax(1).tolist()[::2] == [3, 999] and not b["teacher"][1].any()
        assert b["has_teacher"].tolist() == [True, False, True]
    assert flips == {True, False}


@pytest.mark.timeout(30)
def test_collate_full_size_crop_without_teacher():
    from pipeline.train_stage import collate

    s = coordinate_sample(16, False, None)
    b = collate([s], 16, np.random.default_rng(1))
    assert not b["has_teacher"].any()
    cols = (b["rgb"][0, 1] * 255).round().long()
    assert sorted(cols[0].tolist()) == list(range(16))
