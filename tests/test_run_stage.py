"""``colorize run``: the archive job on local folders and on a loopback S3 server. Every input
gets exactly one manifest row (ok / error / skipped), bad inputs are error rows, awkward valid
inputs are colorized at their own size, resume redoes only what is missing or failed, and a
model actor killed mid-run loses nothing."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from colorization.checkpoint import save_checkpoint
from colorization.models import create_model
from colorization.tables import load_zhang_313
from pipeline.archive_workers import actor_threads
from pipeline.manifest import MANIFEST, output_key
from pipeline.run_stage import RunConfig, run
from pipeline.sources import StorageOptions
from tests.archive_fixtures import (
    Expected,
    write_awkward_inputs,
    write_bad_inputs,
    write_grey_copies,
)
from tests.conftest import make_bucket, require
from tests.shared_paths import SHARED_DATA, SHARED_REFERENCE
from tests.video_fixtures import corrupt_packet, pattern, probe, write_video

pytestmark = [pytest.mark.timeout(300), pytest.mark.ray]

COCO_VAL = SHARED_DATA / "coco-tiny" / "val2017"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """An untrained small class model: the job's mechanics do not depend on its quality."""
    zhang = load_zhang_313(require(SHARED_REFERENCE / "zhang2016_pts_in_hull.npy"))
    torch.manual_seed(0)
    net = create_model("cls-afm", base_width=8, num_classes=zhang.num_classes)
    return save_checkpoint(tmp_path_factory.mktemp("model") / "tiny", net, zhang)


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> tuple[Path, list[Expected]]:
    root = tmp_path_factory.mktemp("archive")
    photo = sorted(require(COCO_VAL).glob("*.jpg"))[0]
    expected = write_grey_copies(COCO_VAL, root, n=6)
    expected += write_bad_inputs(root, photo=photo)
    expected += write_awkward_inputs(root, photo)
    return root, expected


def manifest(dst: str, storage: StorageOptions | None = None) -> list[dict]:
    from pipeline.sources import read_bytes

    data = read_bytes(f"{dst}/{MANIFEST}", storage or StorageOptions())
    return pq.read_table(io.BytesIO(data)).to_pylist()


def check_rows(rows: list[dict], src: str, expected: list[Expected], read) -> None:
    """Exactly one row per input, with the expected status, message and output."""
    by_uri = {r["source_uri"]: r for r in rows}
    assert len(by_uri) == len(rows) == len(expected)
    for e in expected:
        r = by_uri[f"{src}/{e.key}"]
        assert r["status"] == e.status, (e, r)
        if e.status == "error":
            assert e.error_contains in r["error"].lower(), (e, r)
            assert r["output_uri"] == ""
        else:
            im = Image.open(io.BytesIO(read(r["output_uri"])))
            assert im.size == e.size and (r["width"], r["height"]) == e.size, (e, r)
            assert r["output_uri"].endswith(output_key(e.key, "jpeg"))
            assert r["seconds"] > 0 and r["colorfulness"] >= 0
            assert r["tables_fingerprint"] and r["model_id"]


