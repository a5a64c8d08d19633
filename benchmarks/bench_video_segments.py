"""A film in segments (as the archive job's model actors share it) against one pass: seams.

    python benchmarks/bench_video_segments.py [--clips dog,bikes] [--length 60] [--crf 18]

For each clip of ``../shared/data/video``: the stabilized one-pass output
(:func:`colorization.video.colorize_video`), then the same film cut into segments of
``--length`` frames (:func:`~colorization.video.split_segments`), each colorized on its own
(:func:`~colorization.video.colorize_segment`, as a ``VideoWorker`` does) and joined
(:func:`~colorization.video.join_segments`), once with the warm-up of
:data:`~colorization.video.SEGMENT_WARMUP` frames and once without. Measured on the decoded
outputs:

- the colour jump of each frame: the mean ab change (Lab units) from the frame before, at the
  seams (each segment's first frame) against the median of all frames; a seam where the
  stabilizer starts afresh shows a frame-by-frame jump there;
- the same jump at the one pass's own keyframes (x264 starts each one afresh, as it starts each
  segment: a segment's first frame is a keyframe), where the one pass has any after frame 0;
- the difference to the one-pass output (mean absolute RGB, levels of 255), at the seams and
  over all frames (what is left elsewhere is the encoder's: each segment is its own x264 run);
- the time: the segments' total work (warm-up frames included) and the join, against the one
  pass.

``--crf 0`` encodes everything losslessly: what is left at the seams is then the colorizer's.

Prints a JSON line per clip and variant, then a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch
from _host import host_load

from colorization import color
from colorization.shipped import load
from colorization.video import (
    SEGMENT_WARMUP,
    colorize_segment,
    colorize_video,
    join_segments,
    probe_video,
    split_segments,
)
from colorization.videofiles import CRF

REPO = Path(__file__).resolve().parents[1]
VIDEOS = REPO.parent / "shared" / "data" / "video"


def decode(path: Path) -> tuple[np.ndarray, list[int]]:
    """float32 ``(T, H, W, 3)`` RGB in [0, 255], and the indices of the keyframes after 0."""
    rgb, keys = [], []
    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            rgb.append(f.to_ndarray(format="rgb24"))
            if f.key_frame and i > 0:
                keys.append(i)
    return np.stack(rgb).astype(np.float32), keys


def jumps(rgb: np.ndarray) -> np.ndarray:
    """Mean ab change of each frame from the one before (frame 0: 0)."""
    ab = np.stack([color.rgb_to_lab(f / 255.0)[..., 1:] for f in rgb])
    out = np.zeros(len(rgb))
    out[1:] = np.linalg.norm(np.diff(ab, axis=0), axis=-1).mean(axis=(1, 2))
    return out


def segmented(src: Path, out: Path, model, table, length: int, warmup: int, crf: int) -> dict:
    info = probe_video(src)
    segs = split_segments(info.frames, length, warmup)
    t0 = time.perf_counter()
    paths = []
    for s in segs:
        p = out / f"seg-{warmup}-{s.index:03d}.mp4"
        colorize_segment(src, p, info, s, model, table, measure=False, crf=crf)
        paths.append(p)
    t_seg = time.perf_counter() - t0
    dest = out / f"joined-{warmup}.mp4"
    t1 = time.perf_counter()
    join_segments(src, paths, dest, info, segs)
    return {
        "path": dest,
        "seams": [s.start for s in segs[1:]],
        "segments": len(segs),
        "seconds_segments": t_seg,
        "seconds_join": time.perf_counter() - t1,
    }


def bench_clip(src: Path, model, table, length: int, crf: int) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="bench-segments-") as tmp:
        out = Path(tmp)
        t0 = time.perf_counter()
        whole = colorize_video(src, out / "one-pass.mp4", model, table, measure=False, crf=crf)
        t_whole = time.perf_counter() - t0
        ref, keys = decode(Path(whole.output))
        ref_jumps = jumps(ref)
        rows = []
        for warmup in (SEGMENT_WARMUP, 0):
            r = segmented(src, out, model, table, length, warmup, crf)
            rgb, _ = decode(r["path"])
            assert len(rgb) == len(ref), (len(rgb), len(ref))
            j = jumps(rgb)
            diff = np.abs(rgb - ref).mean(axis=(1, 2, 3))
            seams = r["seams"]
            rows.append(
                {
                    "clip": src.stem,
                    "crf": crf,
                    "frames": len(ref),
                    "length": length,
                    "warmup": warmup,
                    "segments": r["segments"],
                    "jump_seams": float(j[seams].mean()),
                    "jump_seams_one_pass": float(ref_jumps[seams].mean()),
                    "jump_keyframes_one_pass": float(ref_jumps[keys].mean()) if keys else None,
                    "keyframes_one_pass": keys,
                    "jump_median": float(np.median(j[1:])),
                    "diff_seams": float(diff[seams].mean()),
                    "diff_all": float(diff.mean()),
                    "seconds_one_pass": round(t_whole, 2),
                    "seconds_segments": round(r["seconds_segments"], 2),
                    "seconds_join": round(r["seconds_join"], 2),
                }
            )
        return rows


def table_md(rows: list[dict]) -> str:
    lines = [
        "| clip | frames | segments | warm-up | ab jump at the seams: one pass / segments | "
        "one pass at its keyframes | median ab jump | RGB diff to one pass: seams / all | "
        "seconds: one pass / segments + join |",
        "|---|---:|---:|---:|---|---:|---:|---|---|",
    ]
    for r in rows:
        key = r["jump_keyframes_one_pass"]
        key = "none" if key is None else f"{key:.2f} ({len(r['keyframes_one_pass'])})"
        lines.append(
            f"| {r['clip']} | {r['frames']} | {r['segments']} | {r['warmup']} | "
            f"{r['jump_seams_one_pass']:.2f} / {r['jump_seams']:.2f} | {key} | "
            f"{r['jump_median']:.2f} | "
            f"{r['diff_seams']:.2f} / {r['diff_all']:.2f} | {r['seconds_one_pass']:.1f} / "
            f"{r['seconds_segments']:.1f} + {r['seconds_join']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", default="dog,bikes")
    ap.add_argument("--length", type=int, default=60, help="frames per segment")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="seg-lite0")
    ap.add_argument("--crf", type=int, default=CRF, help="x264 rate factor of every encode")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model, table, _ = load(a.model)
    print(f"# host load before: {host_load()}", file=sys.stderr)
    rows = []
    for name in a.clips.split(","):
        for r in bench_clip(VIDEOS / f"{name}.mp4", model, table, a.length, a.crf):
            print(json.dumps(r), flush=True)
            rows.append(r)
    print(f"# host load after: {host_load()}", file=sys.stderr)
    print(table_md(rows))


if __name__ == "__main__":
    main()
