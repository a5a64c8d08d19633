"""Where the flicker of a written video comes from: the ab warping error of frame-by-frame and
stabilized colorization before encoding and after each step of writing it.

    python benchmarks/video_encoding_floor.py [--clips realshort,bikes] [--frames 150]

For each colour clip of ``../shared/data/video`` (its first ``--frames`` frames), the shipped
model predicts every frame once (:meth:`colorization.video.FrameColorizer.predict`) and the
frame-by-frame and stabilized outputs are finished from it; then each output goes through:

- ``uint8 RGB``: the frames as the encoder gets them (what the stabilizer controls);
- ``Y'CbCr 4:4:4, 8-bit``: converted to 8-bit Y'CbCr (limited range, as the written files)
  and back, no codec: the rounding alone;
- ``Y'CbCr 4:2:0, 8-bit``: the same with the chroma at half resolution, no codec;
- ``x264 crf 18, 8-bit 4:2:0``: what ``colorize video`` writes by default, decoded back;
- ``x264 crf 18, 10-bit 4:2:0``: the same as ``--pix-fmt yuv420p10le`` writes it.

The warping error (:class:`colorization.metrics.FlickerMeter`, ab, the pairs across a shot
cut apart, as ``bench_video.py``) of each, and stabilized / frame by frame. Prints a JSON line
per clip and a markdown table.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import av
import numpy as np
import torch
from bench_video import VIDEOS, colour_clips, frames
from tune_stabilizer import h264

from colorization.metrics import FlickerMeter
from colorization.shipped import load
from colorization.video import FrameColorizer, StabilizerParams
from colorization.videofiles import CRF


def ycbcr(frames: list[np.ndarray], pix_fmt: str) -> list[np.ndarray]:
    """uint8 RGB frames -> ``pix_fmt`` -> uint8 RGB, no codec (swscale's defaults, as the
    encoder's input and the decoder's output)."""
    out = []
    for f in frames:
        yuv = av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format=pix_fmt)
        out.append(yuv.to_ndarray(format="rgb24"))
    return out


STAGES: dict[str, Callable[[list[np.ndarray]], list[np.ndarray]]] = {
    "uint8 RGB": lambda fr: fr,
    "Y'CbCr 4:4:4, 8-bit": lambda fr: ycbcr(fr, "yuv444p"),
    "Y'CbCr 4:2:0, 8-bit": lambda fr: ycbcr(fr, "yuv420p"),
    f"x264 crf {CRF}, 8-bit 4:2:0": lambda fr: h264(fr, CRF),
    f"x264 crf {CRF}, 10-bit 4:2:0": lambda fr: h264(fr, CRF, "yuv420p10le"),
}


def bench_clip(name: str, limit: int, model, table) -> dict:
    rgbs = list(frames(VIDEOS / f"{name}.mp4", limit))
    base = FrameColorizer(model, table, None, None, None, False, StabilizerParams())
    predicted = [p for i in range(0, len(rgbs), 8) for p in base.predict(rgbs[i : i + 8])]
    outputs = {}
    for key, stab in (("fbf", False), ("stab", True)):
        run = FrameColorizer(model, table, None, None, None, stab, StabilizerParams())
        outputs[key] = [run.finish(L, chroma) for L, chroma in predicted]
    # each frame's grey and whether it starts a shot (the pairs across a cut measured apart)
    greys = [grey for grey, _, _ in outputs["fbf"]]
    cuts = [cut for _, _, cut in outputs["fbf"]]
    rgb_out = {k: [rgb for _, rgb, _ in v] for k, v in outputs.items()}
    row = {"clip": name, "frames": len(rgbs), "stages": {}}
    for stage, through in STAGES.items():
        meter = FlickerMeter(2, spaces=("ab",))
        fbf, stab = through(rgb_out["fbf"]), through(rgb_out["stab"])
        for grey, a, b, cut in zip(greys, fbf, stab, cuts, strict=True):
            meter.add(grey, a, b, cut=cut)
        e_fbf, e_stab = meter.of("ab")
        row["stages"][stage] = {"fbf": e_fbf, "stab": e_stab, "ratio": e_stab / e_fbf}
    return row


def table_md(rows: list[dict]) -> str:
    stages = list(STAGES)
    lines = [
        "| clip | frames | " + " | ".join(stages) + " |",
        "|---|---:|" + "---|" * len(stages),
    ]
    for r in rows:
        cells = [
            f"{s['fbf']:.2f} / {s['stab']:.2f} = **{s['ratio']:.3f}**"
            for s in (r["stages"][k] for k in stages)
        ]
        lines.append(f"| {r['clip']} | {r['frames']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", default="", help="comma-separated clip names (default: all colour)")
    ap.add_argument("--frames", type=int, default=150, help="the first N frames of each clip")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model, table, _ = load()
    rows = []
    for name in colour_clips(a.clips):
        rows.append(bench_clip(name, a.frames, model, table))
        print(json.dumps(rows[-1]), flush=True)
    print("ab warping error, frame by frame / stabilized = ratio, after each step of writing:")
    print(table_md(rows))


if __name__ == "__main__":
    main()
