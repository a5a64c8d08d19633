"""The shot-cut settings (:attr:`colorization.video.StabilizerParams.cut` and
:attr:`~colorization.video.StabilizerParams.cut_match`) chosen on validation clips that the
video benchmark (``bench_video.py``) does not measure.

    python benchmarks/tune_shot_cuts.py [--photos 100] [--frames 12]

The clips are the camera moves of ``tune_stabilizer.py`` over the validation photos
(``bsds500/val``): each photo panned slowly (40-80 px in all) and fast (200-400 px: a whip
pan, up to about 40 px a frame at 320 px), with a zoom and sensor noise, and once more slowly
with an old film's exposure flicker (each frame's brightness times 1 +- up to 0.25, at
random). Within-shot pairs are the consecutive frames of a clip; cuts join the last frame of
one clip to the first of another photo's (a random order), so two shots of similar tones meet
as often as the photos allow. For each setting (histogram change, and the flow's match; 1.0:
no flow test), the share of cuts missed and of within-shot pairs taken for cuts by
:class:`~colorization.video.ShotCuts` on the grey frames at the working size. The rule: the
fewest cuts missed among the settings that take at most 0.5% of the within-shot pairs for cuts
(ties: the fewest taken). Prints a markdown table and the chosen setting.
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image
from tune_stabilizer import DATA, pan

from colorization.color import lightness_u8
from colorization.video import ShotCuts, working_frame

CHANGES = (0.5, 0.3, 0.25, 0.2, 0.15, 0.1)
MATCHES = (1.0, 0.5, 0.25, 0.1)
MAX_FALSE = 0.005


def pair(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(histogram change, flow match) from RGB frame ``a`` to ``b``, as ShotCuts sees them."""
    cuts = ShotCuts()
    (La, ga), (Lb, gb) = (working_frame(lightness_u8(f)) for f in (a, b))
    cuts(ga, La)
    return cuts.change(cuts.histogram(gb), cuts.histogram(ga)), cuts.match(gb, Lb)


def flickering(frames: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """An old film's exposure flicker: each frame's brightness scaled by 1 +- up to 0.25."""
    gains = rng.uniform(0.75, 1.25, len(frames))
    return [np.clip(f * k, 0, 255).astype(np.uint8) for f, k in zip(frames, gains, strict=True)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=int, default=100)
    ap.add_argument("--frames", type=int, default=12)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    clips, photo_of = [], []
    for k, p in enumerate(sorted((DATA / "bsds500" / "val").glob("*.jpg"))[: a.photos]):
        rgb = np.asarray(Image.open(p).convert("RGB"))
        clips += [pan(rgb, a.frames, rng, (40, 80)), pan(rgb, a.frames, rng, (200, 400))]
        clips.append(flickering(pan(rgb, a.frames, rng, (40, 80)), rng))
        photo_of += [k, k, k]
    within = np.array([pair(x, y) for c in clips for x, y in zip(c[:-1], c[1:], strict=True)])
    order = rng.permutation(len(clips))
    cuts = np.array(
        [
            pair(clips[i][-1], clips[j][0])
            for i, j in zip(order, np.roll(order, -1), strict=True)
            if photo_of[i] != photo_of[j]
        ]
    )
    print(f"{len(within)} within-shot pairs, {len(cuts)} cuts, {len(clips)} clips")
    print("| histogram change | flow match | cuts missed | within-shot pairs taken for cuts |")
    print("|---:|---:|---:|---:|")
    best = None
    for c in CHANGES:
        for m in MATCHES:
            missed = float(np.mean(~((cuts[:, 0] >= c) & (cuts[:, 1] < m))))
            false = float(np.mean((within[:, 0] >= c) & (within[:, 1] < m)))
            print(f"| {c} | {'none' if m >= 1 else m} | {missed:.1%} | {false:.2%} |")
            if false <= MAX_FALSE and (best is None or (missed, false) < best[:2]):
                best = (missed, false, c, m)
    print(f"chosen: cut {best[2]}, cut_match {best[3]} ({best[0]:.1%} missed)")


if __name__ == "__main__":
    main()
