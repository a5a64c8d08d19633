"""Stage 3: mass colorization of an archive (Ray Data), resumable, one manifest row per input.

The job that wires the archive's modules together on the caller's Ray (an entrypoint starts or
joins it: :func:`pipeline.cluster.connect`):

list SRC (folder, glob, ``s3://`` prefix, parquet/CSV manifest; streamed) -> plan and resume
(:mod:`pipeline.manifest`: an output key per input, keys outside DST refused, colliding outputs
skipped, inputs already finished in DST's manifest carried over) -> Ray Data over the plan's
blocks: decode tasks -> model actor pool -> finish tasks (:mod:`pipeline.archive_workers`) ->
the driver writes manifest shards as rows arrive -> ``DST/manifest.parquet``, exactly one row
per listed input. Every failure is a row (status ``error`` and the reason), never a crashed job;
a killed worker is retried by Ray (actors restart, tasks re-run) and its rows are not lost.

The job's Ray Data settings live in a copy of the caller's ``DataContext``, current only while
the job runs: the caller's own context is the same object with the same settings afterwards.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import Any

import yaml

from colorization.imageio import DEFAULT_MAX_PIXELS
from colorization.shipped import DEFAULT_MODEL
from colorization.videofiles import CRF, DEFAULT_CODEC, PIX_FMT
from pipeline.archive_video import process_videos
from pipeline.archive_workers import Colorizer, _Decode, _Finish
from pipeline.manifest import (
    FORMATS,
    Collector,
    Manifest,
    Plan,
    decided_rows,
    finish,
    plan_inputs,
    read_plan_blocks,
    resume,
    write_plan_blocks,
)
from pipeline.sources import StorageOptions, is_s3, iter_items, s3_client, split_s3, write_bytes

#: videos per plan block: the driver holds one block of videos at a time
VIDEO_BLOCK_ROWS = 256


@dataclass
class RunConfig:
    """One archive run; saved as ``DST/_manifest/run-<id>.yaml``."""

    src: str
    dst: str
    model: str = DEFAULT_MODEL
    format: str = "jpeg"  # jpeg | png | webp
    quality: int = 90
    temperature: float | None = None  # None: the model's own setting
    saturation: float | None = None  # None: the model's own setting
    rebalance_correction: float | None = None  # None: the model's own setting
    size: int | None = None  # the model's input side; None: the model's own (then saved)
    batch_size: int = 8  # images per model call
    task_batch_size: int = 32  # images per decode and finish task (fewer tasks: less overhead)
    # decode tasks and finish tasks in flight at once (each): bounds the worker processes and
    # the data in flight, so memory does not depend on the archive's size; 0: as many as the
    # CPUs allow (on a cluster, where many CPUs feed GPU actors)
    task_concurrency: int = 1
    # the object store memory Ray Data may fill with blocks between the stages (0: Ray's own
    # limit, a share of the object store, which lets the decode tasks run hundreds of MB
    # ahead of the model on a large archive). 128 MB holds the model's next block (about
    # 16 MB per 31 images at 640x480) with room for the others: the model never waits
    in_flight_mb: int = 128
    # model actors. On CPUs two actors of one torch thread each beat one of two threads on
    # 2 cores: a thread that the decode and finish tasks preempt holds up no other thread at
    # torch's per-layer barriers (5-8% less CPU per image, the CPUs idle less; benchmarks 5)
    workers: int = 2
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 0.5  # fractional: the read and write tasks need CPUs too
    threads_per_worker: int = 0  # torch threads per actor (0: the node's cores / workers)
    cpus_per_task: float = 0.5  # decode and finish tasks
    # decode and finish tasks running at once on a local Ray that the entrypoint starts
    # (pipeline.cluster.connect: a resource of the node; 0: no such limit). 1: they take turns in one
    # worker process (a second one is 250 MB more, whatever the archive's size); they need a
    # tenth of the model's CPU time, so the model does not wait for them. Ray Data does not
    # see the resource, so its CPU budget never holds one of them back for the other
    task_slots: int = 1
    limit: int | None = None
    resume: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS
    shard_size: int = 256  # manifest rows per shard
    storage: StorageOptions = field(default_factory=StorageOptions)  # SRC and DST
    progress: bool = True
    # videos (mp4, mov, mkv, avi, webm): cut into segments of this many frames that the model
    # actors share (20 s at 30 fps; each also colorizes SEGMENT_WARMUP frames before its own)
    video_segment_frames: int = 600
    video_codec: str = DEFAULT_CODEC
    video_crf: int = CRF  # the rate factor of x264 / x265: lower is closer to lossless (0)
    video_pix_fmt: str = PIX_FMT  # 8-bit 4:2:0; yuv420p10le: 10-bit, for masters
    video_stabilize: bool = True  # colour carried along the motion (colorization/video.py)
    # each video's warping error in its row (a Farneback flow per frame pair: about a third
    # more time at 720p on CPUs)
    video_flicker: bool = True


# --- the job ---------------------------------------------------------------------------------
def _model_facts(spec: str) -> tuple[str, str, str]:
    """(model id, tables fingerprint, output kind) read from the checkpoint's header."""
    from colorization.checkpoint import read_header
    from colorization.models import create_model
    from colorization.shipped import models_dir, resolve_model

    path = resolve_model(spec)
    header = read_header(path)
    kind = create_model(header["model"], **json.loads(header["model_config"])).output_kind
    model_id = path.name if path.parent == models_dir() else str(path)
    return model_id, header.get("tables_fingerprint", ""), kind


