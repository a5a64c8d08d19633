"""The archive job's manifest: one row per input, planned, finished, resumed and merged in
driver memory that does not grow with the archive.

Under DST::

    manifest.parquet                         exactly one row per listed input (written last)
    _manifest/shard-<run>-<n>.parquet        rows as they finish, ``shard_size`` at a time,
    _manifest/shard-<run>-<n>.json           ... each followed by its completion marker
    _manifest/plan-<run>/block-<n>.parquet   this run's inputs, a Ray Data block each
                                             (deleted when the run ends)
    _manifest/run-<run>.yaml, summary.json   the run's config and summary

The driver never holds the archive's rows: listing, planning, resume and the final merge
stream batches through parquet files in a local scratch folder. The steps that must see every
row with one key together (two inputs claiming one output, an input's newest finished row, an
input the pipeline returned nothing for) hash the key into :data:`BUCKET_ROWS`-row buckets and
read one bucket at a time; counts are aggregated batch by batch.

1. :func:`plan_inputs`: listed inputs -> output URIs; keys outside DST refused, an output
   claimed twice kept by the first listed input (the others ``skipped``);
2. :func:`resume`: inputs whose newest row in DST's completed shards is ``ok`` are carried
   over, the others stay to do;
3. :func:`write_plan_blocks`: what is left, as the pipeline's input blocks;
4. :class:`Collector`: the pipeline's rows as they arrive -> shards;
5. :func:`finish`: an error row for every input the pipeline returned nothing for, then
   ``manifest.parquet`` merged from the carried, decided and collected rows.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from colorization.videofiles import DEFAULT_CODEC, VIDEO_SUFFIXES, is_video, output_suffix
from pipeline.sources import (
    Item,
    StorageOptions,
    is_s3,
    iter_items,
    join_uri,
    read_bytes,
    s3_client,
    split_s3,
    write_bytes,
    write_file,
)

FORMATS = {"jpeg": ("JPEG", ".jpg"), "png": ("PNG", ".png"), "webp": ("WEBP", ".webp")}
MANIFEST = "manifest.parquet"
MANIFEST_DIR = "_manifest"
LOST = "no result came back from the pipeline"
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
        # a video's (null for an image): frames written, frames per second, seconds of video,
        # shots (1 + the cuts found), Lai et al.'s warping error (RGB) and the same on the
        # colour alone (ab), over the frame pairs within each segment
        ("frames", pa.int64()),
        ("fps", pa.float64()),
        ("duration", pa.float64()),
        ("shots", pa.int64()),
        ("flicker", pa.float64()),
        ("flicker_ab", pa.float64()),
        ("run_id", pa.string()),
    ]
)
#: a row as the pipeline returns it (the driver adds the run id)
ROW_SCHEMA = pa.schema([f for f in MANIFEST_SCHEMA if f.name != "run_id"])
#: an input to process: its position in the listing, where it is, where its output goes
PLAN_SCHEMA = pa.schema(
    [("pos", pa.int64()), ("source_uri", pa.string()), ("output_uri", pa.string())]
)
LISTING_SCHEMA = pa.schema([("pos", pa.int64()), ("source_uri", pa.string()), ("key", pa.string())])
#: the most rows a step holds at once (one bucket: about 100 MB of Arrow at 100-byte URIs)
BUCKET_ROWS = 500_000
#: rows per batch read from or written to the scratch files
BATCH_ROWS = 65_536
#: the most plan blocks (Ray Data input blocks, a decode task each) one run writes
MAX_BLOCKS = 10_000


def output_key(key: str, fmt: str, codec: str = DEFAULT_CODEC) -> str:
    """The output's key: an image's relative key with the format's extension, a video's with
    the container its codec is written in (:func:`colorization.videofiles.output_suffix`)."""
    p = PurePosixPath(key)
    if is_video(key):
        return str(p.with_suffix(output_suffix(key, codec)))
    return str(p.with_suffix(FORMATS[fmt][1])) if p.suffix else key + FORMATS[fmt][1]


def conform(table: pa.Table) -> pa.Table:
    """Rows of an earlier version's manifest (columns added since are null) as
    :data:`MANIFEST_SCHEMA`."""
    for f in MANIFEST_SCHEMA:
        if f.name not in table.column_names:
            table = table.append_column(f.name, pa.nulls(table.num_rows, f.type))
    return table.select(MANIFEST_SCHEMA.names).cast(MANIFEST_SCHEMA)


def blank_row(source_uri: str, output_uri: str = "", **kw: Any) -> dict[str, Any]:
    """A manifest row: ``ok`` with no error unless ``kw`` says otherwise, the rest None."""
    row = {f.name: None for f in MANIFEST_SCHEMA}
    row.update({"source_uri": source_uri, "output_uri": output_uri, "status": "ok", "error": ""})
    row.update(kw)
    return row


def rows_table(source_uri: pa.Array | pa.ChunkedArray, **values: Any) -> pa.Table:
    """Manifest rows, one per URI: each of ``values`` a column or one value for every row,
    ``output_uri`` and ``error`` empty and the other columns null unless given."""
    n = len(source_uri)
    values = {"output_uri": "", "error": "", **values, "source_uri": source_uri}
    columns = []
    for f in MANIFEST_SCHEMA:
        v = values.get(f.name)
        if isinstance(v, pa.Array | pa.ChunkedArray):
            columns.append(v.cast(f.type))
        else:
            columns.append(pa.nulls(n, f.type) if v is None else pa.repeat(pa.scalar(v, f.type), n))
    return pa.Table.from_arrays(columns, schema=MANIFEST_SCHEMA)


def status_counts(table: pa.Table) -> Counter:
    """Rows per status, aggregated by pyarrow."""
    if not table.num_rows:
        return Counter()
    counts = pc.value_counts(table.column("status"))
    values, n = counts.field("values").to_pylist(), counts.field("counts").to_pylist()
    return Counter(dict(zip(values, n, strict=True)))


# --- scratch files ------------------------------------------------------------------------------
def _batches(path: Path | None, batch_rows: int = BATCH_ROWS) -> Iterator[pa.Table]:
    if path is None or not path.exists():
        return
    for batch in pq.ParquetFile(path).iter_batches(batch_rows):
        yield pa.Table.from_batches([batch])


class Buckets:
    """Rows hashed on one string column into ``n`` parquet files: every row with one value lands
    in one file, so a step that must see them together reads a file at a time."""

    def __init__(self, folder: Path, n: int, key: str, schema: pa.Schema):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.n, self.key, self.schema = folder, n, key, schema
        self.rows = 0
        self._writers: dict[int, pq.ParquetWriter] = {}

    def path(self, b: int) -> Path:
        return self.folder / f"bucket-{b:05d}.parquet"

    def add(self, table: pa.Table) -> None:
        if not table.num_rows:
            return
        table = table.select(self.schema.names).cast(self.schema)
        keys = table.column(self.key).to_pylist()
        ids = np.fromiter((zlib.crc32(k.encode()) % self.n for k in keys), np.int64, len(keys))
        order = np.argsort(ids, kind="stable")
        for part in np.split(order, np.flatnonzero(np.diff(ids[order])) + 1):
            b = int(ids[part[0]])
            if b not in self._writers:
                self._writers[b] = pq.ParquetWriter(self.path(b), self.schema)
            self._writers[b].write_table(table.take(part))
        self.rows += table.num_rows

    def close(self) -> None:
        for w in self._writers.values():
            w.close()
        self._writers.clear()

    def read(self, b: int) -> pa.Table:
        p = self.path(b)
        return pq.read_table(p) if p.exists() else self.schema.empty_table()


def _first_per_key(table: pa.Table, key: str, order: str, newest: bool = False) -> pa.Table:
    """``table`` sorted by ``key`` then ``order`` with a boolean column ``first``: the first
    row of each key (the one of the lowest ``order``, of the highest with ``newest``)."""
    t = table.sort_by([(key, "ascending"), (order, "descending" if newest else "ascending")])
    first = np.ones(t.num_rows, bool)
    if t.num_rows > 1:
        k = t.column(key).combine_chunks()
        first[1:] = pc.not_equal(k[1:], k[:-1]).to_numpy(zero_copy_only=False)
    return t.append_column("first", pa.array(first))


# --- plan -------------------------------------------------------------------------------------
@dataclass
class Plan:
    """What a run does, as parquet files in its scratch folder ``work``: ``todo`` the inputs to
    process (:data:`PLAN_SCHEMA`, hashed on ``source_uri``), ``decided`` the rows decided before
    any work (refused keys, outputs claimed twice), ``carried`` the finished rows a resume
    keeps."""

    work: Path
    listed: int
    todo: Buckets
    decided: Path
    n_decided: int
    carried: Path | None = None
    n_carried: int = 0

    @property
    def buckets(self) -> int:
        return self.todo.n

    @property
    def n_todo(self) -> int:
        return self.todo.rows


def write_listing(items: Iterable[Item], path: Path) -> int:
    """The listed inputs into one parquet file (:data:`LISTING_SCHEMA`), a batch at a time, in
    their order; returns how many."""
    n = 0
    with pq.ParquetWriter(path, LISTING_SCHEMA) as writer:
        uris: list[str] = []
        keys: list[str] = []

        def flush() -> None:
            pos = pa.array(np.arange(n - len(uris), n, dtype=np.int64))
            writer.write_table(pa.table([pos, uris, keys], schema=LISTING_SCHEMA))
            uris.clear()
            keys.clear()

        for it in items:
            uris.append(it.uri)
            keys.append(it.key)
            n += 1
            if len(uris) == BATCH_ROWS:
                flush()
        if uris:
            flush()
    return n


def plan_inputs(
    items: Iterable[Item], dst: str, fmt: str, work: Path, codec: str = DEFAULT_CODEC
) -> Plan:
    """List ``items`` into ``work`` and decide each one's output under ``dst`` (images in
    ``fmt``, videos in ``codec``'s container)."""
    work.mkdir(parents=True, exist_ok=True)
    listed = write_listing(items, work / "listing.parquet")
    n = max(1, math.ceil(listed / BUCKET_ROWS))
    by_output = Buckets(work / "by-output", n, "output_uri", PLAN_SCHEMA)
    decided_path = work / "decided.parquet"
    n_decided = 0
    with pq.ParquetWriter(decided_path, MANIFEST_SCHEMA) as decided:
        for batch in _batches(work / "listing.parquet"):
            outs, errors = [], []
            for key in batch.column("key").to_pylist():
                try:
                    outs.append(join_uri(dst, output_key(key, fmt, codec)))
                    errors.append(None)
                except ValueError as e:
                    outs.append(None)
                    errors.append(str(e))
            out = pa.array(outs, pa.string())
            ok = pc.is_valid(out)
            refused = pc.invert(ok)
            if pc.any(refused).as_py():
                err = pa.array(errors, pa.string()).filter(refused)
                src = batch.column("source_uri").filter(refused)
                decided.write_table(rows_table(src, status="error", error=err))
                n_decided += len(src)
            by_output.add(batch.drop_columns(["key"]).append_column("output_uri", out).filter(ok))
        by_output.close()

        todo = Buckets(work / "todo", n, "source_uri", PLAN_SCHEMA)
        for b in range(n):
            t = _first_per_key(by_output.read(b), "output_uri", "pos")
            first = t.column("first").to_numpy()
            if not first.all():  # later inputs with an output already taken: skipped
                claimer = np.maximum.accumulate(np.where(first, np.arange(len(first)), 0))
                later = pa.array(~first)
                out = t.column("output_uri").filter(later)
                by = t.column("source_uri").take(pa.array(claimer)).filter(later)
                why = pc.binary_join_element_wise("output ", out, " is also that of ", by, "")
                src = t.column("source_uri").filter(later)
                decided.write_table(rows_table(src, status="skipped", error=why))
                n_decided += len(src)
            todo.add(t.filter(t.column("first")).drop_columns(["first"]))
        todo.close()
    shutil.rmtree(work / "by-output")
    return Plan(work, listed, todo, decided_path, n_decided)


