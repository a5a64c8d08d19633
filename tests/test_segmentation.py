"""colorization/segmentation.py: the 133-class label space and every source's mapping into it,
on the real masks of ../shared/data (coco128-train-masks, CamVid, coco-tiny instances)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import yaml
from PIL import Image

from colorization.coco import COCO_CATEGORY_IDS, CONTIGUOUS, semantic_map
from colorization.segmentation import (
    NUM_SEG_CLASSES,
    PANOPTIC_CATEGORIES,
    PANOPTIC_TO_SEG,
    SEG_CLASS_NAMES,
    SEG_IGNORE,
    MaskError,
    coco_instance_seg,
    decode_mask,
    map_mask,
)
from tests.conftest import require
from tests.shared_paths import SHARED_DATA

COCO128 = SHARED_DATA / "coco128-train"
COCO128_MASKS = SHARED_DATA / "coco128-train-masks"
CAMVID = SHARED_DATA / "camvid"
COCO_ANN = SHARED_DATA / "coco-tiny" / "annotations" / "instances_train2017.json"

# ids of the usual 133-class COCO panoptic list (detectron2's contiguous ids), written out here
# so that a reordered constant fails
PERSON, CAR, ROAD, TREE, FENCE, SKY, PAVEMENT, GRASS, BUILDING = (
    0,
    2,
    100,
    116,
    117,
    119,
    123,
    125,
    129,
)


def test_label_space_is_coco_panoptic_in_id_order():
    assert NUM_SEG_CLASSES == len(SEG_CLASS_NAMES) == 133 and SEG_IGNORE == 255
    ids = [cid for cid, _ in PANOPTIC_CATEGORIES]
    assert ids == sorted(ids) and len(set(SEG_CLASS_NAMES)) == 133
    assert ids[:80] == list(COCO_CATEGORY_IDS) and min(ids[80:]) > 90
    # a thing's class id is its contiguous COCO instance label
    assert all(PANOPTIC_TO_SEG[cid] == CONTIGUOUS[cid] for cid in COCO_CATEGORY_IDS)
    named = dict(zip(SEG_CLASS_NAMES, range(133), strict=True))
    assert [named[n] for n in ("person", "car", "road", "tree-merged", "fence-merged")] == [
        PERSON,
        CAR,
        ROAD,
        TREE,
        FENCE,
    ]
    expected = ("sky-other-merged", "pavement-merged", "grass-merged", "building-other-merged")
    assert [named[n] for n in expected] == [SKY, PAVEMENT, GRASS, BUILDING]


def test_names_agree_with_the_masks_classes_yaml():
    classes = yaml.safe_load(require(COCO128_MASKS / "classes.yaml").read_text())["classes"]
    coco = {c["id"]: c["name"] for c in json.loads(require(COCO_ANN).read_text())["categories"]}
    for cid, name in PANOPTIC_CATEGORIES:
        assert classes.get(cid, coco.get(cid)) == name, cid
    assert set(classes) - {0} <= set(PANOPTIC_TO_SEG)


def test_coco128_mask_sky_and_grass_land_on_their_classes():
    stem = "000000000149"  # a field under the sky: 65 % sky, 24 % grass
    raw = decode_mask(require(COCO128_MASKS / f"{stem}.png").read_bytes())
    seg = map_mask(raw, "coco-panoptic")
    assert np.array_equal(seg == SKY, raw == 187) and np.array_equal(seg == GRASS, raw == 193)
    assert (seg[raw == 0] == SEG_IGNORE).all() and (raw == 0).any()
    assert set(np.unique(seg).tolist()) <= set(range(133)) | {SEG_IGNORE}
    photo = np.asarray(Image.open(COCO128 / f"{stem}.jpg").convert("RGB"), np.float64)
    assert photo.shape[:2] == seg.shape
    sky, grass = photo[seg == SKY].mean(0), photo[seg == GRASS].mean(0)
    rows = np.arange(seg.shape[0])[:, None]
    assert (rows * (seg == SKY)).sum() / (seg == SKY).sum() < seg.shape[0] / 2  # sky above
    assert sky[2] > sky[0] and sky.mean() > grass.mean() + 50  # bluish, bright
    assert grass[1] > grass[0] and grass[1] > grass[2]  # green


def test_every_coco128_mask_maps_into_the_space():
    masks = sorted(require(COCO128_MASKS).glob("*.png"))
    assert len(masks) == 100
    for path in masks[::10]:
        raw = decode_mask(path.read_bytes())
        seg = map_mask(raw, "coco-panoptic")
        assert ((seg == SEG_IGNORE) == (raw == 0)).all(), path.name  # every id is known


def test_camvid_sky_void_pole_and_road():
    label = require(CAMVID / "trainannot" / "0001TP_006690.png")
    raw = decode_mask(label.read_bytes())
    seg = map_mask(raw, "camvid")
    assert {0, 2, 3, 11} <= set(np.unique(raw).tolist())
    assert (seg[raw == 0] == SKY).all() and (seg[raw == 3] == ROAD).all()
    assert (seg[raw == 11] == SEG_IGNORE).all() and (seg[raw == 2] == SEG_IGNORE).all()
    expected = [SKY, BUILDING, 255, ROAD, PAVEMENT, TREE, 255, FENCE, CAR, PERSON, 255, 255]
    every_value = map_mask(np.arange(256, dtype=np.uint8)[None], "camvid")[0].tolist()
    assert every_value == expected + [SEG_IGNORE] * 244
    photo = np.asarray(Image.open(CAMVID / "train" / "0001TP_006690.jpg").convert("RGB"), float)
    ys = np.nonzero(seg == SKY)[0]
    assert ys.mean() < seg.shape[0] / 3  # the sky is at the top of a driving scene
    assert photo[seg == SKY].mean() > photo[seg == ROAD].mean()


def test_coco_instances_outside_every_object_are_ignored():
    coco = json.loads(require(COCO_ANN).read_text())
    im = coco["images"][0]
    anns = [dict(a, height=im["height"], width=im["width"]) for a in coco["annotations"]]
    anns = [a for a in anns if a["image_id"] == im["id"]]
    seg = coco_instance_seg(anns, im["height"], im["width"])
    sem = semantic_map(anns, im["height"], im["width"])
    assert np.array_equal(seg == SEG_IGNORE, sem == 0) and (sem == 0).any()
    assert np.array_equal(seg[sem > 0], sem[sem > 0] - 1)
    assert {SEG_CLASS_NAMES[v] for v in np.unique(seg[seg != SEG_IGNORE])} <= {
        c["name"] for c in coco["categories"] if c["id"] in {a["category_id"] for a in anns}
    }


def _png(arr: np.ndarray, mode: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).convert(mode).save(buf, "PNG")
    return buf.getvalue()


def test_decode_mask_refuses_what_is_not_a_label_image():
    good = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert np.array_equal(decode_mask(_png(good, "L")), good)
    for data, reason in (
        (b"", "empty"),
        (b"not a png", "unreadable"),
        (_png(good, "RGB"), "single-channel"),
        (_png(good, "L")[:40], "unreadable"),
    ):
        with pytest.raises(MaskError, match=reason):
            decode_mask(data)
    with pytest.raises(ValueError, match="unknown mask format"):
        map_mask(good, "cityscapes")
