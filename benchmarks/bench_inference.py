"""Inference speed at 256x256 against the ECCV 2016 network of Zhang et al., in one run.

    python benchmarks/bench_inference.py [--model seg-lite0] [--threads 2] [--seconds 15]

Three figures, images/s, same threads, same batch, same input size:
1. the anchor: ``../shared/bench/eccv16_anchor.py`` (32.2 M parameters, random weights; its
   forward pass ends in the 313-way softmax, the ab decoding and the 4x upsampling);
2. the project's model doing the same work: L (N, 1, 256, 256) -> forward -> annealed-mean ab
   at 256x256 (``predict_chroma``), with the shipped weights;
3. the whole inference path on 256x256 photos: PIL image -> L -> model -> ab -> the image's
   own L recombined -> 8-bit RGB PIL image (``colorize_images``).
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

from colorization.inference import colorize_images, predict_chroma
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
    ap.add_argument("--size", type=int, default=256)
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
    L = torch.rand(a.batch, 1, a.size, a.size) * 100
    net = timed(lambda: predict_chroma(model, L, table), a.batch, a.seconds)
    photos = sorted((SHARED / "data" / "coco-tiny" / "val2017").glob("*.jpg"))[: a.batch]
    ims = [Image.open(p).convert("L").resize((a.size, a.size), Image.BICUBIC) for p in photos]
    full = timed(
        lambda: colorize_images(model, table, ims, a.size, batch_size=a.batch), a.batch, a.seconds
    )
    result = {
        "size": a.size,
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
