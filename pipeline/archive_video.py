"""The archive job's videos: a long film is shared by the model actors, segment by segment.

For each video of the plan (read a plan block at a time, at most ``2 x workers`` videos open at
once, so the driver's memory does not grow with the archive):

1. a probe task reads its frame timestamps (:func:`colorization.video.probe_video`: packets
   only, no decoding) and cuts them into segments of ``video_segment_frames``
   (:func:`~colorization.video.split_segments`);
2. each segment goes to the next free model actor (:class:`VideoWorker`, the model loaded
   once), which reads the source by byte ranges from where the segment's warm-up starts,
   colorizes and stabilizes it, and writes it as a video-only segment file under
   ``DST/_manifest/video-<run>/``; the warm-up frames before a segment's first one carry the
   stabilizer's state across the seam (``colorization/video.py`` says why this leaves no jump);
3. once every segment is done, a join task remuxes them with the source's audio into the
   output (:func:`~colorization.video.join_segments`), written whole (a local rename, or a
   multipart upload that is complete or absent), and removes the segments;
4. the video's manifest row: frames, fps, duration, shots, seconds, colourfulness, flicker;
   a video that cannot be read, or whose frames fail part way, is an ``error`` row with the
   reason and leaves no output (``--resume`` redoes it).

A killed actor is restarted and its segment retried (Ray's actor fault tolerance); a killed
task is retried. Progress: a line per finished segment with the video's frames done, frames
per second and the estimated time left.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from pipeline.archive_workers import _message, actor_threads
from pipeline.manifest import ROW_SCHEMA, blank_row, read_plan_blocks
from pipeline.sources import StorageOptions, delete_prefix, fetch_file, seekable, write_file

if TYPE_CHECKING:
    from colorization.video import Segment, SegmentResult, VideoInfo
    from pipeline.run_stage import RunConfig


# --- the workers (each runs on one video or segment, without Ray in a test) -------------------
def probe(source_uri: str, storage: StorageOptions) -> VideoInfo:
    """The video's :class:`~colorization.video.VideoInfo` (raises ``VideoError``)."""
    from colorization.video import probe_video

    return probe_video(seekable(source_uri, storage))


class VideoWorker:
    """A model actor of the archive's videos: colorizes one segment at a time into a segment
    file under ``DST``."""

    def __init__(self, cfg: RunConfig):
        import torch

        from colorization.shipped import load

        self.cfg = cfg
        use_gpu = cfg.gpus_per_worker > 0 and torch.cuda.is_available()
        self.device = torch.device("cuda" if use_gpu else "cpu")
        torch.set_num_threads(actor_threads(cfg))
        self.model, self.table, _ = load(cfg.model, self.device)

    def segment(
        self, source_uri: str, segment_uri: str, info: VideoInfo, segment: Segment
    ) -> tuple[int, SegmentResult]:
        from colorization.video import StabilizerParams, colorize_segment

        cfg = self.cfg
        with tempfile.TemporaryDirectory(prefix="colorize-segment-") as tmp:
            local = Path(tmp) / "segment.mp4"
            result = colorize_segment(
                seekable(source_uri, cfg.storage), local, info, segment, self.model, self.table,
                temperature=cfg.temperature, saturation=cfg.saturation,
                rebalance_correction=cfg.rebalance_correction,
                stabilize=cfg.video_stabilize, codec=cfg.video_codec, crf=cfg.video_crf,
                pix_fmt=cfg.video_pix_fmt,
                size=cfg.size,
                batch_size=cfg.batch_size, measure=cfg.video_flicker,
                params=StabilizerParams(),
            )  # fmt: skip
            write_file(local, segment_uri, cfg.storage)
        return segment.index, result


def join(
    source_uri: str,
    segment_uris: list[str],
    output_uri: str,
    info: VideoInfo,
    segments: list[Segment],
    storage: StorageOptions,
) -> float:
    """The segments remuxed with the source's audio into ``output_uri``; the segments removed.
    Returns the output's duration (s)."""
    from colorization.video import join_segments

    with tempfile.TemporaryDirectory(prefix="colorize-join-") as tmp:
        local = [
            fetch_file(u, Path(tmp) / f"segment-{i:05d}.mp4", storage)
            for i, u in enumerate(segment_uris)
        ]
        out = Path(tmp) / ("output" + Path(output_uri).suffix)
        duration = join_segments(seekable(source_uri, storage), local, out, info, segments)
        write_file(out, output_uri, storage)
    return duration


def segments_prefix(dst: str, run_id: str, source_uri: str) -> str:
    """Where a video's segment files go while it is colorized (removed by its join)."""
    digest = hashlib.sha1(source_uri.encode()).hexdigest()[:16]
    return f"{dst.rstrip('/')}/_manifest/video-{run_id}/{digest}/"


# --- the driver's loop ---------------------------------------------------------------------------
@dataclass
class _Video:
    """One video in flight: its plan row, then its segments and their results."""

    source_uri: str
    output_uri: str
    started: float = field(default_factory=time.perf_counter)
    info: Any = None
    segments: list = field(default_factory=list)
    results: dict = field(default_factory=dict)  # segment index -> (SegmentResult, its URI)
    running: int = 0  # segments on an actor now
    failed: str | None = None

    @property
    def frames_done(self) -> int:
        return sum(r.frames for r in self.results.values())