def _check_destination(cfg: RunConfig) -> None:
    """Fail before any work when DST cannot be written to: a missing bucket says so."""
    if cfg.format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {cfg.format!r}")
    if cfg.src.rstrip("/") == cfg.dst.rstrip("/"):
        raise ValueError("SRC and DST must differ: outputs would be listed as inputs next time")
    if not is_s3(cfg.dst):
        os.makedirs(cfg.dst, exist_ok=True)
        return
    from botocore.exceptions import ClientError

    bucket, _ = split_s3(cfg.dst)
    try:
        s3_client(cfg.storage).head_bucket(Bucket=bucket)
    except ClientError as e:
        raise FileNotFoundError(f"destination bucket {bucket!r} is not reachable: {e}") from e


def _single_local_node() -> bool:
    """Whether the job runs on one node, this driver's, of a Ray not joined through
    ``RAY_ADDRESS`` (an autoscaling cluster's head may be alone at first)."""
    import ray

    alive = [n for n in ray.nodes() if n["Alive"]]
    here = ray.get_runtime_context().get_node_id()
    return len(alive) == 1 and alive[0]["NodeID"] == here and not os.environ.get("RAY_ADDRESS")


def _check_fits(cfg: RunConfig, cpus: float) -> None:
    """On a single local node a task that can never fit would hang the job: refuse it."""
    need = cfg.workers * cfg.cpus_per_worker + cfg.cpus_per_task
    if need > cpus:
        raise ValueError(
            f"{cfg.workers} model actor(s) of {cfg.cpus_per_worker} CPU and a task of "
            f"{cfg.cpus_per_task} CPU need {need:g} CPUs, this machine has {cpus:g}: "
            "lower --cpus-per-task or --cpus-per-worker"
        )


def _plan(cfg: RunConfig, manifest: Manifest, work: Path) -> Plan:
    items = iter_items(cfg.src, cfg.storage)
    if cfg.limit is not None:
        items = islice(items, cfg.limit)
    plan = plan_inputs(items, cfg.dst, cfg.format, work, cfg.video_codec)
    if cfg.resume:
        return resume(plan, manifest)
    manifest.clear()
    return plan


def run(cfg: RunConfig) -> dict[str, Any]:
    """Colorize SRC into DST on the caller's Ray; returns the summary (also
    ``DST/_manifest/summary.json``)."""
    from pipeline.config import to_dict

    _check_destination(cfg)
    from colorization.shipped import inference_size

    cfg = replace(cfg, size=inference_size(cfg.model, cfg.size))  # saved with the run
    t_start = time.perf_counter()
    run_id = time.strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}"
    model_id, fingerprint, kind = _model_facts(cfg.model)
    manifest = Manifest(cfg.dst, run_id, cfg.storage, cfg.shard_size)
    with tempfile.TemporaryDirectory(prefix="colorize-run-") as work:
        plan = _plan(cfg, manifest, Path(work))
        config = yaml.safe_dump(to_dict(cfg), sort_keys=False).encode()
        write_bytes(manifest.uri(f"run-{run_id}.yaml"), config, cfg.storage)
        for rows in decided_rows(plan, model_id, run_id):
            manifest.write_rows(rows)
        collector = Collector(plan, manifest)
        steady = SteadyRate(0)
        if plan.n_todo:
            try:
                blocks, n_images = write_plan_blocks(plan, manifest, cfg.task_batch_size)
                videos, _ = write_plan_blocks(plan, manifest, VIDEO_BLOCK_ROWS, videos=True)
                steady = SteadyRate(n_images)
                if blocks:
                    fin = _Finish(cfg, model_id, fingerprint, kind)
                    _process(cfg, blocks, fin, collector, steady)
                if videos:
                    process_videos(cfg, videos, run_id, model_id, fingerprint, collector.add)
            finally:
                manifest.remove_plan()
        counts = finish(plan, manifest, collector, model_id)
    elapsed = time.perf_counter() - t_start
    rate = steady.rate()
    summary = {
        "run_id": run_id,
        "listed": plan.listed,
        "processed": plan.n_todo,
        "carried_over": plan.n_carried,
        **{s: counts.get(s, 0) for s in ("ok", "error", "skipped")},
        "seconds": round(elapsed, 2),
        "images_per_s": round(plan.n_todo / elapsed, 2) if elapsed else None,
        "steady_images_per_s": round(rate, 2) if rate else None,  # see SteadyRate
        "manifest": manifest.final_uri,
        "model_id": model_id,
    }
    write_bytes(manifest.uri("summary.json"), json.dumps(summary, indent=2).encode(), cfg.storage)
    return summary


