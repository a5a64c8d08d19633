"""Build an "archive" of awkward inputs for testing a mass-colorization job, with the status each
input must get.

This is a helper module for the tests, not a test file. Each ``write_*`` function writes files
under one sub-folder of an archive ``root`` and returns one :class:`Expected` row per file:

* :func:`write_bad_inputs` -> ``root/bad/``: files the job must report as errors (zero-byte,
  truncated, corrupt, not an image, decompression bomb), each with a lowercase substring that
  the job's error message must contain;
* :func:`write_awkward_inputs` -> ``root/awkward/``: valid images in unusual modes and formats
  (CMYK, 16-bit grey, palette, alpha, EXIF rotation, TIFF, WebP) and odd keys (spaces, unicode,
  a 200-character name, a nested folder), all of which must come out ``ok``;
* :func:`write_grey_copies` -> ``root/grey/``: greyscale JPEG copies of real photographs.

Every function checks what it wrote with :func:`colorization.imageio.decode_image` (bad files
must raise :class:`~colorization.imageio.DecodeError` with the expected text, good files must
decode to the expected size), so a Pillow upgrade that changes what decodes fails here, loudly,
instead of silently weakening the tests. Everything is deterministic (fixed seeds) and small.

Keys are paths relative to ``root``, ``/``-separated (unicode names in NFC).
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from colorization.imageio import DecodeError, decode_image

__all__ = [
    "AWKWARD_SIZE",
    "BOMB_SIZE",
    "Expected",
    "write_awkward_inputs",
    "write_bad_inputs",
    "write_grey_copies",
]

#: (width, height) the photo is resized to for :func:`write_awkward_inputs` (stored size)
AWKWARD_SIZE = (160, 120)
#: (width, height) declared by the decompression bomb: 144M pixels, over the job's 100M default
BOMB_SIZE = (12_000, 12_000)

_SEED = 20_240_601


@dataclass(frozen=True)
class Expected:
    """What the job must report for one input of the archive."""

    key: str  # path relative to the archive root, '/'-separated
    status: str  # "ok" or "error"
    why: str  # short description, e.g. "zero-byte", "CMYK"
    #: for errors: a lowercase substring the job's error message must contain
    error_contains: str = ""
    #: for ok rows: (width, height) of the colorized output, after EXIF orientation is applied
    size: tuple[int, int] | None = None


# --- bad inputs ------------------------------------------------------------------------------
def write_bad_inputs(root: Path, photo: Path | None = None) -> list[Expected]:
    """Write 8 files under ``root/bad/`` that the job must report as errors.

    The truncated and corrupt JPEGs are cut from ``photo`` when given (a real JPEG file), else
    from a synthetic, deterministic 320x240 JPEG, so the function needs no shared data.
    """
    folder = root / "bad"
    folder.mkdir(parents=True, exist_ok=True)
    if photo is not None:
        jpeg = Path(photo).read_bytes()
        with Image.open(io.BytesIO(jpeg)) as im:
            small = ImageOps.exif_transpose(im).convert("RGB").resize(AWKWARD_SIZE)
    else:
        small = _synthetic_rgb((320, 240))
        jpeg = _encode(small, "JPEG", quality=90)
        small = small.resize(AWKWARD_SIZE)
    png = _encode(small, "PNG")

    files: list[tuple[str, bytes, str, str]] = [  # (name, bytes, why, error_contains)
        ("empty.jpg", b"", "zero-byte", "empty"),
        ("truncated.jpg", jpeg[: int(len(jpeg) * 0.4)], "truncated JPEG (first 40%)", "truncated"),
        ("truncated_png.png", png[: int(len(png) * 0.4)], "truncated PNG (first 40%)", "truncated"),
        ("corrupt.jpg", _corrupt_jpeg(jpeg), "corrupt JPEG (garbage scan data)", "corrupt"),
        (
            "corrupt_tiff.tif",
            _corrupt_tiff(small),
            "corrupt TIFF (garbage deflate strip)",
            "corrupt",
        ),
        ("notes.jpg", _text("notes.jpg"), "text file named .jpg", "not an image"),
        ("readme.txt", _text("readme.txt"), "text file (.txt)", "not an image"),
        ("bomb.png", _bomb_png(*BOMB_SIZE), "decompression bomb (12000x12000 PNG)", "too large"),
    ]
    rows = []
    for name, data, why, contains in files:
        (folder / name).write_bytes(data)
        _check_error(folder / name, contains)
        rows.append(Expected(f"bad/{name}", "error", why, error_contains=contains))
    return rows


def _corrupt_jpeg(jpeg: bytes) -> bytes:
    """The JPEG with its header kept and the middle of its entropy-coded scan overwritten by
    seeded random bytes; corrupts harder until Pillow's ``load()`` fails."""
    sos = jpeg.find(b"\xff\xda")
    if sos < 0:
        raise ValueError("not a baseline JPEG: no SOS marker")
    start = sos + 2 + int.from_bytes(jpeg[sos + 2 : sos + 4], "big")  # first scan byte
    end = jpeg.rfind(b"\xff\xd9")  # EOI, kept
    end = end if end > start else len(jpeg)
    scan = end - start
    rng = np.random.default_rng(_SEED)
    for lo, hi in ((0.4, 0.6), (0.2, 0.8), (0.02, 0.98)):
        a, b = start + int(scan * lo), start + int(scan * hi)
        out = jpeg[:a] + rng.bytes(b - a) + jpeg[b:]
        if not _pil_loads(out):
            return out
    # last resort: random bytes laced with reserved markers (0xFFC8), which libjpeg rejects
    a, b = start + int(scan * 0.02), start + int(scan * 0.98)
    garbage = bytearray(rng.bytes(b - a))
    for i in range(0, len(garbage) - 1, 64):
        garbage[i : i + 2] = b"\xff\xc8"
    out = jpeg[:a] + bytes(garbage) + jpeg[b:]
    if _pil_loads(out):
        raise RuntimeError("could not corrupt the JPEG enough for Pillow to refuse it")
    return out


