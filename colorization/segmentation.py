"""The one semantic-segmentation label space of the project and the mappings into it.

Space ``coco-panoptic-133``: the 133 COCO panoptic categories (80 things, then 53 stuff) as
contiguous ids 0..132 in panoptic category-id order; :data:`SEG_IGNORE` (255) marks pixels
without a label. The 80 things come first in COCO's own order, so a thing's id here equals
its contiguous COCO instance label (``colorization.coco.CONTIGUOUS``). The names were
generated from ``coco128-train-masks/classes.yaml`` (129 categories: the 4 things that never
occur in those masks, parking meter, cow, toaster and hair drier, are missing there and were
taken from the COCO instance categories); nothing is read at run time.

Sources (every map is ``uint8 (H, W)``):

- COCO instance annotations (80 things, :func:`coco_instance_seg`): an instance pixel gets
  its category's id (smaller objects drawn over larger ones); a pixel outside every instance
  is SEG_IGNORE, since it is some stuff class the annotations do not name.
- ``coco-panoptic`` masks (:func:`map_mask`): single-channel PNGs of panoptic category ids,
  0 = unlabeled -> SEG_IGNORE; an id outside the 133 -> SEG_IGNORE.
- ``camvid`` masks, the 11-class SegNet version (0 sky ... 11 void), to the nearest panoptic
  category (:data:`CAMVID_TO_PANOPTIC`):

  ========== ====================== ==================================================
  CamVid     panoptic               why
  ========== ====================== ==================================================
  sky        sky-other-merged       the panoptic sky class
  building   building-other-merged  buildings (house, a separate panoptic class, would
                                    need a finer CamVid label)
  pole       SEG_IGNORE             no pole class in COCO panoptic (poles are merged
                                    into whatever surrounds them there)
  road       road                   the same class
  pavement   pavement-merged        sidewalks are pavement in COCO panoptic
  tree       tree-merged            CamVid tree = trees and vegetation, as tree-merged
                                    (tree, bush, branch)
  sign       SEG_IGNORE             CamVid's SignSymbol mixes road signs, traffic
                                    lights and other symbols; COCO has only stop sign
                                    and traffic light: no faithful match
  fence      fence-merged           the same class
  car        car                    CamVid's car class also holds vans, pick-ups and a
                                    few trucks and buses; car is the nearest class
  pedestrian person                 the same class
  bicyclist  SEG_IGNORE             rider and bicycle under one label; COCO splits them
                                    into person and bicycle: no faithful match
  void       SEG_IGNORE             unlabeled
  ========== ====================== ==================================================

  A value above 11 -> SEG_IGNORE.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

SEG_SPACE = "coco-panoptic-133"
#: label of pixels without a class; the one owner of this value (losses and stages import it)
SEG_IGNORE = 255
NUM_SEG_THINGS = 80

#: (COCO panoptic category id, name) of the 133 classes; the index is the class id
PANOPTIC_CATEGORIES: tuple[tuple[int, str], ...] = (
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"), (6, "bus"),
    (7, "train"), (8, "truck"), (9, "boat"), (10, "traffic light"), (11, "fire hydrant"),
    (13, "stop sign"), (14, "parking meter"), (15, "bench"), (16, "bird"), (17, "cat"),
    (18, "dog"), (19, "horse"), (20, "sheep"), (21, "cow"), (22, "elephant"), (23, "bear"),
    (24, "zebra"), (25, "giraffe"), (27, "backpack"), (28, "umbrella"), (31, "handbag"),
    (32, "tie"), (33, "suitcase"), (34, "frisbee"), (35, "skis"), (36, "snowboard"),
    (37, "sports ball"), (38, "kite"), (39, "baseball bat"), (40, "baseball glove"),
    (41, "skateboard"), (42, "surfboard"), (43, "tennis racket"), (44, "bottle"),
    (46, "wine glass"), (47, "cup"), (48, "fork"), (49, "knife"), (50, "spoon"), (51, "bowl"),
    (52, "banana"), (53, "apple"), (54, "sandwich"), (55, "orange"), (56, "broccoli"),
    (57, "carrot"), (58, "hot dog"), (59, "pizza"), (60, "donut"), (61, "cake"), (62, "chair"),
    (63, "couch"), (64, "potted plant"), (65, "bed"), (67, "dining table"), (70, "toilet"),
    (72, "tv"), (73, "laptop"), (74, "mouse"), (75, "remote"), (76, "keyboard"),
    (77, "cell phone"), (78, "microwave"), (79, "oven"), (80, "toaster"), (81, "sink"),
    (82, "refrigerator"), (84, "book"), (85, "clock"), (86, "vase"), (87, "scissors"),
    (88, "teddy bear"), (89, "hair drier"), (90, "toothbrush"), (92, "banner"), (93, "blanket"),
    (95, "bridge"), (100, "cardboard"), (107, "counter"), (109, "curtain"), (112, "door-stuff"),
    (118, "floor-wood"), (119, "flower"), (122, "fruit"), (125, "gravel"), (128, "house"),
    (130, "light"), (133, "mirror-stuff"), (138, "net"), (141, "pillow"), (144, "platform"),
    (145, "playingfield"), (147, "railroad"), (148, "river"), (149, "road"), (151, "roof"),
    (154, "sand"), (155, "sea"), (156, "shelf"), (159, "snow"), (161, "stairs"), (166, "tent"),
    (168, "towel"), (171, "wall-brick"), (175, "wall-stone"), (176, "wall-tile"),
    (177, "wall-wood"), (178, "water-other"), (180, "window-blind"), (181, "window-other"),
    (184, "tree-merged"), (185, "fence-merged"), (186, "ceiling-merged"),
    (187, "sky-other-merged"), (188, "cabinet-merged"), (189, "table-merged"),
    (190, "floor-other-merged"), (191, "pavement-merged"), (192, "mountain-merged"),
    (193, "grass-merged"), (194, "dirt-merged"), (195, "paper-merged"),
    (196, "food-other-merged"), (197, "building-other-merged"), (198, "rock-merged"),
    (199, "wall-other-merged"), (200, "rug-merged"),
)  # fmt: skip
NUM_SEG_CLASSES = len(PANOPTIC_CATEGORIES)  # 133
SEG_CLASS_NAMES: tuple[str, ...] = tuple(name for _, name in PANOPTIC_CATEGORIES)
#: COCO panoptic category id -> class id 0..132
PANOPTIC_TO_SEG: dict[int, int] = {cid: i for i, (cid, _) in enumerate(PANOPTIC_CATEGORIES)}
_PANOPTIC_ID = {name: cid for cid, name in PANOPTIC_CATEGORIES}

CAMVID_CLASSES = (
    "sky", "building", "pole", "road", "pavement", "tree", "sign", "fence", "car",
    "pedestrian", "bicyclist", "void",
)  # fmt: skip
#: CamVid class -> panoptic category name, or None for SEG_IGNORE (see the module docstring)
CAMVID_TO_PANOPTIC: dict[str, str | None] = {
    "sky": "sky-other-merged",
    "building": "building-other-merged",
    "pole": None,
    "road": "road",
    "pavement": "pavement-merged",
    "tree": "tree-merged",
    "sign": None,
    "fence": "fence-merged",
    "car": "car",
    "pedestrian": "person",
    "bicyclist": None,
    "void": None,
}

MASK_FORMATS = ("coco-panoptic", "camvid")


class MaskError(ValueError):
    """A mask file that cannot be used; the message says why."""


def _lut(pairs: Iterable[tuple[int, int]]) -> np.ndarray:
    lut = np.full(256, SEG_IGNORE, np.uint8)
    for value, cls in pairs:
        lut[value] = cls
    return lut


#: per mask format: uint8 (256,) lookup table, stored value -> class id or SEG_IGNORE
MASK_LUTS: dict[str, np.ndarray] = {
    "coco-panoptic": _lut((cid, i) for cid, i in PANOPTIC_TO_SEG.items() if cid < 256),
    "camvid": _lut(
        (v, PANOPTIC_TO_SEG[_PANOPTIC_ID[name]])
        for v, c in enumerate(CAMVID_CLASSES)
        if (name := CAMVID_TO_PANOPTIC[c]) is not None
    ),
}


def map_mask(values: np.ndarray, fmt: str) -> np.ndarray:
    """A mask's stored values (uint8 ``(H, W)``) in format ``fmt`` -> class ids uint8 ``(H, W)``
    with SEG_IGNORE."""
    if fmt not in MASK_LUTS:
        raise ValueError(f"unknown mask format {fmt!r}; known: {', '.join(MASK_FORMATS)}")
    return MASK_LUTS[fmt][values]


def decode_mask(data: bytes) -> np.ndarray:
    """Bytes of a single-channel label image (PNG mode ``L``, or ``P``: the palette indices are
    the labels) -> uint8 ``(H, W)`` of the stored values, stored orientation (EXIF ignored).
    Raises :class:`MaskError` for empty, corrupt, multi-channel or 16-bit files."""
    if not data:
        raise MaskError("empty mask file (0 bytes)")
    try:
        im = Image.open(io.BytesIO(data))
        im.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
        raise MaskError(f"unreadable mask: {e}") from e
    if im.mode not in ("L", "P"):
        raise MaskError(f"mask mode {im.mode} is not a single-channel 8-bit label image")
    return np.asarray(im, dtype=np.uint8)


def coco_instance_seg(annotations: Iterable[dict[str, Any]], height: int, width: int) -> np.ndarray:
    """COCO instance annotations of one image -> class ids uint8 ``(H, W)``: each instance's
    category (smaller objects drawn last), SEG_IGNORE outside every instance."""
    from colorization.coco import semantic_map  # pycocotools only where COCO json is read

    sem = semantic_map(annotations, height, width)  # 0 = none, 1..80 = contiguous + 1
    lut = _lut([(0, SEG_IGNORE)] + [(k + 1, k) for k in range(NUM_SEG_THINGS)])
    return lut[sem]
