"""Stage 3: mass colorization of an archive (Ray Data), resumable, one manifest row per input.

list SRC (folder, glob, ``s3://`` prefix, parquet/CSV manifest) -> plan (output key per
input; keys outside DST refused, colliding outputs skipped; with ``resume``, inputs already
finished in DST's manifest are carried over) -> Ray Data:

1. ``_Decode`` (tasks): read bytes (retried by botocore), decode safely (pixel limit, EXIF
   orientation), the image's full-resolution L and the ``size`` x ``size`` L the model sees;
2. ``Colorizer`` (an actor pool; the model is loaded once per actor; CPU or GPU; batched):
   the chroma at the model's resolution;
3. ``_Finish`` (tasks): chroma upsampled and joined with the image's own L, alpha kept where
   the format holds it, encoded, written whole (temp file + rename, or one S3 PUT);

-> the driver collects one row per input and writes manifest shards ``DST/_manifest/
shard-<run>-<n>.parquet``, each followed by its completion marker ``.json`` (img2dataset's
convention); at the end ``DST/manifest.parquet`` holds exactly one row per listed input.
Every failure is a row (status ``error`` and the reason), never a crashed job; a killed worker
is retried by Ray (actors restart, tasks re-run) and its rows are not lost.
"""

from __future__ import annotations

import io
import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from PIL import Image

from colorization.color import lightness_u8
from colorization.imageio import DEFAULT_MAX_PIXELS, decode_image
from colorization.metrics import colorfulness
from colorization.pixels import finish_np, lightness_np, pixels_u8
from colorization.shipped import DEFAULT_MODEL
from pipeline.sources import (
    Item,
    StorageOptions,
    is_s3,
    join_uri,
    list_items,
    read_bytes,
    s3_client,
    split_s3,
    write_bytes,
)

FORMATS = {"jpeg": ("JPEG", ".jpg"), "png": ("PNG", ".png"), "webp": ("WEBP", ".webp")}
MANIFEST_DIR = "_manifest"
TASK_SLOT = "colorize_task_slot"  # the local node's resource that RunConfig.task_slots sets
MANIFEST = "manifest.parquet"
MANIFEST_SCHEMA = pa.schema(
    [
        ("source_uri", pa.string()),
        ("output_uri", pa.string()),
        ("status", pa.string()),  # ok / error / skipped
        ("error", pa.string()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("mode", pa.string()),
        ("model_id", pa.string()),
        ("tables_fingerprint", pa.string()),
        ("seconds", pa.float64()),  # this input's share of decode + model + finish time
        ("colorfulness", pa.float64()),  # of the output (Hasler-Suesstrunk, |rg|,|yb| form)
        ("run_id", pa.string()),
    ]
)


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
    size: int = 256  # the model's input side
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
    # decode and finish tasks running at once when this run starts its own Ray on this
    # machine (a resource of the node it starts; 0: no such limit). 1: they take turns in one
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


def _row(source_uri: str, output_uri: str = "", **kw: Any) -> dict[str, Any]:
    row = {f.name: None for f in MANIFEST_SCHEMA}
    row.update({"source_uri": source_uri, "output_uri": output_uri, "status": "ok", "error": ""})
    row.update(kw)
    return row


# --- plan -------------------------------------------------------------------------------------
def output_key(key: str, fmt: str) -> str:
    """The output's key: the input's relative key with the format's extension."""
    p = PurePosixPath(key)
    return str(p.with_suffix(FORMATS[fmt][1])) if p.suffix else key + FORMATS[fmt][1]


def plan(items: list[Item], cfg: RunConfig) -> tuple[list[dict], list[dict]]:
    """(rows to process, rows already decided: refused keys and colliding outputs)."""
    todo, decided, taken = [], [], {}
    for it in items:
        try:
            out = join_uri(cfg.dst, output_key(it.key, cfg.format))
        except ValueError as e:
            decided.append(_row(it.uri, status="error", error=str(e)))
            continue
        if out in taken:
            decided.append(
                _row(it.uri, status="skipped", error=f"output {out} is also that of {taken[out]}")
            )
            continue
        taken[out] = it.uri
        todo.append({"source_uri": it.uri, "output_uri": out})
    return todo, decided


# --- manifest shards --------------------------------------------------------------------------
def _manifest_uri(cfg: RunConfig, name: str) -> str:
    return f"{cfg.dst.rstrip('/')}/{MANIFEST_DIR}/{name}"


def _table_bytes(rows: list[dict]) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA), buf)
    return buf.getvalue()


