"""The archive job's driver memory for 1,000,000 and 10,000,000 inputs: planning, resume and
writing the manifest, with the job's own code (no Ray: these phases run in the driver alone).

    python benchmarks/bench_driver_memory.py [--sizes 1000000,10000000] [--shard-size 10000] \
        [--work /tmp/bench-driver-memory]

For each size, in fresh processes:

1. setup (not measured): a parquet manifest of synthetic keys (``s3://national-archive/
   scans/<box>/<folder>/<n>.tif``, the source), and in DST the completed shards of an earlier
   run that finished every other input (one in ten of those as ``error``);
2. the measured driver, phase after phase as ``colorize run --resume`` runs them:
   ``plan`` (list the source streamed, decide every output: :func:`plan_inputs`), ``resume``
   (DST's shards read back, the finished inputs carried: :func:`resume`), ``blocks`` (the
   pipeline's input blocks written to DST: :func:`write_plan_blocks`), ``manifest`` (the rows
   the pipeline returns for every block, 0.1% of them never, fed to the :class:`Collector` in
   batches of 32 as Ray Data hands them over, then :func:`finish`: lost rows, shards, the
   merged ``manifest.parquet``).

Memory is the resident set size (RSS) of the driver process: a thread samples it every 20 ms
and each phase reports its high-water mark; the process's own ``ru_maxrss`` (the kernel's
high-water mark, which no sample can miss) is reported for the whole run. ``baseline`` is the
RSS after the imports, before any work.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from pipeline.manifest import (  # noqa: E402
    MANIFEST,
    ROW_SCHEMA,
    Collector,
    Manifest,
    finish,
    plan_inputs,
    read_plan_blocks,
    resume,
    rows_table,
    write_plan_blocks,
)
from pipeline.sources import iter_items  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 2**20


def source_uris(lo: int, hi: int) -> list[str]:
    return [
        f"s3://national-archive/scans/box{i // 100_000:04d}/f{i // 1000:06d}/{i:09d}.tif"
        for i in range(lo, hi)
    ]


def setup(n: int, root: Path, shard_size: int) -> None:
    """The source manifest and an earlier run's shards (every other input, 10% of them error)."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    dst = root / "dst"
    earlier = Manifest(str(dst), "20240101T000000-1", shard_size=shard_size)
    chunk = 1_000_000
    with pq.ParquetWriter(root / "source.parquet", pa.schema([("uri", pa.string())])) as w:
        for lo in range(0, n, chunk):
            uris = pa.array(source_uris(lo, min(n, lo + chunk)))
            w.write_table(pa.table({"uri": uris}))
            done = uris.take(pa.array(np.arange(0, len(uris), 2)))
            status = np.where(np.arange(len(done)) % 10 == 0, "error", "ok")
            earlier.write_rows(rows_table(done, status=pa.array(status), run_id=earlier.run_id))


class Sampler:
    """RSS sampled every 20 ms; ``mark(phase)`` closes the phase before it."""

    def __init__(self) -> None:
        self.peaks: dict[str, float] = {}
        self.seconds: dict[str, float] = {}
        self.phase, self.t0, self.peak = "baseline", time.perf_counter(), self.rss()
        self.lock = threading.Lock()
        threading.Thread(target=self._run, daemon=True).start()

    @staticmethod
    def rss() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE / MB

    def _run(self) -> None:
        while True:
            with self.lock:
                self.peak = max(self.peak, self.rss())
            time.sleep(0.02)

    def mark(self, phase: str) -> None:
        with self.lock:
            self.peaks[self.phase] = round(max(self.peak, self.rss()), 1)
            self.seconds[self.phase] = round(time.perf_counter() - self.t0, 1)
            self.phase, self.t0, self.peak = phase, time.perf_counter(), self.rss()


def measure(root: Path, shard_size: int) -> dict:
    sampler = Sampler()
    work, dst = root / "work", str(root / "dst")
    shutil.rmtree(work, ignore_errors=True)
    m = Manifest(dst, "20240201T000000-2", shard_size=shard_size)
    sampler.mark("plan")
    plan = plan_inputs(iter_items(str(root / "source.parquet")), dst, "jpeg", work)
    sampler.mark("resume")
    plan = resume(plan, m)
    sampler.mark("blocks")
    blocks, _ = write_plan_blocks(plan, m, 32)
    sampler.mark("manifest")
    collector = Collector(plan, m)
    for i, uri in enumerate(blocks):
        rows = read_plan_blocks([uri], m.storage)
        n = len(rows["source_uri"])
        keep = np.arange(n) % 1000 != (i % 1000)  # about 0.1% never come back
        src = pa.array(rows["source_uri"][keep], pa.string())
        out = rows_table(
            src,
            output_uri=pa.array(rows["output_uri"][keep], pa.string()),
            status="ok",
            width=640,
            height=480,
        ).select(ROW_SCHEMA.names)
        for lo in range(0, len(out), 32):
            collector.add(out.slice(lo, 32))
    counts = finish(plan, m, collector, "bench-model")
    scratch = sum(f.stat().st_size for f in work.rglob("*") if f.is_file())
    m.remove_plan()
    sampler.mark("end")
    rows = pq.ParquetFile(Path(dst) / MANIFEST).metadata.num_rows
    return {
        "listed": plan.listed,
        "carried": plan.n_carried,
        "processed": plan.n_todo,
        "blocks": len(blocks),
        "manifest_rows": rows,
        "counts": dict(counts),
        "peak_rss_mb": sampler.peaks,
        "seconds": sampler.seconds,
        "scratch_mb": round(scratch / MB, 1),  # the driver's local scratch files at the end
        "manifest_mb": round((Path(dst) / MANIFEST).stat().st_size / MB, 1),
        "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000000,10000000")
    ap.add_argument("--shard-size", type=int, default=10_000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench-driver-memory"))
    ap.add_argument("--phase", choices=["setup", "measure"], help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase == "setup":
        return setup(args.n, args.work / str(args.n), args.shard_size)
    if args.phase == "measure":
        return print(json.dumps(measure(args.work / str(args.n), args.shard_size)))
    results = {}
    for n in (int(s) for s in args.sizes.split(",")):
        base = [sys.executable, __file__, "--n", str(n), "--work", str(args.work)]
        base += ["--shard-size", str(args.shard_size)]
        t0 = time.perf_counter()
        subprocess.run([*base, "--phase", "setup"], check=True)
        print(f"{n:,} inputs: setup {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        out = subprocess.run([*base, "--phase", "measure"], check=True, capture_output=True)
        results[n] = json.loads(out.stdout)
        print(f"{n:,} inputs: {json.dumps(results[n])}", file=sys.stderr)
        shutil.rmtree(args.work / str(n), ignore_errors=True)
    print(json.dumps({"shard_size": args.shard_size, "results": results}, indent=2))


if __name__ == "__main__":
    main()
