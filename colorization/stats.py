"""ab-colour statistics of images: histograms over the cells of an :class:`AbGrid`."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from colorization.abgrid import AbGrid
from colorization.coco import category_masks
from colorization.grey import is_grey_photo
from colorization.imageio import rgb_pixels
from colorization.kernels import histogram_pixels


@dataclass
class ImageStats:
    """The ab histogram of one image (and per COCO category, when masks were given)."""

    hist: np.ndarray  # (n_cells,) int64
    n_pixels: int
    grey: bool
    categories: dict[int, np.ndarray] = field(default_factory=dict)  # category id -> (n_cells,)


def image_stats(
    im: Image.Image, grid: AbGrid, cell_lut: np.ndarray, annotations: tuple = ()
) -> ImageStats:
    """Histogram one decoded image. ``cell_lut`` is ``grid.rgb_cell_lut()`` (passed in so that
    workers share one copy). Grey photos (:func:`colorization.grey.is_grey_photo`) are
    flagged."""
    px = rgb_pixels(im)
    hist = histogram_pixels(px, cell_lut, grid.n_cells)
    n_pixels = int(px.size)
    grey = is_grey_photo(im)
    cats: dict[int, np.ndarray] = {}
    if annotations:
        masks = category_masks(annotations)
        cells_2d = np.take(cell_lut, px & np.uint32(0xFFFFFF)).reshape(im.size[1], im.size[0])
        for cid, mask in masks.items():
            if mask.shape != cells_2d.shape:
                raise ValueError(
                    f"mask {mask.shape[::-1]} does not match image {im.size} (category {cid})"
                )
            cats[cid] = np.bincount(cells_2d[mask], minlength=grid.n_cells).astype(np.int64)
    return ImageStats(hist, n_pixels, grey, cats)