# --- DST's manifest folder ------------------------------------------------------------------------
@dataclass
class Manifest:
    """DST's manifest folder as one run writes it: shards numbered in the order written."""

    dst: str
    run_id: str
    storage: StorageOptions = StorageOptions()
    shard_size: int = 256
    shards_written: int = 0

    def uri(self, name: str = "") -> str:
        return f"{self.dst.rstrip('/')}/{MANIFEST_DIR}/{name}"

    @property
    def final_uri(self) -> str:
        return f"{self.dst.rstrip('/')}/{MANIFEST}"

    def write_shard(self, table: pa.Table) -> str:
        """One shard of rows, then its completion marker (readers trust marked shards only)."""
        name = f"shard-{self.run_id}-{self.shards_written:06d}"
        buf = io.BytesIO()
        pq.write_table(table.cast(MANIFEST_SCHEMA), buf)
        write_bytes(self.uri(f"{name}.parquet"), buf.getvalue(), self.storage)
        stats = {"rows": table.num_rows, **status_counts(table)}
        write_bytes(self.uri(f"{name}.json"), json.dumps(stats).encode(), self.storage)
        self.shards_written += 1
        return name

    def write_rows(self, table: pa.Table) -> None:
        """Rows as shards of ``shard_size``."""
        for i in range(0, table.num_rows, self.shard_size):
            self.write_shard(table.slice(i, self.shard_size))

    def completed_shards(self) -> list[str]:
        """The URIs of DST's completed shards, oldest first (run ids sort in time order)."""
        names: list[str] = []
        try:
            for it in iter_items(self.uri(), self.storage):
                if "/" not in it.key and it.key.startswith("shard-"):
                    names.append(it.key)
        except FileNotFoundError:
            return []
        marked = {n[: -len(".json")] for n in names if n.endswith(".json")}
        return [
            self.uri(n)
            for n in sorted(names)
            if n.endswith(".parquet") and n[: -len(".parquet")] in marked
        ]

    def _delete(self, prefix: str) -> None:
        """Every object under the manifest folder whose name starts with ``prefix`` (S3)."""
        bucket, key = split_s3(self.uri(prefix))
        client = s3_client(self.storage)
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})

    def clear(self) -> None:
        """A fresh run: earlier runs' shards and plans go (S3: the whole manifest folder)."""
        if is_s3(self.dst):
            self._delete("")
            return
        d = os.path.join(self.dst, MANIFEST_DIR)
        for name in os.listdir(d) if os.path.isdir(d) else []:
            if name.startswith("shard-"):
                os.remove(os.path.join(d, name))
            elif name.startswith("plan-"):
                shutil.rmtree(os.path.join(d, name))

    def plan_prefix(self) -> str:
        return f"plan-{self.run_id}/"

    def remove_plan(self) -> None:
        if is_s3(self.dst):
            self._delete(self.plan_prefix())
        else:
            shutil.rmtree(os.path.join(self.dst, MANIFEST_DIR, self.plan_prefix()), True)


