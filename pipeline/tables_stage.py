"""Stage 1: colour-class tables from an image set, with Ray tasks.

list sources -> shards of items -> one Ray task per shard (read, decode, ab histogram through
the 8-bit LUT; a status per item, never an exception) -> sum of the counts -> ColorTable ->
``DIR/classes.parquet`` + ``histogram.parquet`` (+ ``category_histograms.parquet``) +
``report.json`` + ``config.yaml``.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from colorization.abgrid import AbGrid
from colorization.imageio import DEFAULT_MAX_PIXELS, decode_image
from colorization.stats import image_stats
from colorization.tables import ColorTable, TableParams
from pipeline.sources import (
    Item,
    StorageOptions,
    coco_names,
    join_uri,
    list_sources,
    read_bytes,
    write_bytes,
)


@dataclass
class TablesConfig:
    """Everything ``colorize tables build`` does is decided here (saved as config.yaml)."""

    sources: list[str]
    out: str
    params: TableParams = field(default_factory=TableParams)
    shards: int = 0  # 0: about 32 images a shard, at least 2 per CPU
    categories: bool = False  # per-category histograms from COCO masks
    skip_grey: bool = True  # grey images do not count (Zhang et al. skip them too)
    max_pixels: int = DEFAULT_MAX_PIXELS
    images_dir: str | None = None  # images of a COCO file, if not beside it
    storage: StorageOptions = field(default_factory=StorageOptions)
    progress: bool = True


@dataclass
class ShardResult:
    hist: np.ndarray
    categories: dict[int, np.ndarray]
    n_ok: int = 0
    n_grey: int = 0
    n_pixels: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)


def histogram_shard(
    items: list[Item],
    grid: AbGrid,
    cell_lut: np.ndarray,
    categories: bool,
    skip_grey: bool,
    max_pixels: int,
    storage: StorageOptions,
) -> ShardResult:
    """Histogram a list of items; every failure is recorded with its reason, none raises."""
    res = ShardResult(np.zeros(grid.n_cells, np.int64), {})
    for item in items:
        try:
            data = read_bytes(item.uri, storage)
            # statistics are orientation-free, and COCO masks use the stored orientation
            im = decode_image(data, max_pixels, exif_transpose=False)
            st = image_stats(im, grid, cell_lut, item.annotations if categories else ())
        except Exception as e:  # noqa: BLE001 - a worker reports, it never dies on one input
            res.failures.append({"uri": item.uri, "error": f"{type(e).__name__}: {e}"})
            continue
        if st.grey and skip_grey:
            res.n_grey += 1
            continue
        res.n_ok += 1
        res.n_pixels += st.n_pixels
        res.hist += st.hist
        for cid, h in st.categories.items():
            res.categories[cid] = res.categories.get(cid, 0) + h
    return res


def make_shards(items: list[Item], shards: int, cpus: int) -> list[list[Item]]:
    """Contiguous shards of nearly equal size (by default at least 4 per CPU, so that no
    worker idles long at the end, and at most about 32 images each)."""
    n = shards or max(4 * cpus, math.ceil(len(items) / 32))
    n = max(1, min(n, len(items)))
    bounds = np.linspace(0, len(items), n + 1).round().astype(int)
    return [items[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


def _run_shards(cfg: TablesConfig, shards: list[list[Item]], grid: AbGrid) -> list[ShardResult]:
    import ray
    from tqdm import tqdm

    lut_ref = _lut_ref(grid)
    task = ray.remote(num_cpus=1, max_retries=3)(histogram_shard)
    pending = {
        task.remote(
            s, grid, lut_ref, cfg.categories, cfg.skip_grey, cfg.max_pixels, cfg.storage
        ): len(s)
        for s in shards
    }
    results = []
    total = sum(pending.values())
    with tqdm(total=total, unit="img", disable=not cfg.progress, desc="tables") as bar:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            results.append(ray.get(done[0]))
            bar.update(pending.pop(done[0]))
    return results


_LUT_REFS: dict[tuple, Any] = {}


def _lut_ref(grid: AbGrid):
    """The grid's 2^24 LUT in Ray's object store, put once per Ray session and shared
    (zero-copy, read-only) by every task on a node."""
    import ray

    key = (ray.get_runtime_context().get_job_id(), grid)
    if key not in _LUT_REFS:
        _LUT_REFS[key] = ray.put(grid.rgb_cell_lut())
    return _LUT_REFS[key]


def build_tables(cfg: TablesConfig) -> dict[str, Any]:
    """Run the stage; returns the report (also written to ``out/report.json``)."""
    import ray

    from pipeline.cluster import require_ray

    t0 = time.perf_counter()
    grid = AbGrid(cfg.params.grid, cfg.params.ab_max)
    items = list_sources(cfg.sources, cfg.storage, cfg.images_dir)
    require_ray("building the tables")
    cpus = int(ray.cluster_resources().get("CPU", 1))
    shards = make_shards(items, cfg.shards, cpus)
    results = _run_shards(cfg, shards, grid)
    hist = np.sum([r.hist for r in results], axis=0)
    cats: dict[int, np.ndarray] = {}
    for r in results:
        for cid, h in r.categories.items():
            cats[cid] = cats.get(cid, 0) + h
    failures = sorted((f for r in results for f in r.failures), key=lambda f: f["uri"])
    report: dict[str, Any] = {
        "sources": cfg.sources,
        "n_listed": len(items),
        "n_ok": sum(r.n_ok for r in results),
        "n_grey_skipped": sum(r.n_grey for r in results),
        "n_failed": len(failures),
        "n_pixels": int(hist.sum()),
        "shards": len(shards),
        "failures": failures,
    }
    with tempfile.TemporaryDirectory() as tmp:
        # written whole in a local folder, then put in OUT (a folder or an s3:// prefix)
        out = Path(tmp)
        if report["n_ok"] > 0:
            table = ColorTable.from_histogram(
                hist,
                cfg.params,
                source=",".join(cfg.sources),
                n_images=report["n_ok"],
                n_failed=report["n_failed"],
            )
            table.save(out / "classes.parquet")
            report.update(num_classes=table.num_classes, fingerprint=table.fingerprint)
        write_histograms(out, grid, hist, cats, cfg)
        report["seconds"] = round(time.perf_counter() - t0, 3)
        report["images_per_s"] = round(len(items) / max(report["seconds"], 1e-3), 2)
        (out / "report.json").write_text(json.dumps(report, indent=2))
        (out / "config.yaml").write_text(yaml.safe_dump(_plain(asdict(cfg)), sort_keys=False))
        for f in sorted(out.iterdir()):
            write_bytes(join_uri(cfg.out, f.name), f.read_bytes(), cfg.storage)
    if report["n_ok"] == 0:
        where = join_uri(cfg.out, "report.json")
        raise ValueError(f"no usable image among {len(items)} listed; see {where}")
    return report


def write_histograms(out: Path, grid: AbGrid, hist, cats: dict, cfg: TablesConfig) -> None:
    centres = grid.centres()
    nz = np.flatnonzero(hist)
    pq.write_table(
        pa.table({"a": centres[nz, 0], "b": centres[nz, 1], "count": hist[nz]}),
        out / "histogram.parquet",
    )
    if not cats:
        return
    names = coco_names(cfg.sources)
    rows: dict[str, list] = {"category_id": [], "category": [], "a": [], "b": [], "count": []}
    for cid in sorted(cats):
        h = cats[cid]
        nz = np.flatnonzero(h)
        rows["category_id"] += [cid] * len(nz)
        rows["category"] += [names.get(cid, str(cid))] * len(nz)
        rows["a"] += centres[nz, 0].tolist()
        rows["b"] += centres[nz, 1].tolist()
        rows["count"] += h[nz].tolist()
    pq.write_table(pa.table(rows), out / "category_histograms.parquet")


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def show_table(path: str | Path, png: str | Path | None = None) -> str:
    """Summary text of a table (a tables directory or its ``classes.parquet``); writes the
    ab-plane picture to ``png`` (default: ``ab_plane.png`` beside the table)."""
    from colorization.plots import plot_ab_plane

    path = Path(path)
    file = path / "classes.parquet" if path.is_dir() else path
    table = ColorTable.load(file)
    png = Path(png) if png else file.parent / "ab_plane.png"
    plot_ab_plane(table, png)
    p, w = table.prior, table.weights
    top = np.argsort(-p)[:5]
    prov = table.provenance
    lines = [
        f"table        {file}",
        f"fingerprint  {table.fingerprint}",
        f"classes      {table.num_classes} on a {table.params.grid:g}-grid",
        f"source       {prov.get('source', '?')}",
        f"images       {prov.get('n_images', '?')} ({prov.get('n_failed', 0)} failed)",
        f"pixels       {prov.get('n_pixels', '?')}",
        f"params       sigma={table.params.sigma:g} lambda={table.params.lam:g} "
        f"min_count={table.params.min_count} min_mass={table.params.min_mass:g}",
        f"weights      min {w.min():.3f}  max {w.max():.3f}  sum(p*w) {float((p * w).sum()):.6f}",
        "most common  "
        + ", ".join(
            f"({table.centres[i, 0]:+.0f},{table.centres[i, 1]:+.0f}) {p[i]:.3f}" for i in top
        ),
        f"picture      {png}",
    ]
    return "\n".join(lines)
