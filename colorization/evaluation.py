"""Evaluation as the colorization papers do it: 256x256, grey input, compare with the original.

Protocol (the one whose grey baseline on coco-tiny val2017 is PSNR 22.87 / SSIM 0.9075):
- each original is resized to 256x256 (bicubic, aspect ratio not kept) as 8-bit RGB;
- originals that are themselves grey photos (:mod:`colorization.grey`, the definition the
  tables and the training data skip by too) are skipped;
- the model sees that image's L and its output is the 256x256 L with the predicted chroma;
- PSNR over the three channels (peak 255), SSIM as ``skimage.metrics.structural_similarity``
  (7x7 uniform window, mean over channels), Hasler-Suesstrunk colourfulness in its |rg|, |yb|
  form;
- the grey baseline is the same L with ab = 0;
- Zhang et al.'s AuC (:func:`colorization.metrics.ab_auc`) raw (every pixel weighs the same)
  and class-rebalanced (each pixel weighs 1 / the prior of its original's ab bin), both pooled
  over every pixel of the set. The prior is that of the evaluation set's own 256x256 originals
  on a 10-unit ab grid (:data:`AUC_PRIOR_GRID`, the class spacing of Zhang et al.), so it does
  not depend on any model; Zhang et al. took theirs from ImageNet. Pooled over the set, the
  rebalanced curve is the mean over the occupied ab bins of each bin's own curve.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from colorization import color
from colorization.abgrid import AB_MAX, AbGrid
from colorization.grey import is_grey_photo
from colorization.metrics import ab_error, colorfulness, error_counts, psnr, ssim

EVAL_SIZE = 256
#: ab histogram of outputs: 2-unit bins over [-AB_MAX, AB_MAX)
AB_EDGES = np.arange(-AB_MAX, AB_MAX + 1, 2.0)
#: the ab bins of the AuC's class rebalancing: 10 units, centred on multiples of 10
AUC_PRIOR_GRID = AbGrid(10.0)


@dataclass(frozen=True)
class Truth:
    """One evaluation image: the 256x256 original and what it came from."""

    rgb: np.ndarray  # uint8 (EVAL_SIZE, EVAL_SIZE, 3)
    width: int
    height: int
    mode: str


def make_truth(im: Image.Image, size: int = EVAL_SIZE) -> Truth | None:
    """A decoded original -> its evaluation form, or None when it is a grey photo (skipped,
    :func:`colorization.grey.is_grey_photo`)."""
    if is_grey_photo(im):
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


def ab_prior(originals: list[np.ndarray], grid: AbGrid = AUC_PRIOR_GRID) -> np.ndarray:
    """``(grid.n_cells,)`` share of all the originals' pixels in each ab bin (sums to 1)."""
    counts = np.zeros(grid.n_cells)
    for rgb in originals:
        cells = grid.cell_of(color.rgb_to_lab(rgb)[..., 1:])
        counts += np.bincount(cells.ravel(), minlength=grid.n_cells)
    return counts / counts.sum()


def rebalancing_weights(
    rgb: np.ndarray, prior: np.ndarray, grid: AbGrid = AUC_PRIOR_GRID
) -> np.ndarray:
    """``(H, W)``: 1 / prior of each pixel's ab bin (the prior of a set that holds ``rgb``)."""
    p = prior[grid.cell_of(color.rgb_to_lab(rgb)[..., 1:])]
    if (p <= 0).any():
        raise ValueError("the prior has no mass in some ab bin of this image")
    return 1.0 / p


def auc_counts(
    truth: np.ndarray, output: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(raw, rebalanced) error counts of one output (:func:`colorization.metrics.error_counts`);
    summed over a set they give its pooled curves."""
    err = ab_error(truth, output)
    return error_counts(err), error_counts(err, weights)
