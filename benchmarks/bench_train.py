"""Training throughput (images/s) per model variant and resolution, and Ray Train with 1 vs 2
workers. Prints JSON lines, then a table.

    python benchmarks/bench_train.py [--seconds 20] [--threads 2] [--ray]

Part 1 (in-process, ``--threads`` torch threads): the full training step of the training stage
(RGB -> Lab, target encoding by table lookup, forward, loss, backward, AdamW step) on random
crops of real COCO photos, for every registered variant at 128 and 256 px, with the scratch
and the pretrained Lite0 encoder (``--encoders``); the category term learns a teacher's
1000-way probabilities (a fixed distribution here: the cost is the same).
Part 2 (``--ray``): ``colorize train`` itself on prepared coco-tiny shards with 1 and then 2
Ray Train workers (1 CPU each), images/s as the workers report it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from colorization.inference import rgb_to_model_input
from colorization.losses import ColorizationLoss
from colorization.models import list_models
from colorization.tables import ColorTable
from pipeline.prepared import Sample
from pipeline.train_stage import ModelConfig, TrainConfig, build_model, collate, color_target

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
COLORIZE = str(Path(sys.executable).parent / "colorize")


def photos(size: int, n: int = 32) -> list[Sample]:
    files = sorted((DATA / "coco-tiny" / "train2017").glob("*.jpg"))[:n]
    out = []
    for f in files:
        im = Image.open(f).convert("RGB").resize((size + 16, size + 16), Image.BICUBIC)
        teacher = np.full(1000, 1e-4, np.float32)
        teacher[0] = 1.0 - teacher[1:].sum()
        out.append(Sample(np.asarray(im), None, [0], f.name, teacher))
    return out


def table_from(samples: list[Sample]) -> ColorTable:
    from colorization.abgrid import AbGrid, rgb_code

    g = AbGrid()
    codes = np.concatenate([rgb_code(s.rgb).ravel() for s in samples])
    return ColorTable.from_histogram(np.bincount(g.rgb_cell_lut()[codes], minlength=g.n_cells))


def step_throughput(
    name: str, encoder: str, size: int, batch: int, seconds: float, table, samples
) -> dict:
    model_cfg = ModelConfig(name=name, encoder=encoder)
    cfg = TrainConfig(data="", model=model_cfg, crop=size, batch_size=batch)
    model = build_model(cfg, table, teacher=True).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = ColorizationLoss(class_weights=torch.tensor(table.weights, dtype=torch.float32))
    rng = np.random.default_rng(0)

    def step() -> None:
        idx = rng.integers(0, len(samples), batch)
        b = collate([samples[i] for i in idx], size, rng)
        L, ab = rgb_to_model_input(b["rgb"])
        target = color_target(model, table, b["rgb"], ab)
        terms = loss_fn(model(L), color_target=target, category_target=b["teacher"])
        opt.zero_grad()
        terms["total"].backward()
        opt.step()

    step()  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += batch
    dt = time.perf_counter() - t0
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return {"model": name, "encoder": encoder, "size": size, "batch": batch,
            "params_m": round(params, 2), "images_per_s": round(n / dt, 2)}  # fmt: skip


def ray_throughput(workers: int, steps: int, work: Path) -> dict:
    cfg = {
        "data": str(work / "train"),
        "tables": str(work / "tables"),
        "model": {"name": "seg"},
        "crop": 128,
        "batch_size": 8,
        "steps": steps,
        "checkpoint_every": steps,
        "log_every": 5,
        "num_workers": workers,
        "storage_path": str(work / "runs"),
        "name": f"bench-{workers}w",
    }
    path = work / f"bench-{workers}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    subprocess.run([COLORIZE, "train", "--config", str(path)], check=True, capture_output=True)
    records = [
        json.loads(line)
        for line in (work / "runs" / cfg["name"] / "progress.jsonl").read_text().splitlines()
    ]
    rates = [r["images_per_s"] for r in records if "images_per_s" in r][1:]  # skip warm-up
    return {"ray_workers": workers, "model": "seg", "size": 128, "batch_per_worker": 8,
            "images_per_s": round(float(np.median(rates)), 2)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", type=int, nargs="*", default=[128, 256])
    ap.add_argument("--encoders", nargs="*", default=["scratch", "lite0"])
    ap.add_argument("--ray", action="store_true", help="also time colorize train, 1 vs 2 workers")
    ap.add_argument("--ray-steps", type=int, default=60)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rows = []
    for size in a.sizes:
        samples = photos(size)
        table = table_from(samples)
        for name in list_models():
            for encoder in a.encoders:
                batch = 8 if size <= 128 else 4
                r = step_throughput(name, encoder, size, batch, a.seconds, table, samples)
                r["threads"] = a.threads
                print(json.dumps(r), flush=True)
                rows.append(r)
    if a.ray:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            ann = DATA / "coco-tiny" / "annotations" / "instances_train2017.json"
            run = dict(check=True, capture_output=True)
            subprocess.run([COLORIZE, "prepare", str(ann), "--out", str(work / "train"),
                            "--size", "144"], **run)  # fmt: skip
            subprocess.run([COLORIZE, "tables", "build", str(ann), "--out", str(work / "tables"),
                            "--no-progress"], **run)  # fmt: skip
            for workers in (1, 2):
                r = ray_throughput(workers, a.ray_steps, work)
                print(json.dumps(r), flush=True)
                rows.append(r)
    print("\n| model | encoder | size | batch | params (M) | images/s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if "ray_workers" in r:
            print(f"| seg, Ray Train {r['ray_workers']} worker(s) | lite0 | 128 | 8/worker | | "
                  f"{r['images_per_s']} |")  # fmt: skip
        else:
            print(f"| {r['model']} | {r['encoder']} | {r['size']} | {r['batch']} | {r['params_m']} | "
                  f"{r['images_per_s']} |")  # fmt: skip


if __name__ == "__main__":
    main()
