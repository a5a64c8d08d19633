"""The one definition of a grey photo (colorization/grey.py), and the stages that skip by it."""

import io

import numpy as np
import pytest
from PIL import Image

from colorization.abgrid import AbGrid
from colorization.evaluation import make_truth
from colorization.grey import SAMPLE_SIDE, colour_fraction, is_grey_photo, is_grey_rgb
from colorization.stats import image_stats
from tests.conftest import require
from tests.shared_paths import SHARED_DATA

COCO_VAL = SHARED_DATA / "coco-tiny" / "val2017"


def _grey(h: int = 64, w: int = 80) -> np.ndarray:
    ramp = np.linspace(0, 255, w, dtype=np.uint8)[None, :, None]
    return np.ascontiguousarray(np.broadcast_to(ramp, (h, w, 3)))


def _jpeg(rgb: np.ndarray) -> Image.Image:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=75)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


@pytest.mark.parametrize("mode", ["L", "LA", "I;16", "1"])
def test_grey_file_modes_are_grey(mode):
    assert is_grey_photo(Image.new(mode, (8, 8)))


def test_a_grey_scan_with_jpeg_noise_is_grey_and_a_sepia_print_is_not():
    noisy = np.clip(
        _grey().astype(int) + np.random.default_rng(0).integers(-2, 3, (64, 80, 3)), 0, 255
    )
    assert is_grey_photo(_jpeg(noisy.astype(np.uint8)))
    sepia = (_grey() * np.array([1.0, 0.85, 0.65])).astype(np.uint8)
    assert not is_grey_photo(Image.fromarray(sepia))


def test_one_percent_of_coloured_pixels_makes_a_colour_photo():
    rgb = _grey(100, 100)
    rgb[:2, :20] = (200, 30, 30)  # 40 of 10,000 pixels: under 1%
    assert is_grey_rgb(rgb) and colour_fraction(rgb) == pytest.approx(0.004)
    rgb[:6, :20] = (200, 30, 30)  # 1.2%
    assert not is_grey_rgb(rgb)


def test_large_photos_are_judged_on_a_bounded_sample():
    rgb = np.zeros((4 * SAMPLE_SIDE, 3 * SAMPLE_SIDE, 3), np.uint8)
    rgb[::4, ::4] = (0, 200, 0)  # exactly the sampled pixels
    assert colour_fraction(rgb) == 1.0


def test_tables_and_evaluation_skip_the_same_coco_photos():
    """Both grey originals of coco-tiny val2017 (one with JPEG chroma noise, which a test of
    R = G = B kept) are skipped by the tables stage's statistics and the evaluation alike."""
    photos = sorted(require(COCO_VAL).glob("*.jpg"))
    grid = AbGrid(10.0)
    lut = grid.rgb_cell_lut()
    grey = set()
    for p in photos:
        im = Image.open(p)
        im.load()
        flagged = {is_grey_photo(im), image_stats(im, grid, lut).grey, make_truth(im) is None}
        assert len(flagged) == 1, p.name
        if flagged.pop():
            grey.add(p.name)
    assert grey == {"000000060932.jpg", "000000566282.jpg"}