def process_videos(
    cfg: RunConfig,
    blocks: list[str],
    run_id: str,
    model_id: str,
    fingerprint: str,
    emit: Callable[[pa.Table], None],
    log: Callable[[str], None] = print,
) -> None:
    """Colorize every video of the plan ``blocks`` on the caller's Ray; each video's manifest
    row (:data:`~pipeline.manifest.ROW_SCHEMA`) goes to ``emit`` as it finishes."""
    import ray

    from colorization.video import split_segments

    task = {"num_cpus": cfg.cpus_per_task, "max_retries": 3}
    probe_task = ray.remote(**task)(probe)
    join_task = ray.remote(**task)(join)
    actor = ray.remote(
        num_cpus=cfg.cpus_per_worker,
        num_gpus=cfg.gpus_per_worker,
        max_restarts=3,
        max_task_retries=3,
    )(VideoWorker)
    workers = [actor.remote(cfg) for _ in range(cfg.workers)]
    idle = deque(workers)
    queue: deque[tuple[_Video, Segment]] = deque()
    pending: dict[Any, tuple[str, _Video, Any]] = {}  # ref -> (what, video, actor or None)
    rows = _plan_rows(blocks, cfg.storage)
    open_videos = 0

    def finish(v: _Video, error: str | None, duration: float | None = None) -> None:
        nonlocal open_videos
        open_videos -= 1
        delete_prefix(segments_prefix(cfg.dst, run_id, v.source_uri), cfg.storage)
        emit(_row(v, error, duration, model_id, fingerprint))
        if cfg.progress:
            what = "ok" if error is None else f"error: {error}"
            log(f"{v.source_uri}: {what} ({time.perf_counter() - v.started:.0f} s)")

    def fail(v: _Video, error: str) -> None:
        """The video's row once none of its segments is running; its queued ones dropped."""
        v.failed = v.failed or error
        queue_without = [(qv, qs) for qv, qs in queue if qv is not v]
        queue.clear()
        queue.extend(queue_without)
        if v.running == 0:
            finish(v, v.failed)

    try:
        while True:
            while open_videos < 2 * cfg.workers and (nxt := next(rows, None)):
                v = _Video(*nxt)
                pending[probe_task.remote(v.source_uri, cfg.storage)] = ("probe", v, None)
                open_videos += 1
            while idle and queue:
                v, seg = queue.popleft()
                w = idle.popleft()
                uri = f"{segments_prefix(cfg.dst, run_id, v.source_uri)}seg-{seg.index:05d}.mp4"
                pending[w.segment.remote(v.source_uri, uri, v.info, seg)] = ("segment", v, (w, uri))
                v.running += 1
            if not pending:
                break
            [ref], _ = ray.wait(list(pending), num_returns=1)
            what, v, extra = pending.pop(ref)
            try:
                value, error = ray.get(ref), None
            except Exception as e:  # noqa: BLE001 - every video gets a row
                value, error = None, _message(_cause(e), what)
            if what == "probe":
                if error is not None:
                    finish(v, error)
                    continue
                v.info = value
                v.segments = split_segments(value.frames, cfg.video_segment_frames)
                queue.extend((v, s) for s in v.segments)
            elif what == "segment":
                w, uri = extra
                idle.append(w)
                v.running -= 1
                if error is not None or v.failed:
                    fail(v, error or v.failed)
                    continue
                v.results[value[0]] = (value[1], uri)
                _progress(cfg, v, log)
                if len(v.results) == len(v.segments):
                    uris = [v.results[s.index][1] for s in v.segments]
                    args = (v.source_uri, uris, v.output_uri, v.info, v.segments, cfg.storage)
                    pending[join_task.remote(*args)] = ("join", v, None)
            else:  # join
                finish(v, error, value)
    finally:
        for w in workers:
            ray.kill(w)


def _cause(e: BaseException) -> BaseException:
    """The worker's own exception inside Ray's wrapper."""
    return getattr(e, "cause", None) or e


def _plan_rows(blocks: Iterable[str], storage: StorageOptions) -> Iterator[tuple[str, str]]:
    """(source, output) of every video of the plan, a block read at a time."""
    for uri in blocks:
        rows = read_plan_blocks([uri], storage)
        yield from zip(rows["source_uri"], rows["output_uri"], strict=True)


def _progress(cfg: RunConfig, v: _Video, log: Callable[[str], None]) -> None:
    if not cfg.progress:
        return
    done, total = v.frames_done, v.info.frames
    fps = done / max(time.perf_counter() - v.started, 1e-9)
    left = (total - done) / fps if fps else float("nan")
    log(
        f"{v.source_uri}: {len(v.results)}/{len(v.segments)} segments, {done}/{total} frames, "
        f"{fps:.1f} frames/s, {left:.0f} s left"
    )


def _row(
    v: _Video, error: str | None, duration: float | None, model_id: str, fingerprint: str
) -> pa.Table:
    from colorization.video import combine_segments

    row = blank_row(v.source_uri, model_id=model_id, tables_fingerprint=fingerprint)
    row["seconds"] = time.perf_counter() - v.started
    if v.info is not None:
        row.update(width=v.info.width, height=v.info.height, mode="video", fps=v.info.fps)
    if error is None:
        stats = combine_segments([r for r, _ in v.results.values()])
        row.update(
            output_uri=v.output_uri,
            frames=stats["frames"],
            shots=stats["shots"],
            colorfulness=stats["colorfulness"],
            flicker=stats["flicker"],
            flicker_ab=stats["flicker_ab"],
            duration=duration,
        )
    else:
        row.update(status="error", error=error)
    return pa.Table.from_pylist([row], schema=ROW_SCHEMA)
