"""The colour-class statistics job end to end (``build_tables`` on Ray) vs decoding alone with
Pillow, over the same COCO photos and the same cores.

One run measures (medians over ``--repeat`` rounds; the variants being compared run in turn
within each round, so that a slow phase of a shared host hits all of them alike):

1. decode-only baseline: a ``multiprocessing`` pool of ``--procs`` processes running
   ``np.asarray(Image.open(p).convert("RGB"))`` over the files, and a stricter variant that only
   calls ``Image.open(p).load()``; images/s;
2. the job: ``build_tables(TablesConfig(...))`` after ``ray.init(num_cpus=procs)`` and a warm-up
   run on a few images (workers started, LUT cached), so ``ray.init`` is not timed; images/s
   and the ratio job / decode; for both, also the CPU milliseconds per image of this whole
   process tree (pool workers; Ray's GCS, raylet and workers), which a busy host skews far
   less than wall time;
3. one core, no Ray: per-image time of ``histogram_shard`` (read + decode + histogram) vs
   decode alone, and a per-step breakdown of a copy of that loop;
4. how many cores the host actually gives (a pure-Python spin on 1 vs ``procs`` processes).

Prints JSON lines, then a human summary::

    .venv/bin/python benchmarks/bench_tables_job.py [--repeat 3] [--procs 2] [SOURCE ...]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _host import host_load, proc_stats, process_tree  # noqa: E402  (benchmarks/ is on sys.path when run)
from PIL import Image

from colorization.abgrid import AbGrid
from colorization.imageio import DEFAULT_MAX_PIXELS, decode_image, rgb_codes
from pipeline.sources import StorageOptions, list_items, read_bytes
from pipeline.tables_stage import TablesConfig, build_tables, histogram_shard

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
DEFAULT_SOURCES = [
    DATA / "coco-tiny" / "train2017",
    DATA / "coco-tiny" / "val2017",
    DATA / "coco128-train",
]
RATIO_REQUIRED = 0.7
BREAKDOWN_STEPS = ("read", "decode", "rgb_codes", "lut_take", "bincount", "grey_check", "sum")


def emit(step: str, **fields) -> dict:
    row = {"bench": "tables_job", "step": step, **fields}
    print(json.dumps(row), flush=True)
    return row


def decode_rgb(path: str) -> int:
    """The baseline's unit of work: decode to an RGB array; returns the pixel count."""
    arr = np.asarray(Image.open(path).convert("RGB"))
    return arr.shape[0] * arr.shape[1]


def decode_load(path: str) -> int:
    """Stricter baseline: decode into Pillow's own buffer, no conversion, no array."""
    with Image.open(path) as im:
        im.load()
        return im.size[0] * im.size[1]


def spin(n: int = 2_000_000) -> float:
    """A fixed amount of pure-Python work; returns its wall seconds."""
    t = time.perf_counter()
    s = 0
    for i in range(n):
        s += i
    return time.perf_counter() - t


def tree_cpu_seconds() -> float:
    """CPU seconds (user + system) used so far by this process and all its descendants that
    are alive (the pool's workers; Ray's GCS, raylet and workers), from ``/proc``."""
    stats = proc_stats()
    ticks = sum(stats[pid][2] for pid in process_tree(os.getpid(), stats) if pid in stats)
    return ticks / os.sysconf("SC_CLK_TCK")


