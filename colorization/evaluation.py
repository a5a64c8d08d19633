"""Evaluation as the colorization papers do it: 256x256, grey input, compare with the original.

Protocol (the one whose grey baseline on coco-tiny val2017 is PSNR 22.87 / SSIM 0.9075):
- each original is resized to 256x256 (bicubic, aspect ratio not kept) as 8-bit RGB;
- originals that are themselves grey (every pixel R = G = B, or a grey file mode) are skipped;
- the model sees that image's L and its output is the 256x256 L with the predicted chroma;
- PSNR over the three channels (peak 255), SSIM as ``skimage.metrics.structural_similarity``
  (7x7 uniform window, mean over channels), Hasler-Suesstrunk colourfulness in its |rg|, |yb|
  form;
- the grey baseline is the same L with ab = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from colorization import color
from colorization.imageio import GREY_MODES, to_rgb_array
from colorization.metrics import colorfulness, psnr, ssim

EVAL_SIZE = 256
#: ab histogram of outputs: 2-unit bins over [-110, 110)
AB_EDGES = np.arange(-110, 111, 2.0)


@dataclass(frozen=True)
class Truth:
    """One evaluation image: the 256x256 original and what it came from."""

    rgb: np.ndarray  # uint8 (EVAL_SIZE, EVAL_SIZE, 3)
    width: int
    height: int
    mode: str


def is_grey_original(im: Image.Image) -> bool:
    """Ground truth that is itself grey: a grey file mode or every pixel with R = G = B."""
    if im.mode in GREY_MODES:
        return True
    rgb = to_rgb_array(im)
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


def make_truth(im: Image.Image, size: int = EVAL_SIZE) -> Truth | None:
    """A decoded original -> its evaluation form, or None when it is grey (skipped)."""
    if is_grey_original(im):
        return None
    rgb = np.asarray(im.convert("RGB").resize((size, size), Image.BICUBIC))
    return Truth(rgb=rgb, width=im.width, height=im.height, mode=im.mode)


def grey_version(rgb: np.ndarray) -> np.ndarray:
    """The grey input the models see, as RGB: the image's L with ab = 0 (the grey baseline)."""
    lab = color.rgb_to_lab(rgb)
    lab[..., 1:] = 0.0
    return color.to_uint8(color.lab_to_rgb(lab))


def score(truth: np.ndarray, output: np.ndarray) -> dict[str, float]:
    """PSNR, SSIM and colourfulness of one output against its original."""
    return {
        "psnr": psnr(truth, output),
        "ssim": ssim(truth, output),
        "colorfulness": colorfulness(output),
    }


def ab_histogram(rgb: np.ndarray) -> np.ndarray:
    """Counts of an image's pixels on the ab plane (``AB_EDGES`` bins, a along axis 0)."""
    ab = color.rgb_to_lab(rgb)[..., 1:].reshape(-1, 2)
    hist, _, _ = np.histogram2d(ab[:, 0], ab[:, 1], bins=[AB_EDGES, AB_EDGES])
    return hist
