"""The stabilizer's settings (:class:`colorization.video.StabilizerParams`) chosen on clips that
the video benchmark (``bench_video.py``) does not measure.

    python benchmarks/tune_stabilizer.py [--photos 12] [--frames 40] [--carry 0.85,0.9,0.95]
        [--fb-sigma 1,2] [--l-sigma 8,16] [--threads 2]

The validation clips:
- camera moves over the validation split's photos (``bsds500/val``, never trained on; the
  colour clips of ``../shared/data/video`` are the test clips and are not used here): a
  320x240 window pans and zooms smoothly over each photo (sub-pixel, bilinear) with light
  sensor noise, once slowly (40-80 px in all) and once fast (200-400 px: up to 20 px a
  frame), so the colour truth of every frame is known: the ab warping error, PSNR and
  colourfulness;
- the old black-and-white film (``old-film-abomb``, grainy, with cuts and exposure flicker):
  the warping error alone, since it has no colour truth.

The model predicts each frame once (:meth:`FrameColorizer.predict`); every setting reruns only
the stabilizer (:meth:`FrameColorizer.finish`), and one :class:`FlickerMeter` per clip shares
its flow over all of them. The rule: the lowest mean ab ratio (stabilized / frame by frame,
over every clip) among the settings whose PSNR on the pans is at least frame by frame's less
0.05 dB and whose colourfulness is within 5% of it. Prints a JSON line per setting and a
markdown table; the chosen setting last.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import time
from pathlib import Path

import av
import cv2
import numpy as np
import torch
from PIL import Image

from colorization.flow import grey_u8
from colorization.metrics import FlickerMeter, colorfulness, psnr
from colorization.shipped import load
from colorization.video import FrameColorizer, StabilizerParams
from colorization.videofiles import PIX_FMT

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
FILM = DATA / "video" / "old-film-abomb.mp4"
PAN_SIZE = (240, 320)  # (h, w) of the camera window


def pan(
    photo: np.ndarray, frames: int, rng: np.random.Generator, travel: tuple[float, float]
) -> list[np.ndarray]:
    """A camera move over ``photo``: the window travels ``travel`` (a range, px) in a random
    direction and zooms in or out by up to 12%, eased (fastest mid-way, at pi / 2 times the
    mean speed); each frame gets Gaussian noise (sigma 2 of 255)."""
    h, w = PAN_SIZE
    angle, travel = rng.uniform(0, 2 * np.pi), rng.uniform(*travel)
    k = 1.2 * max((h + travel) / photo.shape[0], (w + travel) / photo.shape[1])
    img = cv2.resize(photo, None, fx=k, fy=k, interpolation=cv2.INTER_AREA).astype(np.float32)
    H, W = img.shape[:2]
    zoom = rng.uniform(-0.12, 0.12)
    c0 = np.array([W / 2, H / 2]) - 0.5 * travel * np.array([np.cos(angle), np.sin(angle)])
    out = []
    for t in range(frames):
        s = 0.5 - 0.5 * np.cos(np.pi * t / max(frames - 1, 1))  # eased 0..1
        cx, cy = c0 + s * travel * np.array([np.cos(angle), np.sin(angle)])
        scale = 1.0 + zoom * s  # source px per output px
        m = np.float32([[scale, 0, cx - scale * w / 2], [0, scale, cy - scale * h / 2]])
        f = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
        f += rng.normal(0, 2.0, f.shape).astype(np.float32)
        out.append(np.clip(f + 0.5, 0, 255).astype(np.uint8))
    return out


def film(limit: int | None = None) -> list[np.ndarray]:
    with av.open(str(FILM)) as c:
        got = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    return got[:limit]


def h264(frames: list[np.ndarray], crf: int, pix_fmt: str = PIX_FMT) -> list[np.ndarray]:
    """``frames`` through x264 at ``crf`` (``pix_fmt``, 30 fps, in memory) and decoded back:
    what a written output holds."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        v = out.add_stream("libx264", rate=30, options={"crf": str(crf)})
        v.height, v.width = frames[0].shape[:2]
        v.pix_fmt = pix_fmt
        for f in frames:
            out.mux(v.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(v.encode(None))
    buf.seek(0)
    with av.open(buf) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def run_clip(name, rgbs, truth, model, table, settings, crf=None) -> list[dict]:
    """Every setting (None: frame by frame) on one clip: ab and RGB warping error, and PSNR
    and colourfulness where ``truth``; with ``crf``, of the outputs after x264 (:func:`h264`)."""
    base = FrameColorizer(model, table, None, None, 256, False, StabilizerParams())
    predicted = [p for i in range(0, len(rgbs), 8) for p in base.predict(rgbs[i : i + 8])]
    runs = [
        FrameColorizer(model, table, None, None, 256, s is not None, s or StabilizerParams())
        for s in settings
    ]
    finished = [[r.finish(L, chroma) for r in runs] for L, chroma in predicted]
    outputs = [[f[1] for f in row] for row in finished]
    cuts = [row[0][2] for row in finished]  # the pairs across a cut are measured apart
    if crf is not None:
        outputs = list(zip(*(h264(list(v), crf) for v in zip(*outputs, strict=True)), strict=True))
    meter = FlickerMeter(len(runs), spaces=("rgb", "ab"))
    quality = [[] for _ in runs]
    for i, ((L, _), outs) in enumerate(zip(predicted, outputs, strict=True)):
        meter.add(grey_u8(L), *outs, cut=cuts[i])
        if truth:
            for q, out in zip(quality, outs, strict=True):
                q.append((psnr(truth[i], out), colorfulness(out)))
    rows = []
    for s, q, rgb_e, ab_e in zip(settings, quality, meter.of("rgb"), meter.of("ab"), strict=True):
        row = {"clip": name, "setting": None if s is None else label(s)}
        row |= {"flicker": rgb_e, "flicker_ab": ab_e}
        if q:
            row |= {
                "psnr": float(np.mean([a for a, _ in q])),
                "cf": float(np.mean([b for _, b in q])),
            }
        rows.append(row)
    return rows


def label(s: StabilizerParams) -> str:
    return (
        f"carry {s.carry:g}, fb_sigma {s.fb_sigma:g}, l_sigma {s.l_sigma:g}, "
        f"{s.work_side} px, {s.preset}"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=int, default=12)
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--film-frames", type=int, default=None)
    ap.add_argument("--carry", default="0.85,0.9,0.95")
    ap.add_argument("--fb-sigma", default="1,2")
    ap.add_argument("--l-sigma", default="8,16")
    ap.add_argument("--work-side", default="320")
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="seg-lite0")
    ap.add_argument("--crf", type=int, default=None, help="measure after x264 at this crf")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model, table, _ = load(a.model)
    grid = itertools.product(
        *(map(float, v.split(",")) for v in (a.carry, a.fb_sigma, a.l_sigma)),
        map(int, a.work_side.split(",")),
        a.preset.split(","),
    )
    settings = [None] + [
        StabilizerParams(carry=c, fb_sigma=f, l_sigma=s, work_side=w, preset=p)
        for c, f, s, w, p in grid
    ]
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    photos = sorted((DATA / "bsds500" / "val").glob("*.jpg"))[: a.photos]
    rows = []
    for p in photos:
        photo = np.asarray(Image.open(p).convert("RGB"))
        for speed, travel in (("slow", (40, 80)), ("fast", (200, 400))):
            clip = pan(photo, a.frames, rng, travel)
            rows += run_clip(f"pan:{speed}:{p.stem}", clip, clip, model, table, settings, a.crf)
    rows += run_clip("old-film", film(a.film_frames), None, model, table, settings, a.crf)
    for r in rows:
        print(json.dumps(r))
    summary = [summarize(rows, i, s, len(settings)) for i, s in enumerate(settings)]
    print(
        "| setting | ab ratio: slow pans / fast pans / film / mean | RGB ratio (mean) | "
        "PSNR change (pans) | colourfulness change (pans) |"
    )
    print("|---|---|---:|---:|---:|")
    for r in summary:
        print(
            f"| {r['setting']} | {r['ab_slow']:.2f} / {r['ab_fast']:.2f} / {r['ab_film']:.2f} / "
            f"{r['ab_ratio']:.2f} | {r['rgb_ratio']:.2f} | {r['dpsnr']:+.3f} dB | "
            f"{r['dcf']:+.1%} |"
        )
    ok = [r for r in summary[1:] if r["dpsnr"] >= -0.05 and abs(r["dcf"]) <= 0.05]
    best = min(ok, key=lambda r: r["ab_ratio"])
    print(f"chosen: {best['setting']} ({time.perf_counter() - start:.0f} s in all)")


def summarize(rows: list[dict], i: int, setting, n: int) -> dict:
    """Setting ``i`` of ``n`` against frame by frame (setting 0) over every clip."""
    pairs = list(zip(rows[i::n], rows[0::n], strict=True))

    def mean_ratio(key: str, kind: str = "") -> float:
        return float(np.mean([m[key] / f[key] for m, f in pairs if m["clip"].startswith(kind)]))

    pans = [(m, f) for m, f in pairs if "psnr" in m]
    return {
        "setting": "frame by frame" if setting is None else label(setting),
        "ab_slow": mean_ratio("flicker_ab", "pan:slow"),
        "ab_fast": mean_ratio("flicker_ab", "pan:fast"),
        "ab_film": mean_ratio("flicker_ab", "old-film"),
        "ab_ratio": mean_ratio("flicker_ab"),
        "rgb_ratio": mean_ratio("flicker"),
        "dpsnr": float(np.mean([m["psnr"] - f["psnr"] for m, f in pans])),
        "dcf": float(np.mean([m["cf"] / f["cf"] - 1 for m, f in pans])),
    }


if __name__ == "__main__":
    main()
