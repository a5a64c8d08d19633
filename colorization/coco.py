"""COCO annotations -> masks (pycocotools' RLE code, no COCO object needed per image)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

#: the 80 COCO category ids in their canonical order (index + 1 = contiguous label)
COCO_CATEGORY_IDS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27,
    28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53,
    54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80,
    81, 82, 84, 85, 86, 87, 88, 89, 90,
)  # fmt: skip
CONTIGUOUS = {cid: i for i, cid in enumerate(COCO_CATEGORY_IDS)}


def annotation_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """One annotation's segmentation (polygons, RLE or compressed RLE) -> bool ``(H, W)``."""
    if isinstance(segmentation, list):  # polygons
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return mask_utils.decode(rle).astype(bool)


def category_masks(annotations: Iterable[dict[str, Any]]) -> dict[int, np.ndarray]:
    """Annotations of one image (each with ``segmentation``, ``category_id``, ``height``,
    ``width``) -> ``{category_id: union mask}``."""
    out: dict[int, np.ndarray] = {}
    for ann in annotations:
        m = annotation_mask(ann["segmentation"], ann["height"], ann["width"])
        cid = ann["category_id"]
        out[cid] = out[cid] | m if cid in out else m
    return out


def semantic_map(annotations: Iterable[dict[str, Any]], height: int, width: int) -> np.ndarray:
    """uint8 ``(H, W)`` label map: 0 background, 1..80 the contiguous COCO categories (later
    annotations drawn over earlier ones, smaller objects last so they stay visible)."""
    anns = sorted(annotations, key=lambda a: -float(np.sum(a.get("area", 0))))
    out = np.zeros((height, width), np.uint8)
    for ann in anns:
        m = annotation_mask(ann["segmentation"], height, width)
        out[m] = CONTIGUOUS[ann["category_id"]] + 1
    return out
