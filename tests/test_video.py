"""Video colorization (colorization/video.py, flow.py, videofiles.py, ``colorize video``): a real
clip from ``../shared/data/video`` and small videos encoded here with PyAV."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from colorization import flow as fl
from colorization.video import (
    SEGMENT_WARMUP,
    ShotCuts,
    Stabilizer,
    StabilizerParams,
    VideoError,
    VideoInfo,
    colorize_segment,
    colorize_video,
    combine_segments,
    join_segments,
    probe_video,
    split_segments,
)
from colorization.videofiles import output_path
from tests.conftest import DATA, require
from tests.video_fixtures import decode_rgb, pattern, probe, write_video

pytestmark = pytest.mark.timeout(120)

REALSHORT = DATA / "video" / "realshort.mp4"


@pytest.fixture(scope="module")
def model():
    from colorization.shipped import load

    net, table, _ = load()
    return net, table


@pytest.fixture(scope="module")
def realshort_runs(model, tmp_path_factory):
    """realshort (320x240, 36 frames, AAC sound) colorized frame by frame and stabilized."""
    src = require(REALSHORT)
    out = tmp_path_factory.mktemp("realshort")
    seen = []
    runs = {
        stab: colorize_video(src, out / f"{stab}.mp4", *model, stabilize=stab, progress=seen.append)
        for stab in (False, True)
    }
    return src, runs, seen


# --- the file: what is kept ----------------------------------------------------------------------
def test_real_clip_keeps_size_times_duration_and_sound(realshort_runs, model):
    src, runs, seen = realshort_runs
    own = model[0].inference_defaults  # the settings it ran at are the model's own, recorded
    for run in runs.values():
        assert {k: run.settings[k] for k in own} == own
    want = probe(src)
    for result in runs.values():
        got = probe(Path(result.output))
        assert got["size"] == want["size"] == (result.width, result.height) == (320, 240)
        assert got["times"] == pytest.approx(want["times"], abs=1e-4)  # same frames, same times
        assert len(got["times"]) == result.frames == 36
        assert got["rate"] == want["rate"]
        assert got["duration"] == pytest.approx(want["duration"], abs=0.002)
        assert got["audio"] == want["audio"] and want["audio"][0] > 0  # every packet, same bytes
        assert result.audio_streams == 1 and result.shots == 1
        assert result.fps == pytest.approx(float(want["rate"]))
        assert result.colorfulness > 5 and result.flicker is not None
    assert not list(Path(runs[True].output).parent.glob(".*partial*"))
    # progress after every batch of 8: frames/s and the time left to the 36th frame
    assert [p.frames for p in seen[:5]] == [8, 16, 24, 32, 36]
    assert all(p.total == 36 and p.fps > 0 for p in seen)
    assert seen[0].eta_s > 0 and seen[4].eta_s == 0


def test_stabilized_real_clip_flickers_less_with_the_same_colours(realshort_runs):
    from colorization.metrics import psnr

    _, runs, _ = realshort_runs
    assert runs[True].flicker < runs[False].flicker
    assert runs[True].flicker_ab < 0.8 * runs[False].flicker_ab  # the colour's own: 0.58 measured
    a, b = decode_rgb(Path(runs[False].output)), decode_rgb(Path(runs[True].output))
    assert np.mean([psnr(x, y) for x, y in zip(a, b, strict=True)]) > 30
    assert runs[True].colorfulness == pytest.approx(runs[False].colorfulness, rel=0.1)


def test_rotation_and_sound_of_a_synthetic_video_are_kept(model, tmp_path):
    src = write_video(tmp_path / "in.mp4", [pattern(t) for t in range(6)], rotation=90, audio=True)
    result = colorize_video(src, tmp_path / "out" / "in.mp4", *model, batch_size=4)
    want, got = probe(src), probe(Path(result.output))
    assert want["rotation"] == got["rotation"] == result.rotation == 90
    assert got["audio"] == want["audio"] and want["audio"][0] > 0
    assert got["times"] == pytest.approx(want["times"]) and got["size"] == (96, 64)
    assert got["rate"] == Fraction(25)


def test_a_grey_source_is_colorized_and_keeps_its_lightness(model, tmp_path):
    from colorization import color

    grey = [np.repeat(pattern(t)[..., :1], 3, -1) for t in range(5)]
    src = write_video(tmp_path / "grey.mkv", grey)
    result = colorize_video(src, output_path(src, tmp_path / "out"), *model, measure=False)
    assert result.output.endswith("grey.mkv") and result.flicker is None
    before, after = decode_rgb(src), decode_rgb(Path(result.output))
    assert len(after) == 5
    L0 = color.lightness_u8(before[2])
    L1 = color.lightness_u8(after[2])
    assert np.abs(L0 - L1).mean() < 1.5  # its own L, through two lossy encodings
    ab = color.rgb_to_lab(after[2])[..., 1:]
    assert np.abs(ab).mean() > 2  # colour where there was none


def test_a_ten_bit_output_keeps_the_stabilized_colour_steadier(realshort_runs, model, tmp_path):
    import av

    from colorization import color
    from colorization.flow import grey_u8
    from colorization.metrics import FlickerMeter

    src, runs, _ = realshort_runs
    ten = colorize_video(src, tmp_path / "ten.mp4", *model, pix_fmt="yuv420p10le")
    with av.open(ten.output) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p10le"
    assert ten.settings["pix_fmt"] == "yuv420p10le" and ten.frames == 36
    # the same colours as the 8-bit output, and their flicker after decoding lower: 8-bit
    # Y'CbCr rounds the colour of every frame anew (docs/video.md, the encoding floor)
    originals = decode_rgb(src)
    eight, ten_rgb = decode_rgb(Path(runs[True].output)), decode_rgb(Path(ten.output))
    meter = FlickerMeter(2, spaces=("ab",))
    for o, a, b in zip(originals, eight, ten_rgb, strict=True):
        meter.add(grey_u8(color.lightness_u8(o)), a, b)
    assert np.abs(np.stack(eight).astype(int) - np.stack(ten_rgb)).mean() < 3  # both lossy
    eight_ab, ten_ab = meter.of("ab")
    assert ten_ab < 0.9 * eight_ab  # 0.71 against 0.99 measured


# --- what must fail, and leave nothing -----------------------------------------------------------
def test_broken_videos_raise_a_clear_error_and_leave_no_output(model, tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (12, 64, 96, 3), dtype=np.uint8)
    good = write_video(tmp_path / "good.mp4", list(noise), faststart=True)  # header first
    data = good.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: int(len(data) * 0.6)])  # the header, 60% of frames
    (tmp_path / "garbage.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    (tmp_path / "empty.mov").write_bytes(b"")
    (tmp_path / "text.avi").write_text("not a video\n" * 50)
    out = tmp_path / "out"
    for name, says in [
        ("cut.mp4", "truncated"),
        ("garbage.mp4", "cannot be read as a video"),
        ("empty.mov", "cannot be read as a video"),
        ("text.avi", "cannot be read as a video"),
    ]:
        with pytest.raises(VideoError, match=says) as err:
            colorize_video(tmp_path / name, out / name, *model, measure=False, batch_size=4)
        assert str(err.value).startswith(str(tmp_path / name))
    with pytest.raises(VideoError, match="no encoder"):
        colorize_video(good, out / "good.mp4", *model, codec="no-such-codec")
    with pytest.raises(VideoError, match="mpeg4 does not take 'yuv420p10le'; it takes yuv420p"):
        colorize_video(good, out / "good.mp4", *model, codec="mpeg4", pix_fmt="yuv420p10le")
    assert not out.exists() or not list(out.iterdir())


# --- shot cuts and the stabilizer on their own -----------------------------------------------------
def test_shot_cut_detection_finds_a_synthetic_cut():
    other = [np.roll(255 - pattern(t), 17, axis=0) // 2 for t in range(6)]  # another, darker scene
    frames = [pattern(t) for t in range(6)] + other
    cuts = ShotCuts()
    found = [i for i, rgb in enumerate(frames) if cuts(*_grey_and_L(rgb[..., 0]))]
    assert found == [6] and cuts.cuts == 1
    # the flicker of an old film's exposure is no cut, though it moves the histogram as much
    flick, exposure = ShotCuts(), [1 + 0.25 * (-1) ** t for t in range(8)]
    greys = [
        np.clip(pattern(t)[..., 0] * k, 0, 255).astype(np.uint8) for t, k in enumerate(exposure)
    ]
    changes = [
        ShotCuts.change(*map(ShotCuts.histogram, p))
        for p in zip(greys[1:], greys[:-1], strict=True)
    ]
    assert min(changes) > StabilizerParams.cut
    assert not any(flick(*_grey_and_L(g)) for g in greys)


def _grey_and_L(grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return grey, grey.astype(np.float32) / 2.55


def test_stabilizer_follows_the_motion_and_damps_flickering_colour():
    """A pattern moving 2 px a frame whose predicted chroma flickers frame to frame: the
    stabilized chroma moves with the pattern and flickers far less; a cut takes the
    prediction as it is."""
    rng = np.random.default_rng(0)
    stab = Stabilizer(StabilizerParams())
    raw_steps, stab_steps = [], []
    prev_raw = prev_out = None
    for t in range(12):
        grey = pattern(t)[..., 0]
        L = grey.astype(np.float32) / 2.55
        base = np.stack([L - 50, 50 - L]) * 0.5  # colour tied to the pattern, so it moves with it
        raw = (base + rng.normal(0, 8, (2, 1, 1))).astype(np.float32)  # a jump per frame
        out = stab(grey, L, raw)
        if prev_raw is not None:  # compare away from the edge the pattern enters at
            raw_steps.append(np.abs(raw - np.roll(prev_raw, 2, axis=2))[:, :, 8:].mean())
            stab_steps.append(np.abs(out - np.roll(prev_out, 2, axis=2))[:, :, 8:].mean())
        prev_raw, prev_out = raw, out
    assert np.mean(stab_steps) < 0.4 * np.mean(raw_steps)
    assert np.array_equal(stab(grey, L, raw, cut=True), raw)


def test_warp_and_visibility_of_a_translation():
    a, b = pattern(0)[..., 0], pattern(1)[..., 0]  # b is a moved 2 px right
    flow = np.zeros((*a.shape, 2), np.float32)
    flow[..., 0] = 2.0  # from a to b: each pixel's point lies 2 px right in b
    warped, inside = fl.warp(b, flow)
    assert np.abs(warped[:, :-2].astype(int) - a[:, :-2]).max() <= 1
    assert not inside[:, -1].any() and inside[:, :-2].all()
    back = -flow
    vis = fl.visible(flow, back)
    assert vis[:, :-2].all() and not vis[:, -1].any()
    est = fl.DisFlow("fast")(a, b)
    assert np.median(est[8:-8, 8:-8, 0]) == pytest.approx(2.0, abs=0.3)


# --- the command -------------------------------------------------------------------------------------
def test_colorize_video_command(tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli import app

    src = write_video(tmp_path / "clip.mp4", [pattern(t) for t in range(3)])
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"nothing")
    out = tmp_path / "out"
    args = ["video", str(src), str(bad), "--out", str(out), "--no-stabilize", "--crf", "0"]
    res = CliRunner().invoke(app, [*args, "--rebalance-correction", "1"])
    assert res.exit_code == 1, res.output
    assert '"frames": 3' in res.output and '"stabilized": false' in res.output
    assert '"crf": 0' in res.output and '"rebalance_correction": 1.0' in res.output
    assert "error:" in res.output and "bad.mp4" in res.output
    assert sorted(p.name for p in out.iterdir()) == ["clip.mp4"]


# --- long videos in segments ---------------------------------------------------------------------
def test_split_segments_covers_every_frame_once():
    segs = split_segments(100, 30, warmup=24)
    assert [(s.start, s.end, s.warmup) for s in segs] == [
        (0, 30, 0), (30, 60, 24), (60, 90, 24), (90, 100, 24),
    ]  # fmt: skip
    # a remainder under a quarter of a segment joins the one before
    assert [(s.start, s.end) for s in split_segments(95, 30)] == [(0, 30), (30, 60), (60, 95)]
    assert [(s.start, s.end) for s in split_segments(10, 30)] == [(0, 10)]
    # the default warm-up leaves at most 2% of what was carried from before the segment
    carry = StabilizerParams().carry
    assert carry**SEGMENT_WARMUP <= 0.02 < carry ** (SEGMENT_WARMUP - 1)
    assert split_segments(200, 100)[1].warmup == SEGMENT_WARMUP


def _segments(src, model, tmp_path, length, warmup, only=None):
    info = probe_video(src)
    segs = split_segments(info.frames, length, warmup)
    out = {}
    for s in segs if only is None else [segs[only]]:
        out[s.index] = colorize_segment(src, tmp_path / f"seg{s.index}.mp4", info, s, *model)
    return info, segs, out


def test_a_film_colorized_in_segments_joins_into_the_one_pass_film(realshort_runs, model, tmp_path):
    """realshort in three segments (as the archive job's actors share a film), joined with its
    sound: the same file as a whole (frames, times, size, audio packets) and, thanks to each
    segment's warm-up, the same colours as one stabilized pass, seams included."""
    src, runs, _ = realshort_runs
    info, segs, results = _segments(src, model, tmp_path, 12, warmup=24)
    assert info.frames == 36 and info.audio_streams == 1 and len(segs) == 3
    joined = tmp_path / "joined.mp4"
    paths = [tmp_path / f"seg{s.index}.mp4" for s in segs]
    duration = join_segments(src, paths, joined, info, segs)
    whole, got = probe(src), probe(joined)
    for k in ("size", "times", "rotation", "audio"):
        assert got[k] == whole[k], k
    assert abs(duration - whole["duration"]) < 0.05
    stats = combine_segments(list(results.values()))
    assert stats["frames"] == 36 and stats["shots"] == runs[True].shots
    assert stats["colorfulness"] == pytest.approx(runs[True].colorfulness, rel=0.03)

    one_pass = np.asarray(decode_rgb(runs[True].output), np.float32)
    diff = np.abs(np.asarray(decode_rgb(joined), np.float32) - one_pass).mean(axis=(1, 2, 3))
    # what is left is the encoder's (each segment is its own x264 run: its rate control sees
    # other frames ahead), about 2 levels at this size, and no larger at the seams (12, 24)
    assert diff.max() < 3 and diff[[12, 24]].max() < 1.2 * np.median(diff), diff


def test_a_truncated_segment_is_an_error_and_leaves_no_file(model, tmp_path):
    src = write_video(tmp_path / "clip.mp4", [pattern(t) for t in range(20)])
    info = probe_video(src)
    short = VideoInfo(info.pts + (info.pts[-1] + 1,), *asdict_info(info)[1:])
    seg = split_segments(short.frames, 30)[0]
    with pytest.raises(VideoError, match="20 of 21 decoded"):
        colorize_segment(src, tmp_path / "seg.mp4", short, seg, *model)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]
    with pytest.raises(VideoError):
        probe_video(_garbage(tmp_path / "bad.mp4"))


def asdict_info(info):
    return (info.pts, info.time_base, info.fps, info.width, info.height, info.audio_streams)


def _garbage(path: Path) -> Path:
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    return path


@pytest.mark.timeout(120)
def test_shot_cuts_of_the_real_clips():
    """The cuts of the shared clips, found as the colorizer finds them (the grey frame at the
    stabilizer's working size): the five of ``bikes`` (street shots of similar tones, changes
    of 0.23 to 0.72), the three of the old film (whose exposure flickers) and none in a clip
    of one shot."""
    from colorization.color import lightness_u8
    from colorization.video import working_frame

    def cuts(name: str) -> list[int]:
        found = ShotCuts()
        frames = decode_rgb(require(DATA / "video" / f"{name}.mp4"))
        return [i for i, rgb in enumerate(frames) if found(*working_frame(lightness_u8(rgb))[::-1])]

    assert cuts("bikes") == [30, 76, 137, 187, 242]
    assert cuts("old-film-abomb") == [44, 134, 299]
    assert cuts("bear") == []