def _corrupt_tiff(im: Image.Image) -> bytes:
    """A deflate-compressed TIFF whose header and IFD are valid (so it opens) and whose strips
    are seeded random bytes (so decoding fails)."""
    data = bytearray(_encode(im, "TIFF", compression="tiff_deflate"))
    with Image.open(io.BytesIO(bytes(data))) as tif:
        offsets, counts = tif.tag_v2[273], tif.tag_v2[279]  # StripOffsets, StripByteCounts
    rng = np.random.default_rng(_SEED + 1)
    for off, n in zip(offsets, counts, strict=True):
        data[off : off + n] = rng.bytes(n)
    out = bytes(data)
    if _pil_loads(out):
        raise RuntimeError("the corrupt TIFF still decodes")
    return out


def _bomb_png(width: int, height: int) -> bytes:
    """A complete, valid 1-bit greyscale PNG of ``width x height`` zeros: a few KB on disk,
    ``width * height`` pixels once decoded. Built chunk by chunk, never held in memory whole."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    comp = zlib.compressobj(9)
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte 0, then the packed bits
    idat = b"".join([comp.compress(row) for _ in range(height)] + [comp.flush()])
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _text(name: str) -> bytes:
    line = f"{name}: plain text, not an image. Lorem ipsum dolor sit amet.\n"
    return (line * 20).encode()


# --- awkward but valid inputs ----------------------------------------------------------------
def write_awkward_inputs(root: Path, photo: Path) -> list[Expected]:
    """Write 15 valid images under ``root/awkward/``, made from one colour ``photo`` resized to
    :data:`AWKWARD_SIZE`; every one must come out ``ok`` at the size in its row."""
    folder = root / "awkward"
    folder.mkdir(parents=True, exist_ok=True)
    with Image.open(photo) as im:
        rgb = ImageOps.exif_transpose(im).convert("RGB").resize(AWKWARD_SIZE)
    w, h = rgb.size
    grey = rgb.convert("L")
    alpha = Image.linear_gradient("L").resize(rgb.size)  # 0 (transparent) at the top -> 255
    rgba, la = rgb.copy(), grey.copy()
    rgba.putalpha(alpha)
    la.putalpha(alpha)
    grey16 = Image.fromarray(np.asarray(grey, dtype=np.uint16) * 257)  # full 16-bit range
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display

    long_name = ("very-long-name-" * 14)[:200] + ".jpg"
    cases: list[tuple[str, bytes, str, str, tuple[int, int]]] = [
        # (name, bytes, why, mode Pillow must read back, displayed size)
        ("cmyk.jpg", _encode(rgb.convert("CMYK"), "JPEG", quality=90), "CMYK", "CMYK", (w, h)),
        ("grey16.png", _encode(grey16, "PNG"), "16-bit grey PNG (I;16)", "I;16", (w, h)),
        ("palette.png", _encode(palette, "PNG"), "palette PNG (P)", "P", (w, h)),
        (
            "palette_transparent.png",
            _encode(palette, "PNG", transparency=0),
            "palette PNG with transparency",
            "P",
            (w, h),
        ),
        ("rgba.png", _encode(rgba, "PNG"), "RGBA PNG", "RGBA", (w, h)),
        ("la.png", _encode(la, "PNG"), "LA PNG (grey + alpha)", "LA", (w, h)),
        ("grey.jpg", _encode(grey, "JPEG", quality=90), "grey JPEG (L)", "L", (w, h)),
        ("colour.jpg", _encode(rgb, "JPEG", quality=90), "already-colour RGB JPEG", "RGB", (w, h)),
        (
            "exif_rotated.jpg",
            _encode(grey, "JPEG", quality=90, exif=exif),
            f"EXIF orientation 6 (stored {w}x{h}, shown {h}x{w})",
            "L",
            (h, w),
        ),
        ("lzw.tif", _encode(rgb, "TIFF", compression="tiff_lzw"), "TIFF (LZW)", "RGB", (w, h)),
        ("lossy.webp", _encode(rgb, "WEBP", quality=80), "WebP", "RGB", (w, h)),
        ("name with spaces.jpg", _encode(grey, "JPEG"), "spaces in name", "L", (w, h)),
        ("café 北京.jpg", _encode(grey, "JPEG"), "unicode name", "L", (w, h)),
        (long_name, _encode(grey, "JPEG"), "200-character name", "L", (w, h)),
        ("a/b/c/deep.jpg", _encode(grey, "JPEG"), "nested folder", "L", (w, h)),
    ]
    rows = []
    for name, data, why, mode, size in cases:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        _check_ok(path, size, mode)
        rows.append(Expected(f"awkward/{name}", "ok", why, size=size))
    return rows


# --- greyscale copies of real photographs ----------------------------------------------------
def write_grey_copies(src_dir: Path, root: Path, n: int | None = None) -> list[Expected]:
    """Write a greyscale (mode ``L``) JPEG copy of each of the first ``n`` (sorted) ``*.jpg`` of
    ``src_dir`` under ``root/grey/``, same name; all ``n`` when ``n`` is None. The pixels are
    written upright (EXIF orientation applied, no EXIF kept), so ``size`` is the original's
    displayed size."""
    sources = sorted(Path(src_dir).glob("*.jpg"))
    if not sources:
        raise FileNotFoundError(f"no *.jpg in {src_dir}")
    folder = root / "grey"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for src in sources if n is None else sources[:n]:
        with Image.open(src) as im:
            grey = ImageOps.exif_transpose(im).convert("L")
        path = folder / src.name
        grey.save(path, "JPEG", quality=90)
        _check_ok(path, grey.size, "L")
        rows.append(Expected(f"grey/{src.name}", "ok", "grey copy of a photo", size=grey.size))
    return rows


# --- helpers ---------------------------------------------------------------------------------
def _encode(im: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def _synthetic_rgb(size: tuple[int, int]) -> Image.Image:
    """A deterministic colour image with smooth gradients and some noise (photo-like bytes)."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack([255 * x / w, 255 * y / h, 127 + 100 * np.sin((x + y) / 17)], axis=-1)
    noise = np.random.default_rng(_SEED).normal(0, 12, base.shape)
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def _pil_loads(data: bytes) -> bool:
    """Whether plain Pillow opens and fully decodes ``data``."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    except Exception:
        return False
    return True


def _check_error(path: Path, contains: str) -> None:
    try:
        decode_image(path.read_bytes())
    except DecodeError as e:
        if contains not in str(e).lower():
            raise RuntimeError(f"{path}: DecodeError {str(e)!r} lacks {contains!r}") from e
        return
    raise RuntimeError(f"{path}: expected a DecodeError containing {contains!r}, it decoded")


def _check_ok(path: Path, size: tuple[int, int], mode: str) -> None:
    with Image.open(path) as raw:
        if raw.mode != mode:
            raise RuntimeError(f"{path}: Pillow reads mode {raw.mode}, the fixture wants {mode}")
    im = decode_image(path.read_bytes())
    if im.size != size:
        raise RuntimeError(f"{path}: decodes to {im.size}, the fixture says {size}")


if __name__ == "__main__":
    import tempfile
    from collections import Counter

    from tests.shared_paths import SHARED_DATA

    val = SHARED_DATA / "coco-tiny" / "val2017"
    photo = sorted(val.glob("*.jpg"))[0]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bad = write_bad_inputs(root, photo)
        bad_synthetic = write_bad_inputs(root / "synthetic")  # no photo: synthetic JPEG
        awkward = write_awkward_inputs(root, photo)
        grey = write_grey_copies(val, root, n=10)
        for row in bad:
            try:
                decode_image((root / row.key).read_bytes())
            except DecodeError as e:
                print(f"{row.key:24} error  {e}")
        for row in awkward + grey[:3]:
            print(f"{row.key[:60]:60} ok  {row.size}  {row.why}")
        for name, rows in [
            ("bad", bad),
            ("bad (synthetic)", bad_synthetic),
            ("awkward", awkward),
            ("grey", grey),
        ]:
            print(f"{name}: {len(rows)} rows {dict(Counter(r.status for r in rows))}")