def _process(
    cfg: RunConfig,
    blocks: list[str],
    fin: _Finish,
    collector: Collector,
    steady: SteadyRate,
) -> None:
    """The Ray Data pipeline over the plan's blocks (a decode task each), its rows streamed
    into ``collector``, their arrivals into ``steady``."""
    import ray
    from ray.data import ActorPoolStrategy, DataContext, ExecutionResources, TaskPoolStrategy
    from tqdm import tqdm

    from pipeline.cluster import require_ray, task_slot_options

    require_ray("the archive job")
    if _single_local_node():
        _check_fits(cfg, ray.cluster_resources().get("CPU", 0.0))
    slot = task_slot_options()
    decode = _Decode(cfg)
    storage = cfg.storage
    tasks = TaskPoolStrategy(size=cfg.task_concurrency) if cfg.task_concurrency else None
    ctx = DataContext.get_current().copy()  # the job's settings; the caller's stay as they are
    ctx.enable_progress_bars = False
    if cfg.in_flight_mb:
        ctx.execution_options.resource_limits = ExecutionResources(
            object_store_memory=cfg.in_flight_mb * 2**20
        )
    with DataContext.current(ctx):
        ds = ray.data.from_items([{"block": u} for u in blocks], override_num_blocks=len(blocks))
        task = {"num_cpus": cfg.cpus_per_task, **slot, "compute": tasks}

        def decode_block(batch: dict) -> Iterator[dict]:
            """A plan block's rows, decoded ``task_batch_size`` at a time (a large archive's
            blocks hold more: MAX_BLOCKS), each batch streamed out as it is done."""
            rows = read_plan_blocks(batch["block"], storage)
            for lo in range(0, len(rows["source_uri"]), cfg.task_batch_size):
                yield decode({k: v[lo : lo + cfg.task_batch_size] for k, v in rows.items()})

        ds = ds.map_batches(
            decode_block,
            batch_size=None,  # a plan block per task
            batch_format="numpy",
            **task,
            # task retries on a lost worker; an argument actors do not take, so Ray Data
            # never fuses decoding into the model actors (it would run serially there)
            max_retries=5,
        )
        ds = ds.map_batches(
            Colorizer,
            fn_constructor_kwargs={"cfg": cfg},
            compute=ActorPoolStrategy(size=cfg.workers),
            batch_size=cfg.batch_size,
            num_cpus=cfg.cpus_per_worker,
            num_gpus=cfg.gpus_per_worker,
            batch_format="pyarrow",
        )
        ds = ds.map_batches(
            lambda b: fin(b),
            batch_size=None,  # a model task's output block per task
            batch_format="numpy",
            **task,
        )
        bar = tqdm(total=steady.total, unit="img", disable=not cfg.progress, smoothing=0.1)
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            collector.add(batch)
            steady.arrived(collector.rows)
            bar.update(batch.num_rows)
            bar.set_postfix(collector.counts)
        bar.close()


@dataclass
class SteadyRate:
    """Images/s while the pipeline is full: from the arrival of the 10th to that of the 90th
    percentile row (Ray's start, the model load and the last batches' drain left out); kept
    as it goes, whatever the archive's size."""

    total: int
    batches: int = 0
    lo: tuple[float, int, int] | None = None  # (time, rows so far, batches so far)
    hi: tuple[float, int, int] | None = None

    def arrived(self, rows: int) -> None:
        self.batches += 1
        now = (time.perf_counter(), rows, self.batches)
        if self.lo is None and rows >= 0.1 * self.total:
            self.lo = now
        if self.hi is None and rows >= 0.9 * self.total:
            self.hi = now

    def rate(self) -> float | None:
        lo, hi = self.lo, self.hi
        if lo is None or hi is None or hi[2] - lo[2] < 4:  # too few arrivals to tell
            return None
        return (hi[1] - lo[1]) / (hi[0] - lo[0])