def write_shard(cfg: RunConfig, run_id: str, n: int, rows: list[dict]) -> str:
    """A shard of manifest rows, then its completion marker (readers trust marked shards)."""
    name = f"shard-{run_id}-{n:05d}"
    write_bytes(_manifest_uri(cfg, f"{name}.parquet"), _table_bytes(rows), cfg.storage)
    stats = {"rows": len(rows), **Counter(r["status"] for r in rows)}
    write_bytes(_manifest_uri(cfg, f"{name}.json"), json.dumps(stats).encode(), cfg.storage)
    return name


def finished_rows(cfg: RunConfig) -> dict[str, dict]:
    """The newest row per source URI over DST's completed manifest shards."""
    try:
        listed = list_items(_manifest_uri(cfg, ""), cfg.storage)
    except FileNotFoundError:
        return {}
    uris = {it.uri for it in listed}
    rows: dict[str, dict] = {}
    shards = sorted(u for u in uris if u.endswith(".parquet") and u[:-8] + ".json" in uris)
    for uri in shards:  # run ids sort in time order: newer rows replace older ones
        table = pq.read_table(io.BytesIO(read_bytes(uri, cfg.storage)))
        for r in table.to_pylist():
            rows[r["source_uri"]] = r
    return rows


def _clear_manifest(cfg: RunConfig) -> None:
    if is_s3(cfg.dst):
        bucket, prefix = split_s3(_manifest_uri(cfg, ""))
        client = s3_client(cfg.storage)
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                client.delete_object(Bucket=bucket, Key=obj["Key"])
    else:
        d = os.path.join(cfg.dst, MANIFEST_DIR)
        if os.path.isdir(d):
            for name in os.listdir(d):
                if name.startswith("shard-"):
                    os.remove(os.path.join(d, name))


