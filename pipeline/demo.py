"""The README's first command: the main job on its embedded default (local Ray, local files).

Inputs are the colour photographs bundled with scikit-image (no download), copied into
``OUT/samples`` so that the run is self-describing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

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


def run_demo(out: Path) -> str:
    """Build colour-class tables from the sample photos and show them."""
    from pipeline.tables_stage import TablesConfig, build_tables, show_table

    samples = sample_photos(out / "samples")
    report = build_tables(TablesConfig(sources=[str(samples)], out=str(out / "tables")))
    text = show_table(out / "tables")
    return f"{text}\nimages/s     {report['images_per_s']}"
