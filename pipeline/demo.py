"""The README's first command: the shipped model on sample photos, and the tables stage on
local Ray, all on local files.

Inputs are the colour photographs bundled with scikit-image (no download), copied into
``OUT/samples``; their grey versions are colorized into ``OUT/after`` with ``OUT/before`` and
``OUT/before_after`` (grey | colorized | original) beside them, and all the strips on one
contact sheet, ``OUT/sheet.jpg``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from PIL import Image

from colorization.shipped import DEFAULT_MODEL

#: colour photographs shipped inside scikit-image's wheel
SAMPLE_PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "hubble_deep_field.jpg",
    "retina.jpg",
    "ihc.png",
)


def sample_photos(dest: Path) -> Path:
    """Copy the bundled sample photos into ``dest`` and return it."""
    import skimage.data

    src = Path(skimage.data.__file__).parent
    dest.mkdir(parents=True, exist_ok=True)
    for name in SAMPLE_PHOTOS:
        if (src / name).exists():
            shutil.copyfile(src / name, dest / name)
    return dest


def before_after(grey: Image.Image, colorized: Image.Image, original: Image.Image) -> Image.Image:
    """Grey input | colorized | original, side by side on one strip."""
    w, h = original.size
    strip = Image.new("RGB", (3 * w, h), "white")
    for i, im in enumerate(
        (grey.convert("RGB"), colorized.convert("RGB"), original.convert("RGB"))
    ):
        strip.paste(im, (i * w, 0))
    return strip


#: height of one grey | colorized | original row of the contact sheet
SHEET_ROW_HEIGHT = 200


def contact_sheet(strips: list[Image.Image], row_height: int = SHEET_ROW_HEIGHT) -> Image.Image:
    """Before/after strips scaled to one height, stacked top to bottom, left-aligned."""
    rows = [s.resize((round(s.width * row_height / s.height), row_height)) for s in strips]
    sheet = Image.new("RGB", (max(r.width for r in rows), row_height * len(rows)), "white")
    for i, r in enumerate(rows):
        sheet.paste(r, (0, i * row_height))
    return sheet


def run_demo(out: Path, model: str = DEFAULT_MODEL) -> str:
    """Colorize grey versions of the sample photos with the shipped model (before/after
    images), then build colour-class tables from the originals on local Ray."""
    from colorization.imageio import decode_image
    from colorization.inference import colorize_images
    from colorization.shipped import load
    from pipeline.tables_stage import TablesConfig, build_tables, show_table

    samples = sample_photos(out / "samples")
    net, table, path = load(model)
    lines = [f"model: {path}"]
    for d in ("before", "after", "before_after"):
        (out / d).mkdir(parents=True, exist_ok=True)
    strips = []
    for p in sorted(samples.iterdir()):
        original = decode_image(p.read_bytes()).convert("RGB")
        grey = original.convert("L")
        (colorized,) = colorize_images(net, table, [grey])
        grey.save(out / "before" / f"{p.stem}.png")
        colorized.save(out / "after" / f"{p.stem}.png")
        strips.append(before_after(grey, colorized, original))
        strips[-1].save(out / "before_after" / f"{p.stem}.jpg")
        lines.append(f"{p.name}: {out / 'before_after' / (p.stem + '.jpg')}")
    contact_sheet(strips).save(out / "sheet.jpg", quality=90)
    lines.append(f"contact sheet: {out / 'sheet.jpg'}")
    report = build_tables(TablesConfig(sources=[str(samples)], out=str(out / "tables")))
    lines += [show_table(out / "tables"), f"images/s     {report['images_per_s']}"]
    return "\n".join(lines)
