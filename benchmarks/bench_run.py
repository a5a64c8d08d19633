"""The archive job end to end against the bare model loop, and its memory for 100 vs 1,000
inputs, in one run.

    python benchmarks/bench_run.py [--n 1000] [--repeat 3] [--model seg-lite0] \
        [--memory 100,1000]

Inputs: grey JPEG copies of coco-tiny val2017 (cycled under distinct keys up to ``--n``) in a
bucket of moto's S3 server, started by this script on 127.0.0.1 (its own process).

1. bare model loop: the same images, already decoded and resized to 256x256 L in memory,
   through ``model_chroma`` in batches of 8 with all cores (at most 400 images);
2. end to end: ``colorize run s3://src s3://dst`` (list, read, decode, model actor, full
   resolution recombination, JPEG encode, write to S3, manifest) on ``--n`` inputs: images/s
   over the whole job (Ray's start, listing and the model load included) and while the
   pipeline is full (from the 10th to the 90th percentile row);
   1 and 2 alternate, ``--repeat`` jobs in all, bare loop first and last: each job's ratio is
   over the mean of the bare loops on either side of it, and the figure is the median ratio;
3. memory: ``colorize run`` again for each ``--memory`` size, its processes' memory read every
   0.5 s (not during 2: reading it costs CPU): the peak of the summed proportional set size
   (PSS) of the driver and every Ray process.

Every phase records the share of CPU time the hypervisor took (``cpu_stolen``): on a shared
virtual machine it varies between 1% and 40% from minute to minute, and it slows the phase it
falls on, so a ratio of images/s means something only where the phases it compares lost alike.
So every phase also records the CPU time all processes together ran per image
(``cpu_ms_per_image``, which does not count what the hypervisor took) and the share the CPUs
sat idle (``cpu_idle``): ``ratio_cpu_per_image_bare_vs_job`` (the bare loop's CPU per image
over the job's) is what the job's images/s would be, against the bare loop's, with both using
every CPU; the job's idle share is what it loses on top.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import torch
from _host import cpu_times, cpu_use_since, host_load, process_tree
from PIL import Image

from colorization.inference import lightness, model_chroma
from colorization.shipped import load

REPO = Path(__file__).resolve().parents[1]
VAL = REPO.parent / "shared" / "data" / "coco-tiny" / "val2017"
COLORIZE = str(Path(sys.executable).parent / "colorize")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_s3() -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, endpoint
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("moto server did not start")


def grey_jpegs() -> list[tuple[str, bytes]]:
    out = []
    for p in sorted(VAL.glob("*.jpg")):
        buf = io.BytesIO()
        Image.open(p).convert("L").save(buf, "JPEG", quality=90)
        out.append((p.name, buf.getvalue()))
    return out


def upload(client, bucket: str, prefix: str, files: list[tuple[str, bytes]], n: int) -> None:
    client.create_bucket(Bucket=bucket)
    for i in range(n):
        name, data = files[i % len(files)]
        client.put_object(Bucket=bucket, Key=f"{prefix}/{i // len(files):03d}/{name}", Body=data)


def bare_loop(model, table, files, n: int, batch: int) -> float:
    """The model alone on the same images (decoded and resized beforehand, not timed)."""
    smalls = [lightness(Image.open(io.BytesIO(d)), 256)[1] for _, d in files]
    smalls = [smalls[i % len(smalls)] for i in range(n)]
    model_chroma(model, torch.cat(smalls[:batch]), table, 0.38)
    t = time.perf_counter()
    for i in range(0, n, batch):
        model_chroma(model, torch.cat(smalls[i : i + batch]), table, 0.38)
    return n / (time.perf_counter() - t)


def per_image(use: dict, n: int) -> dict:
    """:func:`cpu_use_since` of a phase with its busy CPU time per image."""
    return {
        "cpu_ms_per_image": round(use["busy_s"] * 1000 / n, 1),
        "cpu_idle": use["idle"],
        "cpu_stolen": use["stolen"],
    }


def pss_of_tree(root: int) -> int:
    """Summed PSS (bytes) of process ``root`` and all its descendants (the driver, and the
    Ray processes it started: raylet, GCS, workers, actors)."""
    total = 0
    for pid in process_tree(root):
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def run_job(args: list[str], env: dict, sample_memory: bool) -> tuple[dict, int, float]:
    """``colorize run`` in its own process: (summary, peak PSS bytes or 0, wall seconds).

    Reading every process's PSS costs CPU (the kernel walks their page tables) that the job,
    whose Ray workers run at a lower priority, would lose: throughput is measured in runs
    without it."""
    peak = [0]
    done = threading.Event()
    t = time.perf_counter()
    proc = subprocess.Popen(
        [COLORIZE, "run", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], pss_of_tree(proc.pid))
            time.sleep(0.5)

    watcher = threading.Thread(target=sample, daemon=True)
    if sample_memory:
        watcher.start()
    stdout, stderr = proc.communicate()
    done.set()
    if sample_memory:
        watcher.join()
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(stdout[-2000:] + stderr[-3000:])
    return json.loads(stdout[stdout.index("{") :]), peak[0], wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--model", default="seg-lite0")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--memory", default="100,1000")
    ap.add_argument("--repeat", type=int, default=3, help="job and bare loop pairs")
    ap.add_argument("--job-args", default="", help="extra `colorize run` options, one string")
    a = ap.parse_args()
    host = host_load()
    s3, endpoint = start_s3()
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    os.environ.update({k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")})
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    try:
        files = grey_jpegs()
        sizes = sorted({a.n, *(int(x) for x in a.memory.split(",") if x)})
        for n in sizes:
            upload(client, f"src{n}", "scans", files, n)
            client.create_bucket(Bucket=f"dst{n}")
        torch.set_num_threads(os.cpu_count() or 1)
        model, table, path = load(a.model)

        n_bare = min(a.n, 400)

        def bare_run() -> dict:
            before = cpu_times()
            rate = bare_loop(model, table, files, n_bare, a.batch)
            return {"images_per_s": round(rate, 2), **per_image(cpu_use_since(before), n_bare)}

        def job(n: int, sample: bool) -> dict:
            before = cpu_times()
            summary, peak, wall = run_job(
                [f"s3://src{n}/scans", f"s3://dst{n}/colour", "--model", a.model]
                + ["--endpoint-url", endpoint, "--batch-size", str(a.batch), "--no-progress"]
                + a.job_args.split(),
                env,
                sample,
            )
            assert summary["ok"] == n, summary
            out = {
                "wall_s": round(wall, 1),
                "images_per_s_whole_run": round(n / wall, 2),
                "images_per_s_job": summary["images_per_s"],
                "images_per_s_steady": summary["steady_images_per_s"],
                **per_image(cpu_use_since(before), n),
            }
            if sample:
                out["peak_pss_mb"] = round(peak / 2**20)
            return out

        # bare, job, bare, job, ..., bare: each job against the mean of the bare loops on
        # either side of it, so that a slow minute of the host weighs on both sides of a ratio
        results: dict = {"model": str(path), "rounds": []}
        bares = [bare_run()]
        for _ in range(a.repeat):
            e2e = job(a.n, False)
            bares.append(bare_run())
            before_, after_ = bares[-2], bares[-1]
            bare = (before_["images_per_s"] + after_["images_per_s"]) / 2
            bare_ms = (before_["cpu_ms_per_image"] + after_["cpu_ms_per_image"]) / 2
            results["rounds"].append(
                {
                    "bare_before": before_,
                    f"job_n{a.n}": e2e,
                    "bare_after": after_,
                    "ratio_end_to_end_vs_bare": round(e2e["images_per_s_job"] / bare, 3),
                    "ratio_steady_vs_bare": (
                        round(e2e["images_per_s_steady"] / bare, 3)
                        if e2e["images_per_s_steady"]
                        else None
                    ),
                    "ratio_cpu_per_image_bare_vs_job": round(bare_ms / e2e["cpu_ms_per_image"], 3),
                }
            )
        for key in (
            "ratio_end_to_end_vs_bare",
            "ratio_steady_vs_bare",
            "ratio_cpu_per_image_bare_vs_job",
        ):
            values = [r[key] for r in results["rounds"] if r[key] is not None]
            if values:
                results[key] = {"median": statistics.median(values), "each": values}
        memory = [int(x) for x in a.memory.split(",") if x]
        for n in memory:
            results[f"memory_n{n}"] = job(n, True)
        mem = [results[f"memory_n{n}"]["peak_pss_mb"] for n in memory]
        if len(mem) >= 2:
            results["memory_ratio_largest_vs_smallest"] = round(mem[-1] / mem[0], 3)
        results["host_before"] = host
        results["host_after"] = host_load()
        print(json.dumps(results, indent=2))
    finally:
        s3.terminate()


if __name__ == "__main__":
    main()