def test_model_actors_share_the_cores_unless_told():
    cores = os.cpu_count() or 1
    assert actor_threads(RunConfig(src="a", dst="b", workers=1)) == cores
    assert actor_threads(RunConfig(src="a", dst="b", workers=2)) == max(1, cores // 2)
    assert actor_threads(RunConfig(src="a", dst="b", workers=4 * cores)) == 1
    assert actor_threads(RunConfig(src="a", dst="b", workers=8, threads_per_worker=3)) == 3


def test_cli_run_defaults_are_the_configs(monkeypatch):
    """`colorize run` without options runs RunConfig's defaults; options reach the config."""
    from typer.testing import CliRunner

    import pipeline.commands
    import pipeline.run_stage
    from pipeline.cli import app

    seen = []
    monkeypatch.setattr(pipeline.run_stage, "run", lambda cfg: seen.append(cfg) or {"error": 0})
    monkeypatch.setattr(pipeline.commands, "connect", lambda **kw: False)  # no Ray to start
    assert CliRunner().invoke(app, ["run", "in", "out"]).exit_code == 0
    assert seen[-1] == RunConfig(src="in", dst="out")
    res = CliRunner().invoke(app, ["run", "in", "out", "--workers", "3", "--format", "png"])
    assert res.exit_code == 0
    assert seen[-1] == RunConfig(src="in", dst="out", workers=3, format="png")
    args = ["run", "in", "out", "--no-stabilize", "--video-segment-frames", "90"]
    args += ["--video-crf", "23", "--video-pix-fmt", "yuv420p10le"]
    assert CliRunner().invoke(app, args).exit_code == 0
    assert seen[-1] == RunConfig(
        src="in", dst="out", video_stabilize=False, video_segment_frames=90, video_crf=23,
        video_pix_fmt="yuv420p10le",
    )  # fmt: skip


def test_local_archive_every_input_has_its_row(ray_local, tmp_path, archive, tiny_model):
    root, expected = archive
    dst = tmp_path / "out"
    summary = run(RunConfig(src=str(root), dst=str(dst), model=str(tiny_model), progress=False))
    n_bad = sum(e.status == "error" for e in expected)
    assert (summary["ok"], summary["error"], summary["skipped"]) == (
        len(expected) - n_bad,
        n_bad,
        0,
    )
    check_rows(manifest(str(dst)), str(root), expected, lambda uri: Path(uri).read_bytes())
    # no temporary or half-written file is left beside the outputs
    leftovers = [p for p in dst.rglob("*") if p.is_file() and p.name.endswith(".tmp")]
    assert leftovers == []


def test_outputs_are_the_inference_paths_even_beside_failed_rows(ray_local, tmp_path):
    """The job's PNG outputs are what :func:`colorize_images` gives for the same files (the
    one inference path split over Ray stages), with broken inputs inside the model's batches:
    each image gets its own chroma back, whatever failed beside it. The shipped model: an
    untrained one gives every image nearly the same chroma, which would hide a mix-up."""
    from colorization.inference import colorize_images
    from colorization.shipped import load

    src = tmp_path / "src"
    write_grey_copies(require(COCO_VAL), src, n=6)
    grey = src / "grey"
    (grey / "0_empty.jpg").write_bytes(b"")  # sorts first: the first row of the first batch
    names = sorted(p.name for p in grey.iterdir())
    (grey / names[3]).write_bytes((grey / names[3]).read_bytes()[:300])  # mid-batch
    cfg = RunConfig(src=str(grey), dst=str(tmp_path / "out"), format="png")
    summary = run(RunConfig(**{**cfg.__dict__, "batch_size": 4, "progress": False}))
    assert (summary["ok"], summary["error"]) == (5, 2)
    model, table, _ = load(cfg.model)
    good = [n for n in names if n not in ("0_empty.jpg", names[3])]
    expected = colorize_images(model, table, [Image.open(grey / n) for n in good], batch_size=3)
    for name, want in zip(good, expected, strict=True):
        got = np.asarray(Image.open(tmp_path / "out" / output_key(name, "png")), np.int16)
        assert got.shape == np.asarray(want).shape
        assert np.abs(got - np.asarray(want, np.int16)).max() <= 1, name


def test_two_jobs_in_one_process_each_run_as_if_alone(ray_local, tmp_path):
    """Two archive jobs with different settings, one after the other in the caller's Ray: each
    gives its own settings' pixels (PNG at saturation 0.3 and rebalance correction 1, JPEG at
    1.5 and the model's own correction, against the inference path at each), its own
    manifest, and the caller's Ray Data context is the same object with the same settings
    after each."""
    from ray.data import DataContext

    from colorization.inference import colorize_images
    from colorization.shipped import load

    src = tmp_path / "src"
    write_grey_copies(require(COCO_VAL), src, n=3)
    grey = src / "grey"
    names = sorted(p.name for p in grey.iterdir())
    ctx = DataContext.get_current()
    before = (ctx.enable_progress_bars, repr(ctx.execution_options.resource_limits))
    jobs = {
        "png": RunConfig(
            src=str(grey),
            dst=str(tmp_path / "a"),
            format="png",
            saturation=0.3,
            rebalance_correction=1.0,
        ),
        "jpeg": RunConfig(
            src=str(grey), dst=str(tmp_path / "b"), saturation=1.5, quality=95, in_flight_mb=0
        ),
    }
    summaries = {}
    for fmt, cfg in jobs.items():
        summaries[fmt] = run(RunConfig(**{**cfg.__dict__, "batch_size": 2, "progress": False}))
        assert DataContext.get_current() is ctx
        assert (ctx.enable_progress_bars, repr(ctx.execution_options.resource_limits)) == before
    assert summaries["png"]["run_id"] != summaries["jpeg"]["run_id"]

    model, table, _ = load(jobs["png"].model)
    images = [Image.open(grey / n) for n in names]
    want = {
        cfg.saturation: colorize_images(
            model,
            table,
            images,
            saturation=cfg.saturation,
            rebalance_correction=cfg.rebalance_correction,
        )
        for cfg in jobs.values()
    }
    for fmt, cfg in jobs.items():
        rows = manifest(cfg.dst)
        assert sorted(Path(r["source_uri"]).name for r in rows) == names
        assert {r["status"] for r in rows} == {"ok"}
        assert {r["run_id"] for r in rows} == {summaries[fmt]["run_id"]}
        others = want[1.5 if cfg.saturation == 0.3 else 0.3]
        for name, ref_own, ref_other in zip(names, want[cfg.saturation], others, strict=True):
            out = Image.open(Path(cfg.dst) / output_key(name, fmt))
            assert out.format == {"png": "PNG", "jpeg": "JPEG"}[fmt]
            got = np.asarray(out, np.float32)
            own = np.abs(got - np.asarray(ref_own, np.float32)).mean()
            other = np.abs(got - np.asarray(ref_other, np.float32)).mean()
            assert own < (0.5 if fmt == "png" else 3.0) and own < other / 2, (fmt, name, own, other)


def test_resume_redoes_only_missing_and_failed_inputs(ray_local, tmp_path, tiny_model):
    src = tmp_path / "src"
    write_grey_copies(require(COCO_VAL), src, n=8)
    grey = src / "grey"
    names = sorted(p.name for p in grey.iterdir())
    broken = grey / names[3]
    good_bytes = broken.read_bytes()
    broken.write_bytes(good_bytes[:100])  # fails in the first run
    dst = tmp_path / "out"
    cfg = RunConfig(src=str(grey), dst=str(dst), model=str(tiny_model), progress=False)
    first = run(RunConfig(**{**cfg.__dict__, "limit": 5}))
    assert (first["ok"], first["error"]) == (4, 1)
    mtimes = {p: p.stat().st_mtime_ns for p in dst.glob("*.jpg")}

    broken.write_bytes(good_bytes)  # repaired
    second = run(RunConfig(**{**cfg.__dict__, "resume": True}))
    assert second["processed"] == 4 and second["carried_over"] == 4  # 3 missing + 1 failed
    assert (second["ok"], second["error"]) == (8, 0)
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())  # finished: untouched
    rows = manifest(str(dst))
    assert sorted(Path(r["source_uri"]).name for r in rows) == names

    third = run(RunConfig(**{**cfg.__dict__, "resume": True}))
    assert third["processed"] == 0 and third["ok"] == 8
    assert len(manifest(str(dst))) == 8


