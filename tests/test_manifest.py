"""The archive job's manifest without Ray: planning, resume, the pipeline's rows and the final
merge, with buckets of a few rows so that every step runs over several buckets as a
ten-million-input archive does."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import pipeline.manifest as manifest_mod
from pipeline.manifest import (
    LOST,
    MANIFEST,
    ROW_SCHEMA,
    Collector,
    Manifest,
    blank_row,
    finish,
    output_key,
    plan_inputs,
    read_plan_blocks,
    resume,
    write_plan_blocks,
)
from pipeline.sources import Item, iter_items, list_items

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=[100, 3], ids=["one-bucket", "buckets-of-3"])
def bucket_rows(request, monkeypatch) -> int:
    monkeypatch.setattr(manifest_mod, "BUCKET_ROWS", request.param)
    return request.param


def todo_of(plan) -> list[tuple[str, str]]:
    rows = [r for b in range(plan.buckets) for r in plan.todo.read(b).to_pylist()]
    return [(r["source_uri"], r["output_uri"]) for r in sorted(rows, key=lambda r: r["pos"])]


def decided_of(plan) -> dict[str, tuple[str, str]]:
    rows = pq.read_table(plan.decided).to_pylist()
    return {r["source_uri"]: (r["status"], r["error"]) for r in rows}


def test_plan_refuses_keys_outside_destination_and_skips_colliding_outputs(tmp_path, bucket_rows):
    items = [
        Item("s3://b/a.png", "a.png"),
        Item("s3://b/a.jpg", "a.jpg"),  # same output a.jpg as a.png, listed later
        Item("s3://b/x/../../up.jpg", "x/../../up.jpg"),
        Item("/abs.jpg", "/abs.jpg"),
        Item("s3://b/ok/b.tif", "ok/b.tif"),
        Item("s3://b/a", "a"),  # a third claim on a.jpg
    ]
    plan = plan_inputs(items, "s3://out/p", "jpeg", tmp_path)
    assert plan.buckets == (1 if bucket_rows == 100 else 2)
    assert todo_of(plan) == [
        ("s3://b/a.png", "s3://out/p/a.jpg"),
        ("s3://b/ok/b.tif", "s3://out/p/ok/b.jpg"),
    ]
    status = decided_of(plan)
    assert plan.listed == 6 and plan.n_decided == 4 == len(status)
    for uri in ("s3://b/a.jpg", "s3://b/a"):
        assert status[uri] == ("skipped", "output s3://out/p/a.jpg is also that of s3://b/a.png")
    for uri in ("s3://b/x/../../up.jpg", "/abs.jpg"):
        assert status[uri][0] == "error" and "outside the destination" in status[uri][1]


def test_plan_over_many_buckets_is_the_one_pass_plan(tmp_path, monkeypatch):
    """Two hundred keys in buckets of 7: the same decisions as one pass over a dict."""
    monkeypatch.setattr(manifest_mod, "BUCKET_ROWS", 7)
    keys = [f"d{i % 13}/k{i % 50}.{('png', 'jpg', 'tif')[i % 3]}" for i in range(200)]
    items = [Item(f"s3://b/{i}/{k}", k) for i, k in enumerate(keys)]
    plan = plan_inputs(items, "s3://out", "png", tmp_path)
    taken: dict[str, str] = {}
    want_todo, want_skipped = [], {}
    for it in items:
        out = f"s3://out/{output_key(it.key, 'png')}"
        if out in taken:
            want_skipped[it.uri] = ("skipped", f"output {out} is also that of {taken[out]}")
        else:
            taken[out] = it.uri
            want_todo.append((it.uri, out))
    assert plan.buckets == 29
    assert todo_of(plan) == want_todo
    assert decided_of(plan) == want_skipped


def write_previous_run(dst: Path, run_id: str, rows: list[tuple[str, str]]) -> None:
    m = Manifest(str(dst), run_id, shard_size=2)
    table = pa.Table.from_pylist(
        [blank_row(u, status=s, run_id=run_id) for u, s in rows],
        schema=manifest_mod.MANIFEST_SCHEMA,
    )
    m.write_rows(table)


def test_resume_carries_inputs_whose_newest_row_is_ok(tmp_path, bucket_rows):
    dst = tmp_path / "dst"
    items = [Item(f"/src/{k}.jpg", f"{k}.jpg") for k in "abcdef"]
    write_previous_run(dst, "20240101T000000-1", [("/src/a.jpg", "ok"), ("/src/b.jpg", "ok")])
    write_previous_run(dst, "20240101T000000-1x", [("/src/c.jpg", "error")])
    later = [("/src/b.jpg", "error"), ("/src/c.jpg", "ok"), ("/src/gone.jpg", "ok")]
    write_previous_run(dst, "20240102T000000-2", later)
    (dst / "_manifest" / "shard-20240103T000000-3-000000.parquet").write_bytes(b"no marker")
    m = Manifest(str(dst), "20240104T000000-4")
    plan = resume(plan_inputs(items, str(dst), "jpeg", tmp_path / "work"), m)
    assert sorted(u for u, _ in todo_of(plan)) == [f"/src/{k}.jpg" for k in "bdef"]
    carried = pq.read_table(plan.carried).to_pylist()
    assert sorted((r["source_uri"], r["run_id"]) for r in carried) == [
        ("/src/a.jpg", "20240101T000000-1"),
        ("/src/c.jpg", "20240102T000000-2"),
    ]
    assert plan.n_carried == 2 and plan.n_todo == 4


def rows_back(source_uris: list[str], status: str = "ok") -> pa.Table:
    rows = [blank_row(u, u.replace("/src/", "/dst/"), status=status) for u in source_uris]
    return pa.Table.from_pylist(
        [{k: r[k] for k in ROW_SCHEMA.names} for r in rows], schema=ROW_SCHEMA
    )


def test_every_input_gets_exactly_one_row_whatever_the_pipeline_returned(tmp_path, bucket_rows):
    """Duplicates (a retried task's twin) keep the first row; an input that never came back is
    an error row, in the final manifest and in a shard (so that a resume redoes it)."""
    dst = tmp_path / "dst"
    items = [Item(f"/src/{k}.jpg", f"{k}.jpg") for k in "abcde"] + [Item("/abs.jpg", "/abs.jpg")]
    m = Manifest(str(dst), "run1", shard_size=2)
    plan = plan_inputs(items, str(dst), "jpeg", tmp_path / "work")
    collector = Collector(plan, m)
    collector.add(rows_back(["/src/a.jpg", "/src/c.jpg"]))
    collector.add(rows_back(["/src/a.jpg"], "error"))  # the twin: the first row stays
    collector.add(rows_back(["/src/e.jpg"], "error"))
    counts = finish(plan, m, collector, "model-x")
    rows = pq.read_table(dst / MANIFEST).to_pylist()
    by_uri = {r["source_uri"]: r for r in rows}
    assert len(rows) == len(by_uri) == 6
    assert {u: r["status"] for u, r in by_uri.items()} == {
        "/src/a.jpg": "ok",
        "/src/b.jpg": "error",
        "/src/c.jpg": "ok",
        "/src/d.jpg": "error",
        "/src/e.jpg": "error",
        "/abs.jpg": "error",  # refused: outside DST
    }
    for lost in ("/src/b.jpg", "/src/d.jpg"):
        assert by_uri[lost]["error"] == LOST and by_uri[lost]["model_id"] == "model-x"
    assert {r["run_id"] for r in rows} == {"run1"}
    assert counts == {"ok": 2, "error": 4}
    shards = [pq.read_table(u) for u in m.completed_shards()]
    in_shards = pa.concat_tables(shards).to_pylist()
    assert len(in_shards) == 6  # the 4 collected (duplicate included) and the 2 lost
    assert {r["source_uri"] for r in in_shards if r["error"] == LOST} == {
        "/src/b.jpg",
        "/src/d.jpg",
    }


def test_plan_blocks_hold_every_input_once_in_listing_order(tmp_path, bucket_rows, monkeypatch):
    monkeypatch.setattr(manifest_mod, "MAX_BLOCKS", 4)
    items = [Item(f"/src/{i:02d}.jpg", f"{i:02d}.jpg") for i in range(10)]
    films = [Item(f"/src/film{i}.{ext}", f"film{i}.{ext}") for i, ext in enumerate(["MP4", "webm"])]
    plan = plan_inputs(items + films, str(tmp_path / "dst"), "png", tmp_path / "work")
    m = Manifest(str(tmp_path / "dst"), "run1")
    blocks, n = write_plan_blocks(plan, m, min_rows=2)
    assert len(blocks) == 4 and n == 10  # at most MAX_BLOCKS: 3 rows each, the last 1
    got = read_plan_blocks(blocks, m.storage)
    assert sorted(got["source_uri"]) == [it.uri for it in items]
    assert set(got) == {"source_uri", "output_uri"}
    video_blocks, n = write_plan_blocks(plan, m, min_rows=2, videos=True)
    assert n == 2 and set(blocks).isdisjoint(video_blocks)
    got = read_plan_blocks(video_blocks, m.storage)
    outputs = dict(zip(got["source_uri"], got["output_uri"], strict=True))
    # a video keeps its container (a WebM input holds H.264 as Matroska), never the image format
    assert outputs == {
        "/src/film0.MP4": str(tmp_path / "dst" / "film0.mp4"),
        "/src/film1.webm": str(tmp_path / "dst" / "film1.mkv"),
    }
    m.remove_plan()
    assert not (tmp_path / "dst" / "_manifest" / "plan-run1").exists()


def test_manifest_sources_stream_with_keys_below_their_common_folder(tmp_path):
    uris = ["s3://b/scans/x/1.tif", "s3://b/scans/y/2.tif", None, "s3://b/scans/x/3.tif"]
    pq.write_table(pa.table({"uri": uris}), tmp_path / "m.parquet", row_group_size=2)
    items = list(iter_items(str(tmp_path / "m.parquet")))
    assert [(it.uri, it.key) for it in items] == [
        ("s3://b/scans/x/1.tif", "x/1.tif"),
        ("s3://b/scans/y/2.tif", "y/2.tif"),
        ("s3://b/scans/x/3.tif", "x/3.tif"),
    ]
    (tmp_path / "m.csv").write_text("path\nimgs/a.jpg\nimgs/b/c.jpg\n")
    assert [it.key for it in iter_items(str(tmp_path / "m.csv"))] == ["a.jpg", "b/c.jpg"]


def test_folder_listing_streams_in_key_order(tmp_path):
    for rel in ("a.jpg", "a/x.jpg", "a0.jpg", "a-b/y.jpg", "b.jpg", ".hidden/z.jpg", "a/.d.jpg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    keys = [it.key for it in iter_items(str(tmp_path))]
    assert keys == sorted(keys) == ["a-b/y.jpg", "a.jpg", "a/x.jpg", "a0.jpg", "b.jpg"]
    assert [it.key for it in list_items(str(tmp_path))] == keys