def rounds(
    fns: dict[str, Callable[[], object]], repeat: int
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Wall seconds of every ``fns`` entry, run in turn ``repeat`` times (after one warm round),
    and the CPU seconds each used in all rounds together (this process tree, all cores):
    CPU time hardly depends on what else the host runs, wall time does."""
    runs: dict[str, list[float]] = {name: [] for name in fns}
    cpu = dict.fromkeys(fns, 0.0)
    for r in range(repeat + 1):
        for name, fn in fns.items():
            c, t = tree_cpu_seconds(), time.perf_counter()
            fn()
            if r > 0:
                runs[name].append(round(time.perf_counter() - t, 4))
                cpu[name] += tree_cpu_seconds() - c
    return runs, cpu


def effective_cores(pool, procs: int) -> float:
    """Throughput of ``procs`` busy processes in units of one process alone (ideal: procs)."""
    alone = statistics.median(spin() for _ in range(3))
    t = time.perf_counter()
    pool.map(spin, [2_000_000] * (procs * 3), chunksize=1)
    return round(procs * 3 * alone / (time.perf_counter() - t), 2)


def breakdown(items, grid: AbGrid, lut: np.ndarray) -> dict[str, float]:
    """A copy of histogram_shard's loop with a clock around every step: seconds per step."""
    steps = dict.fromkeys(BREAKDOWN_STEPS, 0.0)
    hist = np.zeros(grid.n_cells, np.int64)
    neutral = grid.half * grid.side + grid.half
    for item in items:
        t0 = time.perf_counter()
        data = read_bytes(item.uri)
        t1 = time.perf_counter()
        im = decode_image(data, DEFAULT_MAX_PIXELS, exif_transpose=False)
        t2 = time.perf_counter()
        codes = rgb_codes(im)
        t3 = time.perf_counter()
        cells = np.take(lut, codes)
        t4 = time.perf_counter()
        h = np.bincount(cells, minlength=grid.n_cells).astype(np.int64)
        t5 = time.perf_counter()
        grey = h[neutral] >= 0.99 * cells.size  # the cost of the test; its threshold may differ
        t6 = time.perf_counter()
        if not grey:
            hist += h
        t7 = time.perf_counter()
        ts = (t0, t1, t2, t3, t4, t5, t6, t7)
        for key, a, b in zip(steps, ts[:-1], ts[1:], strict=True):
            steps[key] += b - a
    return steps


def one_core(items, repeat: int) -> tuple[dict, dict]:
    """Per-image ms on one core, in this process (no Ray): histogram_shard vs decode, and the
    median per-step breakdown of the loop."""
    grid = AbGrid()
    lut = grid.rgb_cell_lut()
    files = [it.uri for it in items]
    storage = StorageOptions()
    parts: list[dict[str, float]] = []
    runs, _ = rounds(
        {
            "histogram_shard": lambda: histogram_shard(
                items, grid, lut, False, True, DEFAULT_MAX_PIXELS, storage
            ),
            "decode_rgb": lambda: [decode_rgb(f) for f in files],
            "decode_load": lambda: [decode_load(f) for f in files],
            "breakdown": lambda: parts.append(breakdown(items, grid, lut)),
        },
        repeat,
    )
    n = len(items)
    per_image = {
        k: {"ms_per_image": round(1e3 * statistics.median(v) / n, 3), "seconds": v}
        for k, v in runs.items()
        if k != "breakdown"
    }
    ms = {k: 1e3 * statistics.median(p[k] for p in parts[1:]) / n for k in BREAKDOWN_STEPS}
    total = sum(ms.values())
    split = {
        "ms_per_image": {k: round(v, 3) for k, v in ms.items()},
        "share": {k: round(v / total, 3) for k, v in ms.items()},
    }
    return per_image, split


def parallel(sources: list[str], files: list[str], procs: int, repeat: int, warm: int) -> dict:
    """Decode pool and the Ray job in turn, ``repeat`` rounds; ``ray.init`` and the warm-up
    are not timed. The pool is forked before Ray starts and idles while the job runs."""
    import ray

    tmp = Path(tempfile.mkdtemp(prefix="bench-tables-"))
    reports: list[dict] = []

    def job() -> None:
        out = tmp / f"run{len(reports)}"
        reports.append(build_tables(TablesConfig(sources, str(out), progress=False)))

    with mp.get_context("fork").Pool(procs) as pool:
        cores_before = effective_cores(pool, procs)
        ray.init(num_cpus=procs, include_dashboard=False, log_to_driver=False)
        try:
            warm_dir = tmp / "warm"
            warm_dir.mkdir()
            for f in files[:warm]:
                shutil.copy(f, warm_dir)
            small = []  # the second one is about the job's fixed cost
            for i in range(2):  # starts and warms every worker (imports, the LUT)
                t = time.perf_counter()
                build_tables(TablesConfig([str(warm_dir)], str(tmp / f"w{i}"), progress=False))
                small.append(round(time.perf_counter() - t, 3))
            runs, cpu = rounds(
                {
                    "decode_rgb": lambda: pool.map(decode_rgb, files, chunksize=4),
                    "decode_load": lambda: pool.map(decode_load, files, chunksize=4),
                    "job": job,
                },
                repeat,
            )
        finally:
            ray.shutdown()
            shutil.rmtree(tmp, ignore_errors=True)
        cores_after = effective_cores(pool, procs)
    n = len(files)
    out = {
        k: {
            "images_per_s": round(n / statistics.median(v), 1),
            "seconds": v,
            "cpu_ms_per_image": round(1e3 * cpu[k] / (n * repeat), 3),
        }
        for k, v in runs.items()
    }
    rep = reports[-1]
    keys = ("n_listed", "n_ok", "n_grey_skipped", "n_failed", "shards", "num_classes")
    out["job"].update({k: rep.get(k) for k in keys})
    out["job"]["report_seconds"] = [r["seconds"] for r in reports[1:]]
    out["job"]["warmup_seconds"] = {f"{warm}_images": small}
    out["effective_cores"] = [cores_before, cores_after]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sources", nargs="*", default=[str(s) for s in DEFAULT_SOURCES])
    ap.add_argument("--procs", type=int, default=2, help="pool processes and Ray CPUs")
    ap.add_argument("--repeat", type=int, default=3, help="timed rounds (median reported)")
    ap.add_argument("--warm-images", type=int, default=8, help="images of the Ray warm-up")
    args = ap.parse_args()

    items = [it for src in args.sources for it in list_items(src)]
    files = [it.uri for it in items]
    if not files:
        raise SystemExit(f"no files in {args.sources}")
    n_bytes = sum(len(read_bytes(f)) for f in files)  # every run reads from the page cache
    host = [emit("host_before", **host_load())]
    emit("inputs", sources=args.sources, n_files=len(files), mbytes=round(n_bytes / 1e6, 1))

    serial, split = one_core(items, args.repeat)
    emit("one_core", **serial)
    emit("one_core_breakdown", **split)
    par = emit(
        "parallel",
        procs=args.procs,
        **parallel(args.sources, files, args.procs, args.repeat, args.warm_images),
    )

    job_ips = par["job"]["images_per_s"]
    rgb_ips, load_ips = par["decode_rgb"]["images_per_s"], par["decode_load"]["images_per_s"]
    ratio_rgb, ratio_load = job_ips / rgb_ips, job_ips / load_ips
    per_round = [
        d / j for d, j in zip(par["decode_rgb"]["seconds"], par["job"]["seconds"], strict=True)
    ]
    cpu_job, cpu_rgb = par["job"]["cpu_ms_per_image"], par["decode_rgb"]["cpu_ms_per_image"]
    hist_ms = serial["histogram_shard"]["ms_per_image"]
    rgb_ms = serial["decode_rgb"]["ms_per_image"]
    emit(
        "ratios",
        job_over_decode_rgb=round(ratio_rgb, 3),
        job_over_decode_rgb_per_round=[round(r, 3) for r in per_round],
        job_over_decode_load=round(ratio_load, 3),
        required=RATIO_REQUIRED,
        meets_requirement=bool(ratio_rgb >= RATIO_REQUIRED),
        cpu_decode_rgb_over_job=round(cpu_rgb / cpu_job, 3),
        one_core_decode_rgb_over_histogram_shard=round(rgb_ms / hist_ms, 3),
        job_cpu_ms_per_image_beyond_histogram_shard=round(cpu_job - hist_ms, 3),
    )

    host.append(emit("host_after", **host_load()))
    verdict = "meets" if ratio_rgb >= RATIO_REQUIRED else "FAILS"
    top = sorted(split["share"].items(), key=lambda kv: -kv[1])[:4]
    eff = par["effective_cores"]
    print(
        f"\ntables job, {len(files)} images, {args.procs} processes, median of {args.repeat} "
        f"rounds\n"
        f"  wall:  decode RGB pool {rgb_ips:6.1f} img/s, load() pool {load_ips:6.1f} img/s, "
        f"job (Ray, warm) {job_ips:6.1f} img/s\n"
        f"         ratio job/decode RGB {ratio_rgb:.2f} ({verdict} >= {RATIO_REQUIRED}; rounds "
        + ", ".join(f"{r:.2f}" for r in per_round)
        + f"), job/load() {ratio_load:.2f}\n"
        f"  CPU:   decode RGB {cpu_rgb:.2f} ms/img, job {cpu_job:.2f} ms/img (all processes): "
        f"ratio {cpu_rgb / cpu_job:.2f}\n"
        f"  one core, no Ray: histogram_shard {hist_ms:.2f} ms/img, decode RGB {rgb_ms:.2f}, "
        f"load() {serial['decode_load']['ms_per_image']:.2f} (ratio {rgb_ms / hist_ms:.2f}); "
        f"Ray and the job add {cpu_job - hist_ms:.2f} ms/img of CPU\n"
        f"  one-core breakdown: " + ", ".join(f"{k} {v:.0%}" for k, v in top) + "\n"
        f"  host: {eff[0]} / {eff[1]} effective cores before / after; other processes busy on "
        f"{host[0]['others_cpus_busy']} / {host[1]['others_cpus_busy']} CPUs (loadavg "
        f"{host[0]['loadavg_1min']} / {host[1]['loadavg_1min']}); wall figures need ~{args.procs}"
        f" and ~0"
    )


if __name__ == "__main__":
    main()
