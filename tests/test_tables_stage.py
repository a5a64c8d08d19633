"""Stage 1 end to end (pipeline/tables_stage.py) on real photos, with one local Ray instance:
shard invariance, COCO categories, broken inputs, S3 on loopback, the CLI, clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from colorization.abgrid import AbGrid
from colorization.tables import ColorTable, TableParams
from pipeline.cli import app
from pipeline.sources import StorageOptions
from pipeline.tables_stage import TablesConfig, build_tables, make_shards

pytestmark = [pytest.mark.ray, pytest.mark.timeout(180)]

OUTPUTS = ("classes.parquet", "histogram.parquet", "report.json", "config.yaml")


def build(out: Path, *sources: str | Path, **kw) -> dict:
    """``build_tables`` without a progress bar."""
    cfg = TablesConfig(sources=[str(s) for s in sources], out=str(out), progress=False, **kw)
    return build_tables(cfg)


def histogram(out: Path) -> dict[tuple[float, float], int]:
    """``histogram.parquet`` as ``{(a, b): count}``."""
    t = pq.read_table(out / "histogram.parquet").to_pydict()
    return {(a, b): c for a, b, c in zip(t["a"], t["b"], t["count"], strict=True)}


def report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def assert_counts_add_up(rep: dict) -> None:
    assert rep["n_ok"] + rep["n_grey_skipped"] + rep["n_failed"] == rep["n_listed"]
    assert rep["n_failed"] == len(rep["failures"])


# --- no Ray needed ----------------------------------------------------------------------------
@pytest.mark.timeout(10)
@pytest.mark.parametrize("n_items, shards, cpus", [(80, 1, 2), (80, 5, 2), (80, 0, 2), (3, 8, 2)])
def test_make_shards_covers_every_item_once_in_order(n_items, shards, cpus):
    items = list(range(n_items))
    parts = make_shards(items, shards, cpus)
    assert [x for p in parts for x in p] == items
    assert all(parts) and max(map(len, parts)) - min(map(len, parts)) <= 1
    if shards:
        assert len(parts) == min(shards, n_items)


# --- shard invariance -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def train_builds(ray_local, coco_tiny: Path, tmp_path_factory) -> dict[int, Path]:
    """coco-tiny train2017 (a folder) built with 1 shard and with 5."""
    root = tmp_path_factory.mktemp("shards")
    outs = {}
    for shards in (1, 5):
        outs[shards] = root / f"shards{shards}"
        rep = build(outs[shards], coco_tiny / "train2017", shards=shards)
        assert rep["shards"] == shards
    return outs


def test_counts_do_not_depend_on_sharding(train_builds: dict[int, Path]):
    one, five = train_builds[1], train_builds[5]
    assert pq.read_table(one / "histogram.parquet").equals(
        pq.read_table(five / "histogram.parquet")
    )
    t1, t5 = ColorTable.load(one / "classes.parquet"), ColorTable.load(five / "classes.parquet")
    assert t1.fingerprint == t5.fingerprint
    r1, r5 = report(one), report(five)
    for k in ("n_listed", "n_ok", "n_grey_skipped", "n_failed", "n_pixels", "fingerprint"):
        assert r1[k] == r5[k], k
    assert r1["n_listed"] == 80 and r1["n_failed"] == 0 and r1["n_grey_skipped"] >= 1
    assert_counts_add_up(r1)


def test_outputs_of_a_folder_build(train_builds: dict[int, Path]):
    out = train_builds[5]
    for name in OUTPUTS:
        assert (out / name).is_file(), name
    assert not (out / "category_histograms.parquet").exists()  # not asked for
    table = ColorTable.load(out / "classes.parquet")
    hist = histogram(out)
    rep = report(out)
    assert sum(hist.values()) == rep["n_pixels"] == table.provenance["n_pixels"]
    assert table.provenance["n_images"] == rep["n_ok"]
    # min_count=1: the gamut is every non-empty cell, with its counts
    got = {
        (a, b): c for (a, b), c in zip(table.centres.tolist(), table.counts.tolist(), strict=True)
    }
    assert got == hist
    assert rep["num_classes"] == table.num_classes and rep["fingerprint"] == table.fingerprint


# --- COCO annotations with categories ---------------------------------------------------------
@pytest.fixture(scope="module")
def coco_build(ray_local, coco_tiny: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("coco") / "tables"
    build(out, coco_tiny / "annotations" / "instances_train2017.json", categories=True)
    return out


def test_coco_table_is_valid_and_inside_zhangs_gamut(coco_build: Path, zhang_313_path: Path):
    table = ColorTable.load(coco_build / "classes.parquet")
    zhang = {tuple(p) for p in np.rint(np.load(zhang_313_path)).astype(int).tolist()}
    assert len(zhang) == 313
    mine = {tuple(p) for p in np.rint(table.centres).astype(int).tolist()}
    assert mine <= zhang, sorted(mine - zhang)
    assert 100 < table.num_classes <= 313
    assert abs(float((table.prior * table.weights).sum()) - 1) < 1e-9
    assert abs(table.prior.sum() - 1) < 1e-9 and (table.weights > 0).all()


def test_coco_report_counts_add_up(coco_build: Path):
    rep = report(coco_build)
    assert rep["n_listed"] == 80 and rep["n_failed"] == 0
    assert_counts_add_up(rep)
    # the same pixels as the folder of the same images
    assert rep["n_ok"] == 80 - rep["n_grey_skipped"]


def test_category_histograms(coco_build: Path, coco_tiny: Path):
    ann = json.loads((coco_tiny / "annotations" / "instances_train2017.json").read_text())
    names = {c["id"]: c["name"] for c in ann["categories"]}
    present = {a["category_id"] for a in ann["annotations"]}
    total = histogram(coco_build)
    cats = pq.read_table(coco_build / "category_histograms.parquet").to_pydict()
    per_cat: dict[int, dict[tuple[float, float], int]] = {}
    for cid, name, a, b, n in zip(
        cats["category_id"], cats["category"], cats["a"], cats["b"], cats["count"], strict=True
    ):
        assert name == names[cid]
        assert n > 0
        assert (a, b) not in per_cat.setdefault(cid, {}), "one row per category and cell"
        per_cat[cid][(a, b)] = n
    assert set(per_cat) <= present
    assert len(per_cat) >= 0.9 * len(present), f"{len(per_cat)} of {len(present)} categories"
    n_total = sum(total.values())
    for cid, h in per_cat.items():
        # a category's pixels are a subset of the counted pixels, cell by cell
        assert all(n <= total.get(cell, 0) for cell, n in h.items()), names[cid]
        assert sum(h.values()) <= n_total
    # people are in many photos: the largest category is a real share of the pixels
    assert max(sum(h.values()) for h in per_cat.values()) > 0.01 * n_total


def test_config_yaml_records_the_run(coco_build: Path):
    import yaml

    cfg = yaml.safe_load((coco_build / "config.yaml").read_text())
    assert cfg["categories"] is True and cfg["out"] == str(coco_build)
    assert TableParams(**cfg["params"]) == TableParams()


# --- broken inputs ----------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_broken_files_are_counted_never_fatal(
    ray_local, broken_dir: Path, broken_files: tuple[str, ...], tmp_path: Path
):
    out = tmp_path / "tables"
    rep = build(out, broken_dir, shards=3)
    assert rep["n_listed"] == 7
    assert rep["n_ok"] == 3 and rep["n_failed"] == 4 and rep["n_grey_skipped"] == 0
    on_disk = report(out)
    assert on_disk["n_failed"] == 4
    failed = {Path(f["uri"]).name: f["error"] for f in on_disk["failures"]}
    assert set(failed) == set(broken_files)
    assert all(reason.strip() for reason in failed.values()), failed
    assert "empty" in failed["empty.jpg"]
    assert "truncated" in failed["truncated.jpg"]
    assert "not an image" in failed["text.jpg"] and "not an image" in failed["random.png"]
    assert_counts_add_up(on_disk)
    ColorTable.load(out / "classes.parquet")


@pytest.mark.timeout(60)
def test_empty_source_is_a_clear_error(ray_local, tmp_path: Path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".hidden.jpg").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="no files found"):
        build(tmp_path / "out", tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="source not found"):
        build(tmp_path / "out", tmp_path / "absent")


@pytest.mark.timeout(60)
def test_only_broken_files_is_a_clear_error(
    ray_local, broken_dir: Path, broken_files: tuple[str, ...], tmp_path: Path
):
    for p in broken_dir.iterdir():
        if p.name not in broken_files:
            p.unlink()
    out = tmp_path / "tables"
    with pytest.raises(ValueError, match="no usable image among 4"):
        build(out, broken_dir)
    rep = report(out)  # the report still says what went wrong
    assert rep["n_failed"] == 4 and rep["n_ok"] == 0
    assert not (out / "classes.parquet").exists()


# --- S3 on loopback ---------------------------------------------------------------------------
@pytest.mark.s3
@pytest.mark.timeout(120)
def test_s3_prefix_gives_the_same_histogram_as_a_folder(
    ray_local, s3_bucket, coco_tiny: Path, tmp_path: Path
):
    photos = sorted((coco_tiny / "train2017").glob("*.jpg"))[:12]  # one of them is grey
    local = tmp_path / "local"
    local.mkdir()
    for p in photos:
        shutil.copyfile(p, local / p.name)
        s3_bucket.put(f"archive/2017/{p.name}", p)
    s3_bucket.put("archive/other/not-listed.jpg", b"")
    storage = StorageOptions(endpoint_url=s3_bucket.endpoint, max_attempts=2)

    rep_s3 = build(tmp_path / "s3", s3_bucket.uri("archive/2017/"), storage=storage, shards=3)
    rep_local = build(tmp_path / "local-out", local, shards=2)
    assert rep_s3["n_failed"] == 0, rep_s3["failures"]
    assert rep_s3["n_listed"] == 12
    for k in ("n_ok", "n_grey_skipped", "n_pixels", "num_classes", "fingerprint"):
        assert rep_s3[k] == rep_local[k], k
    assert histogram(tmp_path / "s3") == histogram(tmp_path / "local-out")


@pytest.mark.s3
@pytest.mark.timeout(120)
def test_s3_missing_objects_are_failures_with_reasons(s3_bucket):
    """Objects deleted between listing and reading fail one by one, the job does not."""
    from pipeline.sources import Item
    from pipeline.tables_stage import histogram_shard

    storage = StorageOptions(endpoint_url=s3_bucket.endpoint, max_attempts=1)
    grid = AbGrid()
    items = [Item(s3_bucket.uri("gone.jpg"), "gone.jpg")]
    res = histogram_shard(items, grid, grid.rgb_cell_lut(), False, True, 10**8, storage)
    assert res.n_ok == 0 and len(res.failures) == 1
    assert "NoSuchKey" in res.failures[0]["error"]


# --- the command ------------------------------------------------------------------------------
@pytest.mark.timeout(180)
def test_cli_build_then_show(ray_local, coco_tiny: Path, tmp_path: Path):
    out = tmp_path / "tables"
    runner = CliRunner()
    ann = coco_tiny / "annotations" / "instances_train2017.json"
    args = ["tables", "build", str(ann), "--out", str(out), "--categories", "--no-progress"]
    res = runner.invoke(app, [*args, "--shards", "2"])
    assert res.exit_code == 0, (res.output, res.exception)
    summary = json.loads(res.stdout)
    assert "failures" not in summary
    assert summary["n_listed"] == 80 and summary["n_failed"] == 0 and summary["shards"] == 2
    for name in (*OUTPUTS, "category_histograms.parquet"):
        assert (out / name).is_file(), name

    res = runner.invoke(app, ["tables", "show", str(out)])
    assert res.exit_code == 0, (res.output, res.exception)
    table = ColorTable.load(out / "classes.parquet")
    text = res.stdout
    assert f"fingerprint  {table.fingerprint}" in text
    assert f"classes      {table.num_classes} on a 10-grid" in text
    assert f"images       {summary['n_ok']} (0 failed)" in text
    assert "sum(p*w) 1.000000" in text
    png = out / "ab_plane.png"
    assert f"picture      {png}" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as im:
        im.verify()
    with Image.open(png) as im:
        w, h = im.size
    assert 600 <= w <= 4000 and 200 <= h <= 2000 and w > h, (w, h)


@pytest.mark.timeout(60)
def test_cli_reports_failures_and_errors(
    ray_local, broken_dir: Path, broken_files: tuple[str, ...], tmp_path: Path
):
    runner = CliRunner()
    args = ["tables", "build", str(broken_dir), "-o", str(tmp_path / "t"), "--no-progress"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, (res.output, res.exception)
    assert json.loads(res.stdout)["n_failed"] == 4
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("failed: ")]
    assert {Path(ln.split(": ")[1]).name for ln in lines} == set(broken_files)

    res = runner.invoke(app, ["tables", "build", str(tmp_path / "absent"), "-o", str(tmp_path)])
    assert res.exit_code != 0 and isinstance(res.exception, FileNotFoundError)
