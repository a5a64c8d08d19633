"""Training from object storage against training from a local folder, in one run.

    python benchmarks/bench_train_ingest.py [--photos 800] [--steps 60] [--out DIR]

Prepares ``--photos`` Imagenette photos once (``colorize prepare``, 160 px, no teacher) into a
local folder, copies the same shard files into a bucket of a loopback S3 server (moto, on
127.0.0.1), then runs ``colorize train`` twice with the same config and seed (the shipped
recipe's model, 2 CPU workers, crops of 128): once reading the local folder, once the bucket.
Figures: the images/s the workers report (median after the first log, which holds start-up),
their ratio (S3 / local), and the largest difference between the two loss curves (the same
seed reads the same batches in the same order, so they should match).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
COLORIZE = str(Path(sys.executable).parent / "colorize")
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def colorize(*args: str, env: dict) -> None:
    proc = subprocess.run([COLORIZE, *args], env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stdout[-3000:] + proc.stderr[-3000:])


def train(work: Path, name: str, data: str, val: str, steps: int, env: dict, **extra) -> list:
    cfg = {
        "data": data,
        "val_data": val,
        "tables": str(work / "tables"),
        "model": {"name": "seg", "base_width": 16, "encoder": "lite0"},
        "crop": 128,
        "batch_size": 8,
        "steps": steps,
        "warmup_steps": 10,
        "checkpoint_every": steps,
        "log_every": 5,
        "val_images": 16,
        "num_workers": 2,
        "storage_path": str(work / "runs"),
        "name": name,
        **extra,
    }
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    colorize("train", "--config", str(path), env=env)
    lines = (work / "runs" / name / "progress.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "loss_total" in r]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=int, default=800)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    from moto.server import ThreadedMotoServer

    work = a.out or Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", **FAKE_AWS)
    os.environ.update(FAKE_AWS)
    photos = sorted((DATA / "imagenette").glob("*/*.JPEG"))[:: max(1, 7000 // a.photos)]
    photos = photos[: a.photos]
    src = work / "photos"
    src.mkdir(exist_ok=True)
    for p in photos:
        (src / p.name).unlink(missing_ok=True)
        (src / p.name).symlink_to(p)
    colorize("prepare", str(src), "--out", str(work / "train"), "--size", "160",
             "--teacher", "none", env=env)  # fmt: skip
    colorize("prepare", str(DATA / "bsds500" / "val"), "--out", str(work / "val"),
             "--size", "160", "--teacher", "none", env=env)  # fmt: skip
    colorize("tables", "build", str(src), "--out", str(work / "tables"), "--no-progress", env=env)

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        import boto3

        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="bench")
        for d in ("train", "val"):
            for f in sorted((work / d).iterdir()):
                s3.put_object(Bucket="bench", Key=f"{d}/{f.name}", Body=f.read_bytes())
        runs = {
            "local": train(work, "local", str(work / "train"), str(work / "val"), a.steps, env),
            "s3": train(
                work,
                "s3",
                "s3://bench/train",
                "s3://bench/val",
                a.steps,
                env,
                storage_endpoint_url=endpoint,
            ),  # fmt: skip
        }
    finally:
        server.stop()
    rate = {k: float(np.median([r["images_per_s"] for r in v[1:]])) for k, v in runs.items()}
    curves = {k: np.array([r["loss_total"] for r in v]) for k, v in runs.items()}
    result = {
        "photos": len(photos),
        "steps": a.steps,
        "local_images_per_s": round(rate["local"], 2),
        "s3_images_per_s": round(rate["s3"], 2),
        "ratio_s3_over_local": round(rate["s3"] / rate["local"], 3),
        "loss_curve_max_abs_diff": float(np.abs(curves["local"] - curves["s3"]).max()),
        "loss_local": [round(x, 4) for x in curves["local"].tolist()],
        "loss_s3": [round(x, 4) for x in curves["s3"].tolist()],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
