"""What counts as a grey photo: the one definition the tables stage, prepare and the evaluation
skip by (Zhang et al. leave grey ground truth out of their statistics, training and tests).

A photo is grey when its file mode is grey, or when fewer than 1% of its pixels have a colour
(|a| or |b| of at least 5 in CIE Lab, i.e. outside the neutral cell of the 10-unit class grid):
the chroma noise of a JPEG-compressed grey scan stays far below that, a sepia print does not.
Large photos are judged on a regular sample of at most :data:`SAMPLE_SIDE` pixels along their
longer side, so the test costs the same for a thumbnail and a 40-megapixel scan.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from colorization import color
from colorization.imageio import GREY_MODES, to_rgb_array

#: a pixel has a colour when |a| or |b| is at least this (ab units)
GREY_AB = 5.0
#: a photo is grey when fewer than this fraction of its pixels have a colour
GREY_MAX_COLOUR_FRACTION = 0.01
#: photos are judged on every k-th pixel, k the smallest that leaves at most this many per side
SAMPLE_SIDE = 256


def colour_fraction(rgb: np.ndarray) -> float:
    """The share of the pixels of a uint8 RGB image ``(H, W, 3)`` that have a colour
    (|a| or |b| >= :data:`GREY_AB`), judged on the regular sample described above."""
    rgb = np.asarray(rgb)
    k = max(1, math.ceil(max(rgb.shape[:2]) / SAMPLE_SIDE))
    ab = color.rgb_to_lab(rgb[::k, ::k])[..., 1:]
    return float((np.abs(ab) >= GREY_AB).any(axis=-1).mean())


def is_grey_rgb(rgb: np.ndarray) -> bool:
    """Whether a uint8 RGB image ``(H, W, 3)`` is a grey photo."""
    return colour_fraction(rgb) < GREY_MAX_COLOUR_FRACTION


def is_grey_photo(im: Image.Image) -> bool:
    """Whether a decoded photo (any PIL mode) is grey: a grey file mode, or
    :func:`is_grey_rgb` of its 8-bit RGB pixels."""
    return im.mode in GREY_MODES or is_grey_rgb(to_rgb_array(im))
