"""Inference speed at 256x256 against the ECCV 2016 network of Zhang et al., in one run.

    python benchmarks/bench_inference.py [--model seg-lite0] [--threads 2] [--seconds 15]
        [--input-size N]

Three figures, images/s, same threads, same batch, same input size:
1. the anchor: ``../shared/bench/eccv16_anchor.py`` (32.2 M parameters, random weights; its
   forward pass ends in the 313-way softmax, the ab decoding and the 4x upsampling);
2. the project's model doing the same work: L (N, 1, 256, 256) -> forward -> annealed-mean ab
   at 256x256 (``predict_chroma``), with the shipped weights;
3. the whole inference path on 256x256 photos: PIL image -> L -> model -> ab -> the image's
   own L recombined -> 8-bit RGB PIL image (``colorize_images``).
With ``--input-size`` (default: the model's own, ``inference.input_size``) the model sees
an N x N L in 2 and 3 while the photos stay 256x256 (3 upsamples its chroma onto them).
Ratio = 2 (or 3) over 1. Run on a quiet machine: the host load is recorded with the figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from _host import host_load
from PIL import Image

from colorization.inference import colorize_images, input_size, predict_chroma
from colorization.shipped import load

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def timed(fn, batch: int, seconds: float) -> float:
    fn()
    t, n = time.perf_counter(), 0
    while time.perf_counter() - t < seconds:
        fn()
        n += batch
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="seg-lite0")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=256, help="the photos' side (and the anchor's)")
    ap.add_argument(
        "--input-size", type=int, default=None, help="the model's input side (default: its own)"
    )
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=15)
    a = ap.parse_args()
    load_before = host_load()
    anchor_cmd = [sys.executable, str(SHARED / "bench" / "eccv16_anchor.py")]
    anchor_cmd += ["--threads", str(a.threads), "--size", str(a.size), "--batch", str(a.batch)]
    anchor_cmd += ["--seconds", str(a.seconds)]
    anchor = json.loads(subprocess.run(anchor_cmd, capture_output=True, text=True).stdout)

    torch.set_num_threads(a.threads)
    model, table, path = load(a.model)
    side = input_size(model, a.input_size)
    L = torch.rand(a.batch, 1, side, side) * 100
    net = timed(lambda: predict_chroma(model, L, table), a.batch, a.seconds)
    photos = sorted((SHARED / "data" / "coco-tiny" / "val2017").glob("*.jpg"))[: a.batch]
    ims = [Image.open(p).convert("L").resize((a.size, a.size), Image.BICUBIC) for p in photos]
    full = timed(
        lambda: colorize_images(model, table, ims, side, batch_size=a.batch), a.batch, a.seconds
    )
    result = {
        "size": a.size,
        "input_size": side,
        "batch": a.batch,
        "threads": a.threads,
        "eccv16_images_per_s": anchor["images_per_s"],
        "eccv16_params_m": anchor["params_m"],
        "model": str(path),
        "model_params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "model_images_per_s": round(net, 2),
        "ratio_model": round(net / anchor["images_per_s"], 2),
        "colorize_images_per_s": round(full, 2),
        "ratio_colorize": round(full / anchor["images_per_s"], 2),
        "host_before": load_before,
        "host_after": host_load(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
