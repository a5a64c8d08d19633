"""Stage 2a: training data decoded, resized and stored once as parquet shards (Ray Data).

list sources -> Ray Data map_batches (read, decode, shorter side to ``size``, centre crop,
COCO masks to a semantic map, labels) -> ``DIR/part-*.parquet`` + ``DIR/dataset.json``.
Every input gets a row with its status; readers take the ``ok`` rows. Epochs then stream
these shards (:class:`ShardStream`) instead of decoding JPEGs.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from colorization import color
from colorization.coco import COCO_CATEGORY_IDS, semantic_map
from colorization.imageio import DEFAULT_MAX_PIXELS, decode_image, to_rgb_array
from pipeline.sources import Item, StorageOptions, coco_names, list_sources, read_bytes

WNID = re.compile(r"^(n\d{8})_")
IGNORE = 255  # segmentation label of pixels without annotation


@dataclass
class PrepareConfig:
    sources: list[str]
    out: str
    size: int = 144  # stored square side; training crops are at most this
    images_dir: str | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    storage: StorageOptions = field(default_factory=StorageOptions)
    rows_per_file: int = 256


def label_vocabulary(items: list[Item], coco_names: dict[int, str]) -> list[str]:
    """Image-level labels: the 80 COCO categories first (in their canonical order), then every
    ImageNet-style ``<wnid>_<name>`` prefix found among the file names, sorted."""
    vocab = [f"coco:{coco_names.get(cid, cid)}" for cid in COCO_CATEGORY_IDS]
    wnids = sorted({m.group(1) for it in items if (m := WNID.match(Path(it.key).name))})
    return vocab + wnids


def _square(im: Image.Image, size: int, resample: int) -> Image.Image:
    w, h = im.size
    s = size / min(w, h)
    nw, nh = max(size, round(w * s)), max(size, round(h * s))
    im = im.resize((nw, nh), resample)
    left, top = (nw - size) // 2, (nh - size) // 2
    return im.crop((left, top, left + size, top + size))


def prepare_item(row: dict[str, Any], size: int, max_pixels: int, storage: StorageOptions):
    """One input -> one output row (status ok / skipped / error; never raises)."""
    out = {"key": row["key"], "uri": row["uri"], "status": "ok", "error": ""}
    out.update(rgb=b"", seg=b"", labels=list(row["labels"]), has_seg=False)
    try:
        # COCO masks use the stored orientation; other photos are shown EXIF-rotated
        coco = row["image_id"] >= 0
        im = decode_image(read_bytes(row["uri"], storage), max_pixels, exif_transpose=not coco)
        rgb = np.asarray(_square(Image.fromarray(to_rgb_array(im)), size, Image.BICUBIC))
        if color.is_grey(rgb):
            out.update(status="skipped", error="grey image")
            return out
        out["rgb"] = rgb.tobytes()
        anns = json.loads(row["annotations"])
        if coco:
            h, w = im.size[1], im.size[0]
            sem = semantic_map(anns, h, w) if anns else np.zeros((h, w), np.uint8)
            seg = _square(Image.fromarray(sem), size, Image.NEAREST)
            out.update(seg=np.asarray(seg).tobytes(), has_seg=True)
    except Exception as e:  # noqa: BLE001 - every input gets a row
        out.update(status="error", error=f"{type(e).__name__}: {e}", rgb=b"")
    return out


def _item_rows(items: list[Item], vocab: list[str]) -> list[dict[str, Any]]:
    index = {name: i for i, name in enumerate(vocab)}
    contiguous = {cid: i for i, cid in enumerate(COCO_CATEGORY_IDS)}
    rows = []
    for it in items:
        labels = [contiguous[c] for c in it.labels if c in contiguous]
        m = WNID.match(Path(it.key).name)
        if m:
            labels.append(index[m.group(1)])
        rows.append(
            {
                "uri": it.uri,
                "key": it.key,
                "image_id": -1 if it.image_id is None else it.image_id,
                "labels": labels,
                "annotations": json.dumps(list(it.annotations)),
            }
        )
    return rows


def prepare(cfg: PrepareConfig) -> dict[str, Any]:
    """Run the stage; returns the summary (also in ``out/dataset.json``)."""
    import ray

    t0 = time.perf_counter()
    items = list_sources(cfg.sources, cfg.storage, cfg.images_dir)
    vocab = label_vocabulary(items, coco_names(cfg.sources))
    ray.init(ignore_reinit_error=True, include_dashboard=False, log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False

    def fn(batch: dict[str, np.ndarray]) -> dict[str, list]:
        cols = list(batch.values())
        rows = [dict(zip(batch.keys(), vals, strict=True)) for vals in zip(*cols, strict=True)]
        outs = [prepare_item(r, cfg.size, cfg.max_pixels, cfg.storage) for r in rows]
        return {k: [o[k] for o in outs] for k in outs[0]}

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("*.parquet"), out / "dataset.json"]:
        old.unlink(missing_ok=True)
    n_blocks = max(1, min(len(items) // 16, 200))
    ds = ray.data.from_items(_item_rows(items, vocab), override_num_blocks=n_blocks)
    ds = ds.map_batches(fn, batch_size=16, batch_format="numpy")
    ds.write_parquet(str(out), min_rows_per_file=cfg.rows_per_file, row_group_size=32)
    status = [
        r
        for f in sorted(out.glob("*.parquet"))
        for r in pq.read_table(f, columns=["key", "status", "error"]).to_pylist()
    ]
    counts = {s: sum(r["status"] == s for r in status) for s in ("ok", "skipped", "error")}
    summary = {
        "format": "colorization.prepared/1",
        "size": cfg.size,
        "n_listed": len(items),
        **{f"n_{k}": v for k, v in counts.items()},
        "labels": vocab,
        "failures": [r for r in status if r["status"] == "error"],
        "seconds": round(time.perf_counter() - t0, 2),
        "config": asdict(cfg),
    }
    (out / "dataset.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def read_dataset_info(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / "dataset.json"
    if not path.exists():
        raise FileNotFoundError(f"{directory}: no dataset.json; run `colorize prepare` first")
    return json.loads(path.read_text())


@dataclass
class Sample:
    rgb: np.ndarray  # (S, S, 3) uint8
    seg: np.ndarray | None  # (S, S) uint8 with IGNORE, or None
    labels: list[int]
    key: str


class ShardStream:
    """Streams the ``ok`` rows of a prepared dataset, one row group at a time.

    Row groups are dealt to workers round-robin (``rank``/``world``) in an order shuffled per
    epoch; rows are shuffled within a buffer of row groups. Memory holds a few row groups,
    whatever the dataset's size."""

    def __init__(self, directory: str | Path, rank: int = 0, world: int = 1, seed: int = 0):
        self.files = sorted(Path(directory).glob("*.parquet"))
        if not self.files:
            raise FileNotFoundError(f"{directory}: no parquet shards")
        self.info = read_dataset_info(directory)
        self.size = int(self.info["size"])
        self.groups = [
            (f, g) for f in self.files for g in range(pq.ParquetFile(f).metadata.num_row_groups)
        ]
        self.rank, self.world, self.seed = rank, world, seed

    def epoch(self, epoch: int, shuffle: bool = True, buffer_groups: int = 4) -> Iterator[Sample]:
        rng = np.random.default_rng((self.seed, epoch))
        order = rng.permutation(len(self.groups)) if shuffle else np.arange(len(self.groups))
        if len(self.groups) >= self.world:
            mine = [self.groups[i] for i in order[self.rank :: self.world]]
            rows = slice(None)
        else:  # fewer row groups than workers: every worker reads all, keeps its rows
            mine, rows = [self.groups[i] for i in order], slice(self.rank, None, self.world)
        buf: list[Sample] = []
        for n, (f, g) in enumerate(mine, 1):
            buf.extend(self._read_group(f, g)[rows])
            if n % buffer_groups == 0 or n == len(mine):
                if shuffle:
                    rng.shuffle(buf)
                yield from buf
                buf = []

    def _read_group(self, f: Path, g: int) -> list[Sample]:
        t = pq.ParquetFile(f).read_row_group(g, columns=["key", "status", "rgb", "seg", "labels"])
        s = self.size
        out = []
        for r in t.to_pylist():
            if r["status"] != "ok":
                continue
            rgb = np.frombuffer(r["rgb"], np.uint8).reshape(s, s, 3)
            seg = np.frombuffer(r["seg"], np.uint8).reshape(s, s) if r["seg"] else None
            out.append(Sample(rgb, seg, list(r["labels"] or []), r["key"]))
        return out
