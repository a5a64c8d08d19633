"""The archive job's per-block workers: each a callable on one batch, so it runs in a Ray Data
stage and, the same, on one batch in a test without Ray.

1. :class:`_Decode` (tasks): read bytes (retried by botocore), decode safely (pixel limit, EXIF
   orientation), the image's 8-bit pixels and the ``size`` x ``size`` L the model sees;
2. :class:`Colorizer` (an actor each; the model is loaded once per actor; CPU or GPU; batched):
   the chroma at the model's resolution, Arrow in and Arrow out;
3. :class:`_Finish` (tasks): chroma upsampled and joined with the image's own L, alpha kept
   where the format holds it, encoded, written whole (temp file + rename, or one S3 PUT); a
   manifest row per input (:data:`pipeline.manifest.ROW_SCHEMA`).

Every failure is the row's status and reason, never an exception out of a worker. Only the
model actors import torch: the tasks' workers unpickle this module without it.
"""

from __future__ import annotations

import io
import os
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
from PIL import Image

from colorization.color import lightness_u8
from colorization.imageio import decode_image
from colorization.metrics import colorfulness
from colorization.pixels import finish_np, lightness_np, pixels_u8
from pipeline.manifest import FORMATS, MANIFEST_SCHEMA, ROW_SCHEMA, blank_row
from pipeline.sources import read_bytes, write_bytes

if TYPE_CHECKING:
    from pipeline.run_stage import RunConfig


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
        from colorization.shipped import inference_size

        self.cfg = cfg
        self.size = inference_size(cfg.model, cfg.size)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        out = []
        for r in _rows_of(batch):
            t0 = time.perf_counter()
            row = {**blank_row(r["source_uri"], r["output_uri"]), "pixels": b"", "small": None}
            row["alpha"] = b""
            try:
                im = decode_image(
                    read_bytes(r["source_uri"], self.cfg.storage), self.cfg.max_pixels
                )
                row.update(width=im.width, height=im.height, mode=im.mode)
                pixels = pixels_u8(im)
                small = lightness_np(pixels, self.size)[1]
                row.update(pixels=pixels.tobytes(), small=small)
                if "A" in im.getbands() and self.cfg.format != "jpeg":
                    row["alpha"] = im.getchannel("A").tobytes()
            except Exception as e:  # noqa: BLE001 - every input gets a row
                row.update(status="error", error=_message(e, "read/decode"))
            if row["small"] is None:
                row["small"] = np.zeros((self.size, self.size), np.float32)
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

        from colorization.inference import input_size, model_chroma
        from colorization.shipped import load

        self.cfg = cfg
        use_gpu = cfg.gpus_per_worker > 0 and torch.cuda.is_available()
        self.device = torch.device("cuda" if use_gpu else "cpu")
        torch.set_num_threads(actor_threads(cfg))
        self.model, self.table, _ = load(cfg.model, self.device)
        # the chroma's shape (rows that failed upstream get zeros of it: one tensor column)
        side = input_size(self.model, cfg.size)
        probe = torch.zeros((1, 1, side, side), device=self.device)
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
                    self.cfg.rebalance_correction,
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

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        out = []
        for r in _rows_of(batch):
            t0 = time.perf_counter()
            row = blank_row(r["source_uri"])
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
        return pa.Table.from_pylist(out, schema=ROW_SCHEMA)

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