# --- the Ray Data stages ----------------------------------------------------------------------
def _rows_of(batch: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    keys = list(batch)
    return [dict(zip(keys, vals, strict=True)) for vals in zip(*batch.values(), strict=True)]


def _columns(rows: list[dict[str, Any]], keys: list[str]) -> dict[str, list]:
    return {k: [r[k] for r in rows] for k in keys}


_PASS = ["source_uri", "output_uri", "status", "error", "width", "height", "mode", "seconds"]


class _Decode:
    """Read + decode (tasks): the 8-bit pixels the L is computed from (the finish stage
    computes the full-resolution L again from them: four times less data to carry than the
    float L) and the ``size`` x ``size`` L the model sees. Failed rows carry their error."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        out = []
        for r in _rows_of(batch):
            t0 = time.perf_counter()
            row = {**_row(r["source_uri"], r["output_uri"]), "pixels": b"", "small": None}
            row["alpha"] = b""
            try:
                im = decode_image(
                    read_bytes(r["source_uri"], self.cfg.storage), self.cfg.max_pixels
                )
                row.update(width=im.width, height=im.height, mode=im.mode)
                pixels = pixels_u8(im)
                small = lightness_np(pixels, self.cfg.size)[1]
                row.update(pixels=pixels.tobytes(), small=small)
                if "A" in im.getbands() and self.cfg.format != "jpeg":
                    row["alpha"] = im.getchannel("A").tobytes()
            except Exception as e:  # noqa: BLE001 - every input gets a row
                row.update(status="error", error=_message(e, "read/decode"))
            if row["small"] is None:
                row["small"] = np.zeros((self.cfg.size, self.cfg.size), np.float32)
            row["seconds"] = time.perf_counter() - t0
            out.append(row)
        return _columns(out, [*_PASS, "pixels", "small", "alpha"])


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    """Values back to the manifest's types (numpy batches turn a missing value into NaN)."""
    out = {}
    for k, v in row.items():
        missing = v is None or (isinstance(v, (float, np.floating)) and np.isnan(v))
        t = MANIFEST_SCHEMA.field(k).type
        if missing:
            out[k] = None
        elif pa.types.is_integer(t):
            out[k] = int(v)
        elif pa.types.is_floating(t):
            out[k] = float(v)
        else:
            out[k] = str(v)
    return out


def _message(e: BaseException, stage: str) -> str:
    text = str(e) or type(e).__name__
    return text if type(e).__name__ == "DecodeError" else f"{stage}: {type(e).__name__}: {text}"


def actor_threads(cfg: RunConfig) -> int:
    """Torch threads per model actor: ``threads_per_worker``, else this node's cores shared
    among the actors (a local run's actors all run here; cluster configs set it)."""
    return cfg.threads_per_worker or max(1, (os.cpu_count() or 1) // max(1, cfg.workers))


class Colorizer:
    """The model stage: one model per actor, batched; the chroma at the model's resolution.

    Arrow in, Arrow out: only the model's input (``small``) and the row states are read; the
    columns the model does not use (the 8-bit pixels above all) pass through the actor without
    being copied into Python objects, so its heap does not churn with the images' size."""

    def __init__(self, cfg: RunConfig):
        import torch  # only the model actors import torch: the tasks' workers stay smaller

        from colorization.inference import model_chroma
        from colorization.shipped import load

        self.cfg = cfg
        use_gpu = cfg.gpus_per_worker > 0 and torch.cuda.is_available()
        self.device = torch.device("cuda" if use_gpu else "cpu")
        torch.set_num_threads(actor_threads(cfg))
        self.model, self.table, _ = load(cfg.model, self.device)
        # the chroma's shape (rows that failed upstream get zeros of it: one tensor column)
        probe = torch.zeros((1, 1, cfg.size, cfg.size), device=self.device)
        self.chroma_shape = tuple(model_chroma(self.model, probe, self.table).shape[1:])

    def __call__(self, batch: pa.Table) -> pa.Table:
        import torch
        from ray.data.extensions import ArrowTensorArray

        from colorization.inference import model_chroma

        t0 = time.perf_counter()
        status = batch.column("status").to_pylist()
        error = batch.column("error").to_pylist()
        ok = [i for i, s in enumerate(status) if s == "ok"]
        chroma = np.zeros((len(status), *self.chroma_shape), np.float32)
        if ok:
            small = np.concatenate([c.to_numpy() for c in batch.column("small").chunks])
            try:
                pred = model_chroma(
                    self.model,
                    torch.from_numpy(small[ok])[:, None].to(self.device),
                    self.table,
                    self.cfg.temperature,
                    self.cfg.saturation,
                )
                chroma[ok] = pred.float().cpu().numpy()
            except Exception as e:  # noqa: BLE001 - e.g. out of GPU memory: the rows say so
                for i in ok:
                    status[i], error[i] = "error", _message(e, "model")
        share = (time.perf_counter() - t0) / max(1, len(ok))
        seconds = batch.column("seconds").to_numpy().astype(np.float64)
        seconds[ok] += share
        out = batch.drop_columns(["small", "status", "error", "seconds"])
        for name, col in [
            ("status", pa.array(status, pa.string())),
            ("error", pa.array(error, pa.string())),
            ("seconds", pa.array(seconds)),
            ("chroma", ArrowTensorArray.from_numpy(chroma)),
        ]:
            out = out.append_column(name, col)
        return out


class _Finish:
    """Recombine at full resolution, encode, write whole; the manifest row (tasks)."""

    def __init__(self, cfg: RunConfig, model_id: str, fingerprint: str, kind: str):
        self.cfg, self.model_id, self.fingerprint, self.kind = cfg, model_id, fingerprint, kind
        self.run_id = ""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        out = []
        for r in _rows_of(batch):
            t0 = time.perf_counter()
            row = _row(r["source_uri"])
            row.update(_clean({k: r[k] for k in _PASS}))
            row.update(model_id=self.model_id, tables_fingerprint=self.fingerprint)
            if row["status"] == "ok":
                try:
                    row["colorfulness"] = self._write(r)
                except Exception as e:  # noqa: BLE001 - every input gets a row
                    row.update(status="error", error=_message(e, "write"))
            row["seconds"] = float(row["seconds"]) + time.perf_counter() - t0
            if row["status"] != "ok":
                row["output_uri"] = ""
            out.append(row)
        return _columns(out, [f.name for f in MANIFEST_SCHEMA if f.name != "run_id"])

    def _write(self, r: dict[str, Any]) -> float:
        w, h = int(r["width"]), int(r["height"])
        pixels = np.frombuffer(r["pixels"], np.uint8)
        pixels = pixels.reshape((h, w) if pixels.size == w * h else (h, w, 3))
        alpha = None
        if len(r["alpha"]):
            alpha = Image.frombytes("L", (w, h), bytes(r["alpha"]))
        chroma = np.asarray(r["chroma"], np.float32)
        im = finish_np(lightness_u8(pixels), chroma, self.kind, alpha)
        fmt = FORMATS[self.cfg.format][0]
        buf = io.BytesIO()
        if fmt == "PNG":
            im.save(buf, fmt, compress_level=1)
        else:
            im.save(buf, fmt, quality=self.cfg.quality)
        write_bytes(r["output_uri"], buf.getvalue(), self.cfg.storage)
        return colorfulness(np.asarray(im)[::2, ::2, :3])


# --- the job ----------------------------------------------------------------------------------
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
    if not is_s3(cfg.dst):
        os.makedirs(cfg.dst, exist_ok=True)
        return
    from botocore.exceptions import ClientError

    bucket, _ = split_s3(cfg.dst)
    try:
        s3_client(cfg.storage).head_bucket(Bucket=bucket)
    except ClientError as e:
        raise FileNotFoundError(f"destination bucket {bucket!r} is not reachable: {e}") from e


def _check_fits(cfg: RunConfig, cpus: float) -> None:
    need = cfg.workers * cfg.cpus_per_worker + cfg.cpus_per_task
    if need > cpus:
        raise ValueError(
            f"{cfg.workers} model actor(s) of {cfg.cpus_per_worker} CPU and a task of "
            f"{cfg.cpus_per_task} CPU need {need:g} CPUs, this machine has {cpus:g}: "
            "lower --cpus-per-task or --cpus-per-worker"
        )


def run(cfg: RunConfig) -> dict[str, Any]:
    """Colorize SRC into DST; returns the summary (also ``DST/_manifest/summary.json``)."""
    import ray
    from ray.data import ActorPoolStrategy, ExecutionResources, TaskPoolStrategy

    from pipeline.config import to_dict

    if cfg.format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {cfg.format!r}")
    if cfg.src.rstrip("/") == cfg.dst.rstrip("/"):
        raise ValueError("SRC and DST must differ: outputs would be listed as inputs next time")
    _check_destination(cfg)
    t_start = time.perf_counter()
    run_id = time.strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}"
    model_id, fingerprint, kind = _model_facts(cfg.model)
    items = list_items(cfg.src, cfg.storage)
    if cfg.limit is not None:
        items = items[: cfg.limit]
    todo, decided = plan(items, cfg)
    carried: dict[str, dict] = {}
    if cfg.resume:
        done = finished_rows(cfg)
        carried = {
            r["source_uri"]: done[r["source_uri"]]
            for r in todo
            if done.get(r["source_uri"], {}).get("status") == "ok"
        }
        todo = [r for r in todo if r["source_uri"] not in carried]
    else:
        _clear_manifest(cfg)
    write_bytes(
        _manifest_uri(cfg, f"run-{run_id}.yaml"),
        yaml.safe_dump(to_dict(cfg), sort_keys=False).encode(),
        cfg.storage,
    )

    new_rows = [dict(r, model_id=model_id, run_id=run_id) for r in decided]
    arrivals: list[tuple[float, int]] = []
    n_shard = 0
    for i in range(0, len(new_rows), cfg.shard_size):
        write_shard(cfg, run_id, n_shard, new_rows[i : i + cfg.shard_size])
        n_shard += 1
    if todo:
        local = not ray.is_initialized() and not os.environ.get("RAY_ADDRESS")
        slots = {TASK_SLOT: cfg.task_slots} if local and cfg.task_slots else None
        ray.init(
            ignore_reinit_error=True,
            include_dashboard=False,
            log_to_driver=False,
            resources=slots,
        )
        if local:  # this machine alone: a task that can never fit would hang the job
            _check_fits(cfg, ray.cluster_resources().get("CPU", 0.0))
        slot = {"resources": {TASK_SLOT: 1}} if slots else {}
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        if cfg.in_flight_mb:
            ctx.execution_options.resource_limits = ExecutionResources(
                object_store_memory=cfg.in_flight_mb * 2**20
            )
        n_blocks = max(1, min(-(-len(todo) // cfg.task_batch_size), 10_000))
        ds = ray.data.from_items(todo, override_num_blocks=n_blocks)
        decode, fin = _Decode(cfg), _Finish(cfg, model_id, fingerprint, kind)
        tasks = TaskPoolStrategy(size=cfg.task_concurrency) if cfg.task_concurrency else None
        ds = ds.map_batches(
            lambda b: decode(b),
            batch_size=None,  # a block per task: blocks smaller than a batch are not merged
            batch_format="numpy",
            num_cpus=cfg.cpus_per_task,
            **slot,
            compute=tasks,
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
            num_cpus=cfg.cpus_per_task,
            **slot,
            compute=tasks,
            batch_format="numpy",
        )
        collected, n_shard = _collect(ds, cfg, run_id, len(todo), n_shard, arrivals)
        collected, lost = reconcile(todo, collected, model_id, run_id)
        if lost:  # recorded like any other row, so that a resume redoes them
            write_shard(cfg, run_id, n_shard, lost)
        new_rows += collected + lost
    rows = list(carried.values()) + new_rows
    write_bytes(f"{cfg.dst.rstrip('/')}/{MANIFEST}", _table_bytes(rows), cfg.storage)
    elapsed = time.perf_counter() - t_start
    steady = steady_rate(arrivals, len(todo))
    counts = Counter(r["status"] for r in rows)
    summary = {
        "run_id": run_id,
        "listed": len(items),
        "processed": len(todo),
        "carried_over": len(carried),
        **{s: counts.get(s, 0) for s in ("ok", "error", "skipped")},
        "seconds": round(elapsed, 2),
        "images_per_s": round(len(todo) / elapsed, 2) if elapsed else None,
        "steady_images_per_s": round(steady, 2) if steady else None,  # see steady_rate
        "manifest": f"{cfg.dst.rstrip('/')}/{MANIFEST}",
        "model_id": model_id,
    }
    write_bytes(
        _manifest_uri(cfg, "summary.json"), json.dumps(summary, indent=2).encode(), cfg.storage
    )
    return summary


LOST = "no result came back from the pipeline"


def reconcile(
    todo: list[dict], rows: list[dict], model_id: str, run_id: str
) -> tuple[list[dict], list[dict]]:
    """Exactly one row per input, whatever the pipeline returned: (the rows, one per source
    URI, the first kept; an error row for every input it returned nothing for)."""
    seen: dict[str, dict] = {}
    for r in rows:
        seen.setdefault(r["source_uri"], r)
    lost = [
        _row(t["source_uri"], status="error", error=LOST, model_id=model_id, run_id=run_id)
        for t in todo
        if t["source_uri"] not in seen
    ]
    return list(seen.values()), lost


def steady_rate(arrivals: list[tuple[float, int]], total: int) -> float | None:
    """Images/s while the pipeline is full: from the arrival of the 10th to that of the 90th
    percentile row (Ray's start, the model load and the last batches' drain left out)."""
    lo = next((i for i, a in enumerate(arrivals) if a[1] >= 0.1 * total), None)
    hi = next((i for i, a in enumerate(arrivals) if a[1] >= 0.9 * total), None)
    if lo is None or hi is None or hi - lo < 4:  # too few arrivals to tell (a small run)
        return None
    lo, hi = arrivals[lo], arrivals[hi]
    return (hi[1] - lo[1]) / (hi[0] - lo[0])


def _collect(
    ds, cfg: RunConfig, run_id: str, total: int, n_shard: int, arrivals: list
) -> tuple[list[dict], int]:
    """Stream the rows to the driver, writing a manifest shard every ``shard_size`` rows;
    ``arrivals`` gets (time, rows so far) for every batch that arrives. Returns the rows and
    the number the next shard takes."""
    from tqdm import tqdm

    rows: list[dict] = []
    pending: list[dict] = []
    counts: Counter = Counter()
    bar = tqdm(total=total, unit="img", disable=not cfg.progress, smoothing=0.1)
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        arrivals.append((time.perf_counter(), len(rows) + len(pending) + batch.num_rows))
        for r in batch.to_pylist():
            r["run_id"] = run_id
            pending.append(r)
            counts[r["status"]] += 1
        bar.update(batch.num_rows)
        bar.set_postfix(counts)
        while len(pending) >= cfg.shard_size:
            write_shard(cfg, run_id, n_shard, pending[: cfg.shard_size])
            rows += pending[: cfg.shard_size]
            pending = pending[cfg.shard_size :]
            n_shard += 1
    bar.close()
    if pending:
        write_shard(cfg, run_id, n_shard, pending)
        rows += pending
        n_shard += 1
    return rows, n_shard