def test_s3_archive_to_another_bucket(ray_local, s3_server, tmp_path, archive, tiny_model):
    root, expected = archive
    src, dst = make_bucket(s3_server), make_bucket(s3_server)
    for e in expected:
        src.put(f"scans/{e.key}", root / e.key)
    storage = StorageOptions(endpoint_url=s3_server)
    cfg = RunConfig(
        src=src.uri("scans"),
        dst=dst.uri("colour"),
        model=str(tiny_model),
        storage=storage,
        progress=False,
    )
    summary = run(cfg)
    assert summary["ok"] + summary["error"] == len(expected)

    def read(uri: str) -> bytes:
        key = uri.split("/", 3)[3]
        return dst.client.get_object(Bucket=dst.name, Key=key)["Body"].read()

    check_rows(manifest(cfg.dst, storage), cfg.src.rstrip("/"), expected, read)
    keys = {o["Key"] for o in dst.client.list_objects_v2(Bucket=dst.name)["Contents"]}
    assert len([k for k in keys if not k.startswith("colour/_manifest/")]) == summary["ok"] + 1
    again = run(RunConfig(**{**cfg.__dict__, "resume": True}))
    assert again["processed"] == summary["error"]  # only the failed ones are retried


@pytest.mark.timeout(420)
def test_s3_archive_colorizes_a_film_in_segments_beside_broken_videos(
    ray_local, s3_server, tmp_path, tiny_model
):
    """A real clip (36 frames, AAC sound) beside broken videos (truncated, a frame corrupt in
    its third segment, garbage) and a photo in a loopback S3 archive. The clip is shared out
    in segments of 12 frames and joined: one ok row whose output keeps its size, times and
    sound. Each broken video is one error row and no output, the one whose frames fail part
    way included; no segment file is left; ``--resume`` redoes only the broken ones."""
    real = require(SHARED_DATA / "video" / "realshort.mp4")
    whole = write_video(tmp_path / "cut.mp4", [pattern(t) for t in range(30)], faststart=True)
    data = whole.read_bytes()
    corrupt = corrupt_packet(whole, tmp_path / "corrupt.mp4", frame=28)
    src, dst = make_bucket(s3_server), make_bucket(s3_server)
    src.put("films/reel 1.mp4", real)
    src.put("films/cut.mp4", data[: int(len(data) * 0.6)])  # its index, 60% of its frames
    src.put("films/corrupt.mp4", corrupt)
    src.put("films/garbage.webm", np.random.default_rng(0).bytes(5000))
    src.put("films/photo.jpg", sorted(require(COCO_VAL).glob("*.jpg"))[0])
    storage = StorageOptions(endpoint_url=s3_server)
    cfg = RunConfig(
        src=src.uri("films"),
        dst=dst.uri("colour"),
        model=str(tiny_model),
        storage=storage,
        video_segment_frames=12,
        video_crf=23,
        video_pix_fmt="yuv420p10le",  # 10-bit segments, joined
        progress=False,
    )
    summary = run(cfg)
    assert (summary["ok"], summary["error"]) == (2, 3), summary
    rows = {r["source_uri"].rsplit("/", 1)[1]: r for r in manifest(cfg.dst, storage)}
    assert sorted(rows) == ["corrupt.mp4", "cut.mp4", "garbage.webm", "photo.jpg", "reel 1.mp4"]

    film = rows["reel 1.mp4"]
    assert film["status"] == "ok" and film["mode"] == "video", film
    assert film["output_uri"] == dst.uri("colour/reel 1.mp4")
    assert (film["frames"], film["width"], film["height"]) == (36, 320, 240)
    assert film["fps"] == pytest.approx(probe(real)["rate"], rel=1e-3)
    assert film["duration"] == pytest.approx(probe(real)["duration"], abs=0.05)
    assert film["shots"] >= 1 and film["colorfulness"] > 0 and film["seconds"] > 0
    assert film["flicker"] > 0 and film["flicker_ab"] > 0  # RGB 0..1 and ab units, squared
    out = tmp_path / "reel.mp4"
    out.write_bytes(dst.client.get_object(Bucket=dst.name, Key="colour/reel 1.mp4")["Body"].read())
    got, want = probe(out), probe(real)
    assert all(got[k] == want[k] for k in ("size", "times", "audio")), (got, want)
    assert b"crf=23.0" in out.read_bytes()  # x264's settings, in its first frame's SEI
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p10le"

    assert "truncated: 1 of 30 frames present" in rows["cut.mp4"]["error"], rows["cut.mp4"]
    assert "frames 24-29" in rows["corrupt.mp4"]["error"], rows["corrupt.mp4"]
    assert rows["corrupt.mp4"]["frames"] is None and rows["corrupt.mp4"]["width"] == 96
    assert "cannot be read as a video" in rows["garbage.webm"]["error"], rows["garbage.webm"]
    keys = {o["Key"] for o in dst.client.list_objects_v2(Bucket=dst.name)["Contents"]}
    assert not [k for k in keys if "/video-" in k], keys  # segments removed
    outputs = sorted(k for k in keys if not k.startswith("colour/_manifest/"))
    assert outputs == ["colour/manifest.parquet", "colour/photo.jpg", "colour/reel 1.mp4"]

    again = run(RunConfig(**{**cfg.__dict__, "resume": True}))
    assert (again["processed"], again["carried_over"], again["error"]) == (3, 2, 3), again


