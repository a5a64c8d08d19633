"""Stage 2a (pipeline/prepare_stage.py) end to end on real photos with one local Ray instance:
a status row per input, the label vocabulary, streamed samples, sharding over ranks; and
``collate`` from pipeline/train_stage.py on hand-made samples."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from colorization import color
from pipeline.prepare_stage import IGNORE, PrepareConfig, Sample, ShardStream, prepare
from pipeline.train_stage import collate
from tests.shared_paths import SHARED_DATA

SIZE = 64
COCO_ANN = SHARED_DATA / "coco-tiny" / "annotations" / "instances_train2017.json"
COCO_IMAGES = SHARED_DATA / "coco-tiny" / "train2017"
IMAGENET = SHARED_DATA / "imagenet-samples"
BROKEN = {"empty.jpg": "empty", "notes.txt": "not an image", "truncated.jpg": "truncated"}


# --- one prepared dataset for the module ------------------------------------------------------
@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    for p in (COCO_ANN, IMAGENET):
        if not p.exists():
            pytest.skip(f"shared data missing: {p}")
    root = tmp_path_factory.mktemp("inputs")
    broken, inet = root / "broken", root / "imagenet"
    broken.mkdir()
    inet.mkdir()
    (broken / "empty.jpg").write_bytes(b"")
    (broken / "notes.txt").write_text("a text file in an image folder\n")
    jpeg = sorted(COCO_IMAGES.glob("*.jpg"))[0].read_bytes()
    (broken / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    for src in sorted(IMAGENET.glob("n*.jpg"))[:5]:
        shutil.copyfile(src, inet / src.name)
    return {"broken": broken, "imagenet": inet}


def run_prepare(inputs: dict[str, Path], out: Path) -> dict:
    sources = [str(COCO_ANN), str(inputs["broken"]), str(inputs["imagenet"])]
    return prepare(PrepareConfig(sources=sources, out=str(out), size=SIZE, rows_per_file=16))


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


def coco_vocab(coco: dict) -> list[str]:
    return [f"coco:{c['name']}" for c in sorted(coco["categories"], key=lambda c: c["id"])]


# --- dataset.json and the status rows ---------------------------------------------------------
@pytest.mark.ray
@pytest.mark.timeout(120)
def test_summary_counts_and_failures(prepared, inputs, coco):
    out, summary = prepared
    assert summary == json.loads((out / "dataset.json").read_text())
    n_coco = len(coco["images"])
    assert summary["n_listed"] == n_coco + len(BROKEN) + 5
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
        + [p.name for p in inputs["imagenet"].iterdir()]
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
        if color.is_grey(np.asarray(Image.open(COCO_IMAGES / im["file_name"]).convert("RGB")))
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
    wnids = sorted(p.name.split("_")[0] for p in inputs["imagenet"].iterdir())
    assert vocab == coco_vocab(coco) + wnids

    names = {c["id"]: f"coco:{c['name']}" for c in coco["categories"]}
    cats: dict[int, set[str]] = {}
    for a in coco["annotations"]:
        cats.setdefault(a["image_id"], set()).add(names[a["category_id"]])
    expected = {
        im["file_name"]: {vocab.index(n) for n in cats.get(im["id"], ())} for im in coco["images"]
    }
    expected.update(
        {p.name: {vocab.index(p.name.split("_")[0])} for p in inputs["imagenet"].iterdir()}
    )
    for r in all_rows(out):
        if r["key"] in expected:
            assert set(r["labels"]) == expected[r["key"]], r["key"]
            assert r["has_seg"] == (r["status"] == "ok" and r["key"].startswith("0000"))


# --- streaming -----------------------------------------------------------------------------------
@pytest.mark.ray
@pytest.mark.timeout(120)
def test_stream_yields_images_seg_maps_and_labels(prepared, coco):
    out, summary = prepared
    samples = list(ShardStream(out).epoch(0, shuffle=False))
    assert len(samples) == summary["n_ok"]
    coco_keys = {im["file_name"] for im in coco["images"]}
    n_objects = 0
    for s in samples:
        assert s.rgb.shape == (SIZE, SIZE, 3) and s.rgb.dtype == np.uint8
        assert s.labels, s.key
        if s.key not in coco_keys:
            assert s.seg is None
            continue
        assert s.seg.shape == (SIZE, SIZE) and s.seg.dtype == np.uint8
        values = set(np.unique(s.seg).tolist())
        assert values <= set(range(81)) | {IGNORE}
        # a category drawn in the map is one of the image's labels (contiguous id + 1)
        assert {v - 1 for v in values - {0, IGNORE}} <= set(s.labels), s.key
        n_objects += len(values - {0, IGNORE}) > 0
    assert n_objects >= 0.9 * sum(s.key in coco_keys for s in samples)


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_stored_pixels_are_the_photo(prepared):
    """The stored square is the centre of the photo (same channel order and orientation)."""
    out, _ = prepared
    samples = {s.key: s for s in ShardStream(out).epoch(0, shuffle=False)}
    for key in sorted(k for k in samples if k.startswith("0000"))[:5]:
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
def test_two_ranks_cover_every_row_once_per_epoch(prepared):
    out, summary = prepared
    ok = sorted(r["key"] for r in all_rows(out) if r["status"] == "ok")
    streams = [ShardStream(out, rank=r, world=2, seed=3) for r in range(2)]
    assert len(streams[0].groups) >= 4, "the test needs several row groups"
    orders = []
    for epoch in (0, 1):
        keys = [[s.key for s in st.epoch(epoch)] for st in streams]
        assert keys[0] and keys[1]
        assert not set(keys[0]) & set(keys[1])
        assert sorted(keys[0] + keys[1]) == ok
        orders.append(keys[0] + keys[1])
    assert orders[0] != orders[1]
    again = [s.key for st in streams for s in st.epoch(0)]
    assert again == orders[0]  # the same epoch replays in the same order


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
def coordinate_sample(size: int, labels: list[int], with_seg: bool, key: str = "s") -> Sample:
    """rgb[y, x] = (y, x, 7) and seg[y, x] = x: every crop and flip is readable from pixels."""
    y, x = np.mgrid[:size, :size].astype(np.uint8)
    rgb = np.stack([y, x, np.full_like(y, 7)], axis=-1)
    return Sample(rgb, x.copy() if with_seg else None, labels, key)


@pytest.mark.timeout(30)
def test_collate_crops_flips_and_labels():
    size, crop, n_labels = 40, 16, 6
    samples = [
        coordinate_sample(size, [0, 3], True, "a"),
        coordinate_sample(size, [], False, "b"),
        coordinate_sample(size, [5], True, "c"),
    ]
    rng = np.random.default_rng(0)
    flips = set()
    for _ in range(20):
        b = collate(samples, crop, n_labels, rng)
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
                assert (seg == IGNORE).all()
            else:
                assert np.array_equal(seg, cols)  # seg cropped and flipped with the image
        assert b["labels"].tolist() == [
            [1, 0, 0, 1, 0, 0],
            [0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 1],
        ]
        assert b["has_labels"].tolist() == [True, False, True]
    assert flips == {True, False}


@pytest.mark.timeout(30)
def test_collate_full_size_crop_and_no_labels():
    s = coordinate_sample(16, [], False)
    b = collate([s], 16, 0, np.random.default_rng(1))
    assert b["labels"].shape == (1, 1) and not b["has_labels"].any()
    cols = (b["rgb"][0, 1] * 255).round().long()
    assert sorted(cols[0].tolist()) == list(range(16))
