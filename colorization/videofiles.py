"""Which files are videos, and what a colorized video is written as: without FFmpeg or torch,
so that the CLI's help and an archive's planner can import it (:mod:`colorization.video`
does the work)."""

from __future__ import annotations

from pathlib import Path

#: the containers ``colorize video`` takes (and the archive job will) as videos
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm")
#: H.264 by FFmpeg's x264 encoder, in yuv420p: what every player plays
DEFAULT_CODEC = "libx264"
#: the output's pixel format: 8-bit 4:2:0, what every player plays; ``yuv420p10le`` (10-bit,
#: H.264 High 10 or HEVC Main 10) keeps the colour four times finer, for masters that are
#: edited or re-encoded later (``docs/video.md``: what 8 bits cost the flicker figure)
PIX_FMT = "yuv420p"
#: constant rate factor of the x264 / x265 encoders: visually lossless for most footage
CRF = 18
#: the encoders that take a rate factor (``crf``)
CRF_CODECS = ("libx264", "libx265")
#: encoders whose output a WebM file may hold; with any other a WebM input gives Matroska
WEBM_CODECS = ("libvpx", "libvpx-vp9", "libaom-av1", "libsvtav1")


def is_video(name: str | Path) -> bool:
    """Whether a file name has a video container's suffix (:data:`VIDEO_SUFFIXES`)."""
    return Path(str(name)).suffix.lower() in VIDEO_SUFFIXES


def output_suffix(src: str | Path, codec: str = DEFAULT_CODEC) -> str:
    """The output's container: the input's, except ``.webm`` becomes ``.mkv`` for an encoder
    WebM cannot hold (H.264 among them)."""
    suffix = Path(str(src)).suffix.lower() or ".mp4"
    return ".mkv" if suffix == ".webm" and codec not in WEBM_CODECS else suffix


def output_path(src: str | Path, out_dir: str | Path, codec: str = DEFAULT_CODEC) -> Path:
    """Where ``colorize video`` writes ``src``: ``out_dir`` / its name, container as
    :func:`output_suffix`."""
    return Path(out_dir) / (Path(str(src)).stem + output_suffix(src, codec))
