"""Video colorization on the colour clips of ``../shared/data/video``: flicker, quality, speed.

    python benchmarks/bench_video.py [--clips bear,bikes] [--max-frames N] [--threads 2]
        [--out /tmp/bench-video] [--strips docs/images] [--pix-fmt yuv420p10le]

For each colour clip (every ``*.mp4`` there but the old film, unless ``--clips`` names them):
1. ``colorize_video`` frame by frame (``--no-stabilize``) and stabilized, each timed, both with
   ``measure=False`` (the whole path: decode, L, model, stabilization, recombination, H.264
   encode, audio copy); the model sees each frame's L, so the colour clip is made grey first;
2. the written outputs decoded and compared with the colour originals, frame by frame:
   - flicker: Lai et al.'s warping error (:class:`colorization.metrics.FlickerMeter`, the flow
     of the grey frames) of the originals (the floor of real colour), of the grey video (the
     L alone, which every output shares: the part no colorization can remove), of the
     frame-by-frame and of the stabilized output;
   - PSNR, SSIM and colourfulness as ``colorize eval`` measures photos
     (:func:`colorization.evaluation.score` on each frame and its original resized to 256x256,
     bicubic), and the grey video's PSNR / SSIM as the baseline;
3. frames/s of both paths and the stabilization's share of the time.

With ``--strips DIR``, also writes before/after strips (PNG) there: the old film colorized
(``video-old-film.png``) and the first clip's original / grey / frame-by-frame / stabilized
(``video-<clip>.png``). Prints a JSON line per clip and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import av
import numpy as np
import torch
from _host import host_load
from PIL import Image, ImageDraw

from colorization import color
from colorization.evaluation import EVAL_SIZE, grey_version, score
from colorization.flow import grey_u8
from colorization.metrics import FlickerMeter
from colorization.shipped import load
from colorization.video import ShotCuts, colorize_video, working_frame
from colorization.videofiles import PIX_FMT

REPO = Path(__file__).resolve().parents[1]
VIDEOS = REPO.parent / "shared" / "data" / "video"
OLD_FILM = "old-film-abomb"


def frames(path: Path, limit: int | None = None):
    """uint8 RGB frames of a video file, at most ``limit``."""
    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if limit is not None and i >= limit:
                return
            yield f.to_ndarray(format="rgb24")


def colour_clips(names: str = "") -> list[str]:
    """The clips named (comma-separated), or every colour clip: each ``*.mp4`` of
    ``VIDEOS`` but the old film."""
    return [c for c in names.split(",") if c] or sorted(
        p.stem for p in VIDEOS.glob("*.mp4") if p.stem != OLD_FILM
    )


def small(rgb: np.ndarray) -> np.ndarray:
    """A frame as the evaluation sees a photo: 256x256, bicubic."""
    return np.asarray(Image.fromarray(rgb).resize((EVAL_SIZE, EVAL_SIZE), Image.BICUBIC))


def compare(src: Path, fbf: Path, stab: Path, limit: int | None) -> dict:
    """Flicker of the original, grey, frame-by-frame and stabilized videos; quality of the
    outputs (and of the grey video) against the originals."""
    meter = FlickerMeter(4, spaces=("rgb", "ab"))
    cuts = ShotCuts()  # the pairs across a cut are measured apart, the same ones in all four
    scores: dict[str, list[dict]] = {"grey": [], "fbf": [], "stab": []}
    for orig, a, b in zip(frames(src, limit), frames(fbf), frames(stab), strict=True):
        grey = grey_version(orig)
        L = color.lightness_u8(orig)
        L_work, grey_work = working_frame(L)
        meter.add(grey_u8(L), orig, grey, a, b, cut=cuts(grey_work, L_work))
        truth = small(orig)
        for key, out in (("grey", grey), ("fbf", a), ("stab", b)):
            scores[key].append(score(truth, small(out)))
    keys = ("original", "grey", "fbf", "stab")
    flick = dict(zip(keys, meter.of("rgb"), strict=True))
    flick_ab = dict(zip(keys, meter.of("ab"), strict=True))
    across = {s: dict(zip(keys, meter.of(s, cuts=True), strict=True)) for s in ("rgb", "ab")}
    mean = {k: {m: float(np.mean([s[m] for s in v])) for m in v[0]} for k, v in scores.items()}
    return {
        "flicker": flick,
        "flicker_ab": flick_ab,
        "quality": mean,
        "pairs": meter.pairs,
        "cut_pairs": meter.cut_pairs,
        "across_cuts": across,
    }


def bench_clip(
    src: Path, out: Path, model, table, max_frames: int | None, pix_fmt: str = PIX_FMT
) -> dict:
    runs = {}
    for key, stab in (("fbf", False), ("stab", True)):
        dest = out / f"{src.stem}-{key}.mp4"
        r = colorize_video(
            src, dest, model, table, stabilize=stab, measure=False, max_frames=max_frames,
            pix_fmt=pix_fmt,
        )  # fmt: skip
        runs[key] = r
    fps = {k: r.frames / r.seconds for k, r in runs.items()}
    result = {
        "clip": src.stem,
        "size": f"{runs['fbf'].width}x{runs['fbf'].height}",
        "frames": runs["fbf"].frames,
        "shots": runs["stab"].shots,
        "fps_fbf": round(fps["fbf"], 2),
        "fps_stab": round(fps["stab"], 2),
        "stab_cost": round(1 - fps["stab"] / fps["fbf"], 3),
    }
    result |= compare(src, Path(runs["fbf"].output), Path(runs["stab"].output), max_frames)
    return result


def strip(rows: list[list[np.ndarray]], labels: list[str], width: int = 320) -> Image.Image:
    """Frames in a grid, one row per version (``labels``), each frame ``width`` px wide."""
    h0, w0 = rows[0][0].shape[:2]
    w, h = width, round(h0 * width / w0)
    pad, label_w = 4, 110
    sheet = Image.new("RGB", (label_w + len(rows[0]) * (w + pad), len(rows) * (h + pad)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (row, label) in enumerate(zip(rows, labels, strict=True)):
        y = r * (h + pad)
        draw.text((6, y + h // 2 - 6), label, fill="black")
        for c, rgb in enumerate(row):
            sheet.paste(
                Image.fromarray(rgb).resize((w, h), Image.BICUBIC), (label_w + c * (w + pad), y)
            )
    return sheet


def pick(path: Path, at: list[int]) -> list[np.ndarray]:
    got = {i: f for i, f in enumerate(frames(path, max(at) + 1)) if i in at}
    return [got[i] for i in at]


def write_strips(clip: Path, out: Path, model, table, dest: Path) -> list[Path]:
    """The old film colorized (stabilized) and one colour clip's four versions."""
    dest.mkdir(parents=True, exist_ok=True)
    film = VIDEOS / f"{OLD_FILM}.mp4"
    colorized = colorize_video(film, out / f"{OLD_FILM}.mp4", model, table, measure=False)
    print(json.dumps(colorized.as_dict()), file=sys.stderr)
    at = [30, 120, 210, 300]
    rows = [pick(film, at), pick(Path(colorized.output), at)]
    written = [dest / "video-old-film.png"]
    strip(rows, ["1950s film", "colorized"], 240).save(written[0], optimize=True)
    n = sum(1 for _ in frames(clip))
    at = [0, n // 3, 2 * n // 3, n - 1]
    orig = pick(clip, at)
    rows = [orig, [grey_version(f) for f in orig]]
    rows += [pick(out / f"{clip.stem}-{k}.mp4", at) for k in ("fbf", "stab")]
    labels = ["original", "grey input", "frame by frame", "stabilized"]
    written.append(dest / f"video-{clip.stem}.png")
    strip(rows, labels, 240).save(written[1], optimize=True)
    return written


def all_pairs(r: dict, space: str, key: str) -> float:
    """The warping error over every frame pair, those across a cut included."""
    within = r["flicker" if space == "rgb" else "flicker_ab"][key] * r["pairs"]
    across = r["across_cuts"][space][key] * r["cut_pairs"] if r["cut_pairs"] else 0.0
    return (within + across) / (r["pairs"] + r["cut_pairs"])


def table_md(results: list[dict]) -> str:
    lines = [
        "| clip | frames | shots | warping error x1000: original / grey / frame by frame / "
        "stabilized | stab / fbf | ab warping error: original / frame by frame / stabilized | "
        "stab / fbf (ab) | the same over all pairs, cuts included | PSNR grey / fbf / stab | "
        "SSIM fbf / stab | colourfulness fbf / stab | frames/s fbf / stab | stab cost |",
        "|---|---:|---:|---|---:|---|---:|---:|---|---|---|---|---:|",
    ]
    for r in results:
        f, q, ab = r["flicker"], r["quality"], r["flicker_ab"]
        ab_all = all_pairs(r, "ab", "stab") / all_pairs(r, "ab", "fbf")
        lines.append(
            f"| {r['clip']} ({r['size']}) | {r['frames']} | {r['shots']} | "
            f"{f['original'] * 1e3:.3f} / {f['grey'] * 1e3:.3f} / {f['fbf'] * 1e3:.3f} / "
            f"{f['stab'] * 1e3:.3f} | {f['stab'] / f['fbf']:.2f} | "
            f"{ab['original']:.2f} / {ab['fbf']:.2f} / {ab['stab']:.2f} | "
            f"{ab['stab'] / ab['fbf']:.2f} | {ab_all:.2f} | "
            f"{q['grey']['psnr']:.2f} / {q['fbf']['psnr']:.2f} / {q['stab']['psnr']:.2f} | "
            f"{q['fbf']['ssim']:.4f} / {q['stab']['ssim']:.4f} | "
            f"{q['fbf']['colorfulness']:.1f} / {q['stab']['colorfulness']:.1f} | "
            f"{r['fps_fbf']:.2f} / {r['fps_stab']:.2f} | {r['stab_cost']:.0%} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", default="", help="comma-separated clip names (default: all colour)")
    ap.add_argument("--max-frames", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="seg-lite0")
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench-video"))
    ap.add_argument("--strips", type=Path, default=None, help="write before/after PNGs here")
    ap.add_argument("--pix-fmt", default=PIX_FMT, help="of the outputs, e.g. yuv420p10le")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    names = colour_clips(a.clips)
    model, table, _ = load(a.model)
    a.out.mkdir(parents=True, exist_ok=True)
    results = []
    for name in names:
        before = host_load()
        start = time.perf_counter()
        r = bench_clip(VIDEOS / f"{name}.mp4", a.out, model, table, a.max_frames, a.pix_fmt)
        r |= {"seconds": round(time.perf_counter() - start, 1), "host_before": before}
        r["host_after"] = host_load()
        print(json.dumps(r), flush=True)
        results.append(r)
    print(table_md(results))
    if a.strips is not None:
        for p in write_strips(VIDEOS / f"{names[0]}.mp4", a.out, model, table, a.strips):
            print(p)


if __name__ == "__main__":
    main()