# --- resume -----------------------------------------------------------------------------------
def resume(plan: Plan, manifest: Manifest) -> Plan:
    """``plan`` less the inputs whose newest row in DST's completed shards is ``ok``; those
    rows are carried over as they are."""
    seq_schema = MANIFEST_SCHEMA.append(pa.field("seq", pa.int64()))
    finished = Buckets(plan.work / "finished", plan.buckets, "source_uri", seq_schema)
    for i, uri in enumerate(manifest.completed_shards()):  # older shards first
        table = conform(pq.read_table(io.BytesIO(read_bytes(uri, manifest.storage))))
        seq = pa.array(np.arange(table.num_rows, dtype=np.int64) + (i << 32))
        finished.add(table.append_column("seq", seq))
    finished.close()
    todo = Buckets(plan.work / "todo-resumed", plan.buckets, "source_uri", PLAN_SCHEMA)
    carried_path, n_carried = plan.work / "carried.parquet", 0
    with pq.ParquetWriter(carried_path, MANIFEST_SCHEMA) as carried:
        for b in range(plan.buckets):
            newest = _first_per_key(finished.read(b), "source_uri", "seq", newest=True)
            newest = newest.filter(newest.column("first"))
            done = newest.filter(pc.equal(newest.column("status"), "ok"))
            wanted = plan.todo.read(b)
            is_done = pc.is_in(wanted.column("source_uri"), value_set=done.column("source_uri"))
            keep = done.filter(pc.is_in(done.column("source_uri"), wanted.column("source_uri")))
            carried.write_table(keep.select(MANIFEST_SCHEMA.names))
            n_carried += keep.num_rows
            todo.add(wanted.filter(pc.invert(is_done)))
    todo.close()
    shutil.rmtree(plan.work / "finished")
    shutil.rmtree(plan.todo.folder)
    return Plan(plan.work, plan.listed, todo, plan.decided, plan.n_decided, carried_path, n_carried)