def _actor_pids() -> list[int]:
    out = subprocess.run(["pgrep", "-f", "MapWorker"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.mark.timeout(420)
def test_killed_model_actor_loses_no_rows(tmp_path, tiny_model):
    """SIGKILL the model actor mid-run: Ray restarts it, re-runs its batches, every row is
    there once and ok (a separate `colorize run` process with its own Ray)."""
    src = tmp_path / "src"
    write_grey_copies(require(COCO_VAL), src, n=40)
    dst = tmp_path / "out"
    colorize = str(Path(sys.executable).parent / "colorize")
    cmd = [colorize, "run", str(src / "grey"), str(dst), "--model", str(tiny_model)]
    cmd += ["--batch-size", "4", "--no-progress"]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and len(list(dst.glob("*.jpg"))) < 4:
            time.sleep(0.2)
        pids = _actor_pids()
        assert pids, "no model actor found"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, out.decode()[-3000:]
    rows = manifest(str(dst))
    assert len(rows) == 40 and {r["status"] for r in rows} == {"ok"}
    assert len({r["source_uri"] for r in rows}) == 40
    assert len(list(dst.glob("*.jpg"))) == 40


def test_cli_exit_code_says_whether_inputs_failed(ray_local, tmp_path, archive, tiny_model):
    from typer.testing import CliRunner

    from pipeline.cli import app

    root, _ = archive
    args = ["run", str(root / "bad"), str(tmp_path / "o"), "--model", str(tiny_model)]
    res = CliRunner().invoke(app, [*args, "--no-progress"])
    assert res.exit_code == 1 and '"error": 8' in res.output
    res = CliRunner().invoke(app, [*args, "--no-progress", "--allow-errors", "--format", "png"])
    assert res.exit_code == 0
    shutil.rmtree(tmp_path / "o")
    ok = CliRunner().invoke(
        app,
        ["run", str(root / "awkward"), str(tmp_path / "o"), "--model", str(tiny_model)]
        + ["--format", "png", "--no-progress"],
    )
    assert ok.exit_code == 0, ok.output
    rgba = Image.open(tmp_path / "o" / "rgba.png")
    assert rgba.mode == "RGBA"  # PNG keeps the input's alpha
    src_alpha = np.asarray(Image.open(root / "awkward" / "rgba.png").getchannel("A"))
    assert np.array_equal(np.asarray(rgba.getchannel("A")), src_alpha)


def test_job_entrypoint_runs_its_config_with_overrides(ray_local, tmp_path, tiny_model):
    from jobs.run import main

    src = tmp_path / "src"
    write_grey_copies(require(COCO_VAL), src, n=3)
    (src / "grey" / "broken.jpg").write_bytes(b"")
    config = Path(__file__).resolve().parents[1] / "jobs" / "configs" / "run_local.yaml"
    args = ["--config", str(config), f"src={src / 'grey'}", f"dst={tmp_path / 'out'}"]
    args += [f"model={tiny_model}", "progress=false"]
    assert main(args) == 1  # the empty file failed
    assert main([*args, "allow_errors=true"]) == 0  # resumed: only the failed input again
    rows = manifest(str(tmp_path / "out"))
    assert sorted(r["status"] for r in rows) == ["error", "ok", "ok", "ok"]


def test_transient_storage_errors_are_retried(ray_local, s3_server, flaky_s3, tmp_path, tiny_model):
    """Every third S3 request answers 503 SlowDown: reads, writes and the manifest retry with
    backoff, and every input ends ok."""
    src, dst = make_bucket(s3_server), make_bucket(s3_server)
    local = tmp_path / "src"
    expected = write_grey_copies(require(COCO_VAL), local, n=6)
    for e in expected:
        src.put(e.key, local / e.key)
    storage = StorageOptions(endpoint_url=flaky_s3.endpoint)
    cfg = RunConfig(src=src.uri("grey"), dst=dst.uri("out"), model=str(tiny_model), storage=storage)
    summary = run(RunConfig(**{**cfg.__dict__, "progress": False}))
    assert (summary["ok"], summary["error"]) == (6, 0)
    assert flaky_s3.failed >= 5  # the listing, reads, writes and manifest all met failures
    rows = manifest(cfg.dst, StorageOptions(endpoint_url=s3_server))
    assert len(rows) == 6 and {r["status"] for r in rows} == {"ok"}
