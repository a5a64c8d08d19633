"""Small videos for the tests, encoded with PyAV, and what a test reads back from a video file.

A helper module for the tests, not a test file: :func:`pattern` (a moving textured frame),
:func:`write_video` (H.264, with a tone, a rotation tag or the index first), :func:`probe`
(what an output must keep) and :func:`decode_rgb`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import av
import numpy as np


def pattern(t: int, h: int = 64, w: int = 96, shift: int = 2) -> np.ndarray:
    """uint8 RGB ``(h, w, 3)``: a smooth textured pattern moved ``shift`` px right per frame."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    xs = xs - shift * t
    grey = 128 + 60 * np.sin(xs / 5.0) * np.cos(ys / 7.0) + 40 * np.sin((xs + ys) / 11.0)
    rgb = np.stack([grey, grey * 0.8 + 30, 255 - grey], -1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def write_video(
    path: Path,
    frames: list[np.ndarray],
    rate: int = 25,
    rotation: int | None = None,
    audio: bool = False,
    faststart: bool = False,
) -> Path:
    """Encode RGB frames as H.264 (with a 440 Hz AAC tone, a rotation tag) with PyAV."""
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as out:
        v = out.add_stream("libx264", rate=rate)
        v.height, v.width = frames[0].shape[:2]
        v.pix_fmt = "yuv420p"
        if rotation is not None:
            v.set_display_rotation(rotation)
        a = out.add_stream("aac", rate=16000) if audio else None
        for i, rgb in enumerate(frames):
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            f.pts = i
            out.mux(v.encode(f))
        out.mux(v.encode(None))
        if a is not None:
            n = 16000 * len(frames) // rate
            tone = np.sin(2 * np.pi * 440 * np.arange(n) / 16000).astype(np.float32)[None]
            af = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
            af.sample_rate, af.pts = 16000, 0
            out.mux(a.encode(af))
            out.mux(a.encode(None))
    return path


def probe(path: Path) -> dict:
    """What the output must keep: size, frame times, rate, duration, rotation, audio bytes."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        info = {"size": (v.width, v.height), "rate": v.average_rate, "tb": v.time_base}
        frames = list(c.decode(v))
        info["times"] = [float(f.pts * f.time_base) for f in frames]
        info["rotation"] = frames[0].rotation
        info["duration"] = c.duration / av.time_base
    with av.open(str(path)) as c:
        digest, n = hashlib.sha256(), 0
        for p in c.demux(*c.streams.audio):
            if p.size:
                digest.update(bytes(p))
                n += 1
        info["audio"] = (n, digest.hexdigest())
    return info


def decode_rgb(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def corrupt_packet(src: Path, dest: Path, frame: int, seed: int = 1) -> Path:
    """``src`` with the bytes of the video packet of ``frame`` (in time order) replaced by
    noise: the file's index is intact, that frame (and those predicted from it) cannot
    decode."""
    data = bytearray(src.read_bytes())
    with av.open(str(src)) as c:
        packets = sorted((p.pts, p.pos, p.size) for p in c.demux(video=0) if p.size)
    _, pos, size = packets[frame]
    data[pos : pos + size] = np.random.default_rng(seed).bytes(size)
    dest.write_bytes(bytes(data))
    return dest
