"""Decoding image bytes safely into 8-bit RGB, whatever the file's mode.

Every reader of images in the project goes through :func:`decode_image`, so that the limits
(decompression bombs), the error messages and the mode handling are the same everywhere.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import pyarrow as pa
from PIL import Image, ImageOps, UnidentifiedImageError

#: default limit on decoded pixels (width * height); larger images are refused, not decoded
DEFAULT_MAX_PIXELS = 100_000_000
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
EXIF_ORIENTATION = 0x0112
#: EXIF orientation -> the transpose that shows the stored pixels upright (as Pillow's
#: ``ImageOps.exif_transpose``); 1 and missing: none
ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class DecodeError(ValueError):
    """The bytes are not an image this project can decode; the message says why."""


def decode_image(
    data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, exif_transpose: bool = True
) -> Image.Image:
    """Bytes -> a fully loaded PIL image (EXIF orientation applied unless told otherwise).

    Raises :class:`DecodeError` for empty, truncated, corrupt, non-image or oversized input.
    """
    if len(data) == 0:
        raise DecodeError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            w, h = im.size
            if w * h > max_pixels:
                raise DecodeError(
                    f"image too large to decode safely: {w}x{h} = {w * h} pixels "
                    f"> limit {max_pixels}"
                )
            im.load()
            if exif_transpose:
                im = ImageOps.exif_transpose(im)
    except DecodeError:
        raise
    except UnidentifiedImageError as e:
        raise DecodeError(f"not an image (unrecognised format, {len(data)} bytes)") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DecodeError(f"image too large to decode safely: {e}") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise DecodeError(f"corrupt or truncated image: {e}") from e
    return im


def exif_orientation(im: Image.Image) -> int:
    """The EXIF orientation of a decoded (not yet transposed) image; 1 when there is none."""
    return int(im.getexif().get(EXIF_ORIENTATION, 1) or 1)


def orient(im: Image.Image, orientation: int) -> Image.Image:
    """``im`` turned upright for ``orientation`` (another image's EXIF orientation, so that
    a label map drawn on a photo's stored pixels follows the photo)."""
    method = ORIENTATION_TRANSPOSE.get(orientation)
    return im if method is None else im.transpose(method)


def to_rgb8(im: Image.Image) -> Image.Image:
    """Any PIL mode -> mode ``RGB`` 8-bit (16-bit grey scaled, alpha dropped)."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode != "F" and arr.max() > 255 else 255.0
        if im.mode == "F" and arr.max() <= 1.0:
            top = 1.0
        grey = np.clip(np.rint(arr * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    return im.convert("RGB")


def to_rgb_array(im: Image.Image) -> np.ndarray:
    """PIL image -> uint8 ``(H, W, 3)``."""
    return np.asarray(to_rgb8(im))


def rgb_pixels(im: Image.Image) -> np.ndarray:
    """PIL image -> uint32 ``(H * W,)`` pixels ``R | G << 8 | B << 16 | X << 24`` (X: padding),
    Pillow's own 4-byte pixel buffer read without a copy where it can (Arrow export)."""
    rgb = to_rgb8(im)
    try:
        return pa.array(rgb).values.to_numpy(zero_copy_only=True).view("<u4")
    except (ValueError, TypeError, NotImplementedError, pa.ArrowException):
        from colorization.abgrid import rgb_code  # multi-block images have no Arrow export

        return rgb_code(np.asarray(rgb)).ravel()


def rgb_codes(im: Image.Image) -> np.ndarray:
    """PIL image -> uint32 ``(H * W,)`` colour codes ``R | G << 8 | B << 16`` (the index of
    :meth:`AbGrid.rgb_cell_lut`). Reads Pillow's own 4-byte pixel buffer without a copy where
    it can (Arrow export)."""
    return np.bitwise_and(rgb_pixels(im), np.uint32(0xFFFFFF))