# --- the pipeline's input and output -----------------------------------------------------------
def video_mask(uris: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Which URIs are videos (:func:`colorization.videofiles.is_video`), computed by pyarrow."""
    suffixes = "|".join(s.lstrip(".") for s in VIDEO_SUFFIXES)
    return pc.match_substring_regex(uris, rf"\.({suffixes})$", ignore_case=True)


def write_plan_blocks(
    plan: Plan, manifest: Manifest, min_rows: int, videos: bool = False
) -> tuple[list[str], int]:
    """The images (or with ``videos``, the videos) to process as parquet blocks under DST
    (every worker reads DST), of at least ``min_rows`` rows and at most :data:`MAX_BLOCKS`
    blocks; returns their URIs and how many inputs they hold."""
    rows = max(min_rows, math.ceil(plan.n_todo / MAX_BLOCKS))
    uris: list[str] = []
    pending = PLAN_SCHEMA.empty_table()
    name = "video-block" if videos else "block"
    total = 0

    def put(block: pa.Table) -> None:
        nonlocal total
        buf = io.BytesIO()
        pq.write_table(block.drop_columns(["pos"]), buf)
        uris.append(manifest.uri(f"{manifest.plan_prefix()}{name}-{len(uris):06d}.parquet"))
        write_bytes(uris[-1], buf.getvalue(), manifest.storage)
        total += block.num_rows

    for b in range(plan.buckets):  # each bucket in listing order
        todo = plan.todo.read(b)
        is_video = video_mask(todo.column("source_uri"))
        todo = todo.filter(is_video if videos else pc.invert(is_video))
        pending = pa.concat_tables([pending, todo.sort_by("pos")])
        while pending.num_rows >= rows:
            put(pending.slice(0, rows))
            pending = pending.slice(rows)
    if pending.num_rows:
        put(pending)
    return uris, total


def read_plan_blocks(uris: Iterable[str], storage: StorageOptions) -> dict[str, np.ndarray]:
    """The rows of plan blocks, as the decode stage takes them (a worker's first step)."""
    tables = [pq.read_table(io.BytesIO(read_bytes(str(u), storage))) for u in uris]
    table = pa.concat_tables(tables)
    return {name: np.asarray(table.column(name).to_pylist(), object) for name in table.column_names}


class Collector:
    """The driver's end of the pipeline: rows as they arrive (:data:`ROW_SCHEMA`) -> a shard
    every ``shard_size`` rows, and scratch buckets for :func:`finish` (filled
    :data:`BATCH_ROWS` rows at a time: a row group per arriving batch and bucket would make the
    buckets' footers grow with the archive); ``counts`` per status."""

    def __init__(self, plan: Plan, manifest: Manifest):
        self.manifest = manifest
        self.rows = 0
        self.counts: Counter = Counter()
        schema = MANIFEST_SCHEMA.append(pa.field("seq", pa.int64()))
        self.got = Buckets(plan.work / "collected", plan.buckets, "source_uri", schema)
        self._to_shard: list[pa.Table] = []
        self._to_bucket: list[pa.Table] = []
        self._n_shard = self._n_bucket = 0  # rows waiting in each

    def add(self, batch: pa.Table) -> None:
        n = batch.num_rows
        run_id = pa.repeat(pa.scalar(self.manifest.run_id), n)
        table = batch.select(ROW_SCHEMA.names).cast(ROW_SCHEMA).append_column("run_id", run_id)
        self.counts += status_counts(table)
        seq = pa.array(np.arange(self.rows, self.rows + n, dtype=np.int64))
        self.rows += n
        self._to_bucket.append(table.append_column("seq", seq))
        self._to_shard.append(table)
        self._n_shard += n
        self._n_bucket += n
        self._flush()

    def _flush(self, final: bool = False) -> None:
        size = self.manifest.shard_size
        if self._n_shard >= size or (final and self._n_shard):
            pending = pa.concat_tables(self._to_shard)
            cut = len(pending) if final else len(pending) // size * size
            self.manifest.write_rows(pending.slice(0, cut))
            self._to_shard = [pending.slice(cut)]
            self._n_shard = len(pending) - cut
        if self._n_bucket >= BATCH_ROWS or (final and self._n_bucket):
            self.got.add(pa.concat_tables(self._to_bucket))
            self._to_bucket, self._n_bucket = [], 0

    def close(self) -> None:
        self._flush(final=True)
        self.got.close()


def stamped(table: pa.Table, model_id: str, run_id: str) -> pa.Table:
    """Rows with this run's model and run id."""
    for name, value in (("model_id", model_id), ("run_id", run_id)):
        i = table.schema.get_field_index(name)
        table = table.set_column(i, name, pa.repeat(pa.scalar(value, pa.string()), len(table)))
    return table


def decided_rows(plan: Plan, model_id: str, run_id: str) -> Iterator[pa.Table]:
    for t in _batches(plan.decided):
        yield stamped(t, model_id, run_id)


def finish(plan: Plan, manifest: Manifest, collector: Collector, model_id: str) -> Counter:
    """An error row (:data:`LOST`, in a shard too, so that a resume redoes it) for every input
    the pipeline returned nothing for, then ``DST/manifest.parquet``: the carried rows, the
    decided ones, and the first row the pipeline returned for each input, merged a batch at a
    time. Returns the rows per status."""
    collector.close()
    local = plan.work / MANIFEST
    counts: Counter = Counter()
    with pq.ParquetWriter(local, MANIFEST_SCHEMA) as writer:

        def put(table: pa.Table) -> None:
            writer.write_table(table)
            counts.update(status_counts(table))

        for t in _batches(plan.carried):
            put(t)
        for t in decided_rows(plan, model_id, manifest.run_id):
            put(t)
        for b in range(plan.buckets):
            got = _first_per_key(collector.got.read(b), "source_uri", "seq")
            got = got.filter(got.column("first")).select(MANIFEST_SCHEMA.names)
            todo = plan.todo.read(b).column("source_uri")
            missing = pc.invert(pc.is_in(todo, value_set=got.column("source_uri")))
            lost = rows_table(
                todo.filter(missing),
                status="error",
                error=LOST,
                model_id=model_id,
                run_id=manifest.run_id,
            )
            manifest.write_rows(lost)
            put(got)
            put(lost)
    write_file(local, manifest.final_uri, manifest.storage)
    local.unlink()
    return counts
