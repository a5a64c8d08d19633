"""Colorize video files, with colour that follows the motion instead of flickering.

A video goes through the one inference path of the photos (:mod:`colorization.inference`),
frame by frame, between a PyAV decoder and encoder (PyAV's wheels bring FFmpeg):

1. each decoded frame -> its Lab L, all the model sees (a colour source is thus made grey
   first, as the evaluation makes its photos grey);
2. the model's chroma for a batch of frames (:func:`~colorization.inference.model_chroma`, at
   the model's own temperature, saturation and rebalance correction unless given);
3. stabilization (:class:`Stabilizer`, ``stabilize=True``): the previous frame's output chroma
   is carried along the optical flow of the grey frames onto the current frame and blended
   with the current prediction, pixel by pixel, by how far the flow can be trusted there;
   a shot cut (:class:`ShotCuts`) starts afresh;
4. the chroma joined with the frame's own full-resolution L
   (:func:`colorization.pixels.finish_np`) and encoded: H.264 (``libx264``, yuv420p) unless
   another codec or pixel format is named, with the input's size, timestamps (so its frame
   rate and duration), display matrix (rotation) and colour tags, and every audio stream of
   the input copied packet for packet. Data and subtitle streams are not carried.

The output is written to a hidden file beside the destination and renamed onto it once
complete: a destination either does not exist or holds a whole video. A video that cannot be
read, decodes fewer frames than its header declares, or cannot be written raises
:class:`VideoError` and leaves no output. ``docs/video.md`` says why the stabilization is
built this way and what it measures.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
import torch
from torch import nn

from colorization import flow as fl
from colorization.inference import SETTING_NAMES, input_size, model_chroma, settings
from colorization.metrics import FlickerMeter, colorfulness
from colorization.pixels import finish_np, lightness_np, resize
from colorization.tables import ColorTable
from colorization.videofiles import CRF, CRF_CODECS, DEFAULT_CODEC, PIX_FMT

#: the mean colourfulness is taken on every frame, sampled to at most this many px a side
_COLOURFULNESS_SIDE = 640


class VideoError(Exception):
    """A video that cannot be colorized: not a video, broken, truncated, or a format or codec
    this build of FFmpeg cannot read or write. The message says which and where."""


@dataclass(frozen=True)
class StabilizerParams:
    """How colour is carried from frame to frame (:class:`Stabilizer`, :class:`ShotCuts`)."""

    #: flow and blending run on frames scaled to at most this many px on the longer side
    work_side: int = 320
    #: OpenCV's DIS preset of the flow (:data:`colorization.flow.DIS_PRESETS`)
    preset: str = "fast"
    #: the carried colour's weight where the flow is fully trusted; the current prediction
    #: keeps the rest, so errors carried along fade (to 1/e in about 1 / (1 - carry) frames)
    carry: float = 0.95
    #: forward-backward flow inconsistency (px at the working size) at which trust is 1/e
    fb_sigma: float = 2.0
    #: L difference after warping (Lab units, after removing the frame's median difference,
    #: a global change of brightness) at which trust is 1/e
    l_sigma: float = 16.0
    #: a shot cut (:class:`ShotCuts`) changes the grey histogram by at least this much (total
    #: variation, 0..1) ...
    cut: float = 0.2
    #: ... and leaves the flow matching less than this share of the picture (mean trust);
    #: both chosen on validation clips (``benchmarks/tune_shot_cuts.py``, ``docs/video.md``)
    cut_match: float = 0.25


@dataclass(frozen=True)
class Progress:
    """Where a video stands: frames done of ``total`` (None when the header does not say),
    frames per second so far and the estimated seconds left (None without a total)."""

    frames: int
    total: int | None
    fps: float
    eta_s: float | None


@dataclass
class VideoResult:
    """What :func:`colorize_video` did: one row of a manifest."""

    source: str
    output: str
    frames: int
    fps: float  # frames per second of the video (its average rate)
    duration: float  # seconds, of the written output
    width: int
    height: int
    rotation: int  # degrees counter-clockwise, from the display matrix
    shots: int  # 1 + the shot cuts found
    seconds: float  # wall time of the colorization
    colorfulness: float  # mean over frames (Hasler-Suesstrunk, metrics.colorfulness)
    flicker: float | None  # Lai et al.'s warping error of the output (RGB), if measured
    flicker_ab: float | None  # the same on the colour alone (ab, Lab units squared)
    stabilized: bool
    codec: str
    audio_streams: int
    settings: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


# --- shot cuts and stabilization ---------------------------------------------------------------
def flow_trust(
    flow: fl.DisFlow,
    grey: np.ndarray,
    L: np.ndarray,
    prev_grey: np.ndarray,
    prev_L: np.ndarray,
    params: StabilizerParams,
) -> tuple[np.ndarray, np.ndarray]:
    """(the flow from this frame to the previous one ``(h, w, 2)``, the trust ``(h, w)`` in
    [0, 1] of carrying the previous frame along it) for grey frames uint8 and their L float32,
    all at the working size: ``exp(-(fb / fb_sigma)^2 - (dL / l_sigma)^2)`` with ``fb`` the
    forward-backward inconsistency of the flow and ``dL`` the L left after warping, less its
    median (a global change of exposure is not motion); 0 where the flow leaves the frame."""
    fw, bw = flow(grey, prev_grey), flow(prev_grey, grey)
    warped_L, inside = fl.warp(prev_L, fw)
    dL = L - warped_L
    dL -= np.median(dL)
    z = (fl.fb_error(fw, bw) / params.fb_sigma) ** 2 + (dL / params.l_sigma) ** 2
    return fw, np.exp(-z) * inside


class ShotCuts:
    """Shot cuts from the grey frames. A cut is where two things happen at once:

    - the 32-bin histogram of the grey frame changes by at least :attr:`StabilizerParams.cut`
      in total variation (half the L1 distance of the normalised histograms: 0 for the same
      distribution, 1 for disjoint ones); motion within a shot moves it little;
    - the optical flow matches less than :attr:`StabilizerParams.cut_match` of the picture
      (the mean of :func:`flow_trust`): an old film's exposure flicker changes the histogram
      as much as some cuts do (0.23 in ``old-film-abomb``), but the picture is still there.

    The flow is computed only for the rare frames that pass the first test. On the clips of
    ``../shared/data/video`` it finds the five cuts of ``bikes``, the three of the old film
    and none in the other clips (``docs/video.md``). A cut between two shots of very similar
    tones is missed; the stabilizer's trust (the flow finds no match) then keeps most of the
    old colour out."""

    BINS = 32

    def __init__(self, params: StabilizerParams = StabilizerParams()):
        self.params = params
        self._flow: fl.DisFlow | None = None
        self._prev: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.cuts = 0

    @classmethod
    def histogram(cls, grey: np.ndarray) -> np.ndarray:
        """Normalised ``(BINS,)`` histogram of a uint8 grey frame."""
        h = np.bincount(grey.ravel() >> 3, minlength=cls.BINS).astype(np.float64)
        return h / h.sum()

    @staticmethod
    def change(h: np.ndarray, prev: np.ndarray) -> float:
        """The total variation between two :meth:`histogram`."""
        return float(0.5 * np.abs(h - prev).sum())

    def match(self, grey: np.ndarray, L: np.ndarray) -> float:
        """The share of this frame the flow matches in the previous one (mean trust)."""
        if self._flow is None:
            self._flow = fl.DisFlow(self.params.preset)
        _, prev_grey, prev_L = self._prev
        return float(flow_trust(self._flow, grey, L, prev_grey, prev_L, self.params)[1].mean())

    def __call__(self, grey: np.ndarray, L: np.ndarray) -> bool:
        """Whether the frame (grey uint8 and L float32 ``(h, w)``, at the working size:
        :func:`working_frame`) starts a new shot (never the first frame)."""
        h = self.histogram(grey)
        cut = (
            self._prev is not None
            and self.change(h, self._prev[0]) >= self.params.cut
            and self.match(grey, L) < self.params.cut_match
        )
        self._prev = (h, grey, L)
        self.cuts += cut
        return cut


class Stabilizer:
    """Carries a video's chroma along the optical flow, one frame at a time, at the working
    size (:attr:`StabilizerParams.work_side`).

    For frame t with predicted chroma ``c_t``: the flow from t to t-1 (DIS at
    :attr:`~StabilizerParams.preset`) on the grey frames warps the previous output chroma
    ``s_{t-1}`` onto frame t; the output is ``s_t = w * warped + (1 - w) * c_t`` with
    ``w = carry * trust`` (:func:`flow_trust`), where ``trust`` in [0, 1] falls with the
    forward-backward inconsistency of the flow (occlusions, new content, flow errors) and with
    the L difference that remains after warping; pixels whose source lies outside the
    previous frame, and every pixel after a shot cut, take the prediction alone.
    """

    def __init__(self, params: StabilizerParams = StabilizerParams()):
        self.params = params
        self._flow = fl.DisFlow(params.preset)
        self._prev: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def reset(self) -> None:
        self._prev = None

    def __call__(self, grey: np.ndarray, L: np.ndarray, chroma: np.ndarray, cut: bool = False):
        """This frame's stabilized chroma ``(2, h, w)`` from its prediction ``chroma``
        ``(2, h, w)`` and its grey frame and L ``(h, w)``, all at the working size."""
        if cut:
            self.reset()
        out = chroma
        if self._prev is not None:
            prev_grey, prev_L, _ = self._prev
            fw, trust = flow_trust(self._flow, grey, L, prev_grey, prev_L, self.params)
            warped, _ = fl.warp(np.ascontiguousarray(np.moveaxis(self._prev[2], 0, -1)), fw)
            w = (self.params.carry * trust).astype(np.float32)
            out = w * np.moveaxis(warped, -1, 0) + (1.0 - w) * chroma
        self._prev = (grey, L, out)
        return out


# --- the video file --------------------------------------------------------------------------
#: a video to read: a local path, or a callable that opens a seekable binary file (an object in
#: storage read by ranges, e.g. pyarrow's ``S3FileSystem.open_input_file``), called per opening
VideoSource = str | Path | Callable[[], BinaryIO]
_READ_BUFFER = 4 << 20


def _open_input(
    src: VideoSource,
) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    try:
        # a file object is read in large ranges: each read from object storage is a request
        inp = av.open(src(), buffer_size=_READ_BUFFER) if callable(src) else av.open(str(src))
    except (av.FFmpegError, OSError) as e:
        raise VideoError(f"cannot be read as a video: {e}") from e
    if not inp.streams.video:
        inp.close()
        raise VideoError("no video stream")
    video = inp.streams.video[0]
    video.thread_type = "AUTO"
    return inp, video


def _display_matrix(src: VideoSource) -> tuple[int, list[int] | None]:
    """(rotation in degrees counter-clockwise, the raw display matrix or None) of the video's
    first frame: read before the output is opened, since the muxer writes the matrix into
    the header."""
    inp, video = _open_input(src)
    try:
        with inp:
            frame = next(inp.decode(video), None)
    except av.FFmpegError as e:
        raise VideoError(f"broken or truncated: its first frame cannot be decoded: {e}") from e
    if frame is None:
        raise VideoError("no video frame could be decoded")
    sd = frame.side_data.get("DISPLAYMATRIX")
    matrix = None if sd is None else [int(v) for v in np.frombuffer(bytes(sd), np.int32)]
    return frame.rotation, matrix


@dataclass
class _Streams:
    """An open input and output: the video streams of both, and which output stream copies
    each audio stream (input stream index -> output stream)."""

    inp: av.container.InputContainer
    video: av.video.stream.VideoStream
    out: av.container.OutputContainer
    vout: av.video.stream.VideoStream
    audio: dict


def check_encoder(codec: str, pix_fmt: str = PIX_FMT) -> None:
    """Raise :class:`VideoError` unless this FFmpeg build has the encoder ``codec`` and it
    takes frames in ``pix_fmt``."""
    try:
        formats = [f.name for f in av.codec.Codec(codec, "w").video_formats or ()]
    except (av.FFmpegError, ValueError) as e:
        raise VideoError(f"no encoder {codec!r} in this FFmpeg build: {e}") from e
    if formats and pix_fmt not in formats:
        raise VideoError(f"{codec} does not take {pix_fmt!r}; it takes {', '.join(formats)}")


def _open_output(
    tmp: Path,
    inp: av.container.InputContainer,
    video: av.video.stream.VideoStream,
    codec: str,
    matrix: list[int] | None,
    audio: bool = True,
    crf: int = CRF,
    pix_fmt: str = PIX_FMT,
) -> _Streams:
    """The output container: a video stream with the input's size, rate, time base, colour
    tags and display matrix (x264 / x265 at rate factor ``crf``), in ``pix_fmt``, and a copy
    of each audio stream (with ``audio``)."""
    mp4 = tmp.suffix.lower() in (".mp4", ".mov")
    out = av.open(str(tmp), "w", options={"movflags": "+faststart"} if mp4 else {})
    try:
        options = {"crf": str(crf)} if codec in CRF_CODECS else {}
        rate = video.average_rate or video.guessed_rate or Fraction(25)
        vout = out.add_stream(codec, rate=rate, options=options)
        vout.width, vout.height, vout.pix_fmt = video.width, video.height, pix_fmt
        vout.time_base = video.time_base
        vout.codec_context.time_base = video.time_base
        for tag in ("colorspace", "color_range", "color_primaries", "color_trc"):
            setattr(vout.codec_context, tag, getattr(video.codec_context, tag))
        if matrix is not None:
            vout.set_display_matrix(matrix)
        streams = inp.streams.audio if audio else ()
        audio = {a.index: out.add_stream_from_template(a) for a in streams}
    except (av.FFmpegError, ValueError) as e:
        out.close()
        raise VideoError(f"cannot write {codec} and this input's audio to {tmp.suffix}: {e}") from e
    return _Streams(inp, video, out, vout, audio)


def _frames(s: _Streams) -> Iterator[av.VideoFrame]:
    """The video's decoded frames, muxing each audio packet into the output unchanged on the
    way; a read or decoding error is a :class:`VideoError` that says after which frame."""
    n = 0
    try:
        copied = [a for a in s.inp.streams.audio if a.index in s.audio]
        for packet in s.inp.demux(s.video, *copied):
            if packet.stream.index in s.audio:
                if packet.dts is not None:  # the demuxer's empty flush packets carry none
                    packet.stream = s.audio[packet.stream.index]
                    s.out.mux(packet)
                continue
            for frame in packet.decode():
                n += 1
                yield frame
    except av.FFmpegError as e:
        raise VideoError(f"broken or truncated: reading failed after {n} frames: {e}") from e


def _rgb(frame: av.VideoFrame) -> np.ndarray:
    """A decoded frame -> uint8 RGB ``(H, W, 3)``, by its own colour matrix and range."""
    rng = frame.color_range or None
    return frame.to_ndarray(format="rgb24", src_color_range=rng, dst_color_range=None)


def _encode_frame(rgb: np.ndarray, like: av.VideoFrame, vout, shift: int = 0) -> av.VideoFrame:
    """uint8 RGB -> a frame of the encoder's format and colour tags, at ``like``'s time less
    ``shift``."""
    ctx = vout.codec_context
    new = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
        format=vout.pix_fmt,
        dst_colorspace=ctx.colorspace or None,
        dst_color_range=ctx.color_range or None,
    )
    new.pts, new.time_base = like.pts - shift, like.time_base
    return new


def _batches(frames: Iterator, n: int, limit: int | None) -> Iterator[list]:
    batch = []
    for i, f in enumerate(frames):
        if limit is not None and i >= limit:
            break
        batch.append(f)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def working_frame(L: np.ndarray, work_side: int = StabilizerParams.work_side):
    """A frame's L ``(H, W)`` -> (its L float32, its grey frame uint8) at the stabilizer's
    working size (longer side at most ``work_side``): what :class:`ShotCuts` and
    :class:`Stabilizer` see."""
    L_work = fl.shrink(L, fl.fit_side(L.shape, work_side))
    return L_work, fl.grey_u8(L_work)


class FrameColorizer:
    """Model chroma -> (stabilized) output RGB for a batch of decoded frames, in the order
    of the video: what :func:`colorize_video` and :func:`colorize_segment` run per batch
    (``benchmarks/tune_stabilizer.py`` runs :meth:`predict` once and :meth:`finish` per
    setting of the stabilizer)."""

    def __init__(
        self,
        model,
        table,
        temperature,
        saturation,
        size,
        stabilize,
        params,
        rebalance_correction=None,
    ):
        self.model, self.table, self.size = model, table, input_size(model, size)
        # (temperature, saturation, rebalance correction): the given ones, else the model's own
        self.setting = settings(model, temperature, saturation, rebalance_correction)
        self.device = next(model.parameters()).device
        self.stabilizer = Stabilizer(params) if stabilize else None
        self.cuts = ShotCuts(params)
        self.work_side = params.work_side

    def predict(self, rgbs: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """uint8 RGB frames -> [(L ``(H, W)``, the model's chroma ``(2, h, w)`` at the model's
        size)]: the model's part, which does not depend on earlier frames."""
        Ls, smalls = zip(*(lightness_np(rgb, self.size) for rgb in rgbs), strict=True)
        L_batch = torch.from_numpy(np.stack(smalls)[:, None]).to(self.device)
        chromas = model_chroma(self.model, L_batch, self.table, *self.setting).cpu()
        return list(zip(Ls, chromas.float().numpy(), strict=True))

    def finish(self, L: np.ndarray, chroma: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        """The next frame's L and predicted chroma (:meth:`predict`) -> (full-resolution grey
        uint8, output RGB uint8, whether the frame starts a new shot)."""
        L_work, grey_work = working_frame(L, self.work_side)
        cut = self.cuts(grey_work, L_work)
        if self.stabilizer is not None:
            chroma = self.stabilizer(grey_work, L_work, resize(chroma, L_work.shape), cut)
        out = finish_np(L, chroma, self.model.output_kind)
        return fl.grey_u8(L), np.asarray(out), cut

    def __call__(self, rgbs: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, bool]]:
        """uint8 RGB frames -> [:meth:`finish` of each], in order."""
        return [self.finish(L, chroma) for L, chroma in self.predict(rgbs)]


def colorize_video(
    src: str | Path,
    dest: str | Path,
    model: nn.Module,
    table: ColorTable | None,
    *,
    temperature: float | None = None,
    saturation: float | None = None,
    rebalance_correction: float | None = None,
    stabilize: bool = True,
    codec: str = DEFAULT_CODEC,
    crf: int = CRF,
    pix_fmt: str = PIX_FMT,
    size: int | None = None,
    batch_size: int = 8,
    max_frames: int | None = None,
    measure: bool = True,
    params: StabilizerParams = StabilizerParams(),
    progress: Callable[[Progress], None] | None = None,
) -> VideoResult:
    """Colorize the video file ``src`` into ``dest`` (see the module doc); returns its
    :class:`VideoResult`. ``crf``: the rate factor of x264 / x265 (0 is lossless in
    yuv420p); ``pix_fmt``: the output's pixel format (:data:`~colorization.videofiles.PIX_FMT`
    unless one the encoder takes is named, e.g. ``yuv420p10le``); ``size``: the model's input
    side (default: its own, :func:`~colorization.inference.input_size`); ``max_frames``: stop after so many frames
    (the output is that long); ``measure``: the output's warping errors into the result (a
    Farneback flow per frame pair and each frame's Lab: at 720p about a third of the time of
    the whole path); ``progress``: called after every batch. Raises :class:`VideoError` (and
    leaves no output) for a video that cannot be read or written."""
    src, dest = Path(src), Path(dest)
    colorizer = FrameColorizer(
        model, table, temperature, saturation, size, stabilize, params, rebalance_correction
    )
    tmp = dest.with_name(f".{dest.stem}.partial{dest.suffix}")
    start = time.perf_counter()
    try:
        check_encoder(codec, pix_fmt)
        dest.parent.mkdir(parents=True, exist_ok=True)
        rotation, matrix = _display_matrix(src)
        inp, video = _open_input(src)
        with inp:
            fps = float(video.average_rate or video.guessed_rate or 0)
            width, height = video.width, video.height
            streams = _open_output(tmp, inp, video, codec, matrix, crf=crf, pix_fmt=pix_fmt)
            n_audio = len(streams.audio)
            with streams.out:
                stats = _transcode(streams, colorizer, batch_size, max_frames, measure, progress)
        with av.open(str(tmp)) as check:  # the finished file reads back: its duration
            duration = (check.duration or 0) / av.time_base
        os.replace(tmp, dest)
    except (VideoError, av.FFmpegError) as e:
        tmp.unlink(missing_ok=True)
        raise VideoError(f"{src}: {e}") from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return VideoResult(
        source=str(src),
        output=str(dest),
        fps=fps,
        duration=duration,
        width=width,
        height=height,
        rotation=rotation,
        seconds=time.perf_counter() - start,
        stabilized=stabilize,
        codec=codec,
        audio_streams=n_audio,
        settings=dict(zip(SETTING_NAMES, colorizer.setting, strict=True))
        | {"size": colorizer.size, "pix_fmt": pix_fmt}
        | ({"crf": crf} if codec in CRF_CODECS else {})
        | (asdict(params) if stabilize else {}),
        **stats,
    )


def _transcode(
    s: _Streams,
    colorizer: FrameColorizer,
    batch_size: int,
    max_frames: int | None,
    measure: bool,
    progress: Callable[[Progress], None] | None,
) -> dict:
    """Decode, colorize and encode every frame; returns the result's frames, shots, mean
    colourfulness and flicker."""
    start = time.perf_counter()
    total = s.video.frames or None
    if max_frames is not None:
        total = min(total or max_frames, max_frames)
    meter = FlickerMeter(1, spaces=("rgb", "ab")) if measure else None
    n, colour = 0, 0.0
    for batch in _batches(_frames(s), batch_size, max_frames):
        for frame, (grey, rgb, cut) in zip(batch, colorizer([_rgb(f) for f in batch]), strict=True):
            s.out.mux(s.vout.encode(_encode_frame(rgb, frame, s.vout)))
            k = max(1, math.ceil(max(rgb.shape[:2]) / _COLOURFULNESS_SIDE))
            colour += colorfulness(rgb[::k, ::k])
            if meter is not None:
                meter.add(grey, rgb, cut=cut)
        n += len(batch)
        if progress is not None:
            fps = n / max(time.perf_counter() - start, 1e-9)
            progress(Progress(n, total, fps, None if total is None else max(total - n, 0) / fps))
    if n == 0:
        raise VideoError("no video frame could be decoded")
    if max_frames is None and s.video.frames and n < s.video.frames:
        raise VideoError(f"truncated or broken: {n} of {s.video.frames} frames decoded")
    s.out.mux(s.vout.encode(None))
    return {
        "frames": n,
        "shots": 1 + colorizer.cuts.cuts,
        "colorfulness": colour / n,
        "flicker": meter.of("rgb")[0] if meter is not None and meter.pairs else None,
        "flicker_ab": meter.of("ab")[0] if meter is not None and meter.pairs else None,
    }


# --- long videos in segments ------------------------------------------------------------------
# A long film is colorized as segments that workers share (the archive job,
# ``pipeline/archive_video.py``): :func:`probe_video` reads its frame timestamps,
# :func:`split_segments` cuts them into runs of frames, :func:`colorize_segment` colorizes one
# run into a segment file (video only) and :func:`join_segments` remuxes the segments, packet
# for packet, with the source's audio into the output. A segment first runs ``warmup`` frames
# before its start through the model and the stabilizer without writing them: the stabilizer
# is a recursive filter that forgets at ``carry`` per frame, so after the warm-up its state,
# and the colour of the segment's first frame, is what one pass over the whole film gives
# (to within ``carry ** warmup`` of the carried colour: :func:`warmup_frames`), and the seam
# shows no jump. Every segment is encoded with the same encoder and settings, so their streams
# share one set of parameters and join without re-encoding.


def warmup_frames(params: StabilizerParams, residual: float = 0.02) -> int:
    """Frames after which what the stabilizer carried from before a segment weighs at most
    ``residual`` (``carry ** n``; less where the flow is not fully trusted)."""
    return math.ceil(math.log(residual) / math.log(params.carry))


#: frames a segment runs through the stabilizer before its first written frame (77 at the
#: default carry of 0.95)
SEGMENT_WARMUP = warmup_frames(StabilizerParams())


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` read from a video's packets, without decoding a frame."""

    pts: tuple[int, ...]  # every frame's timestamp in presentation order, in ``time_base``
    time_base: Fraction
    fps: float
    width: int
    height: int
    audio_streams: int

    @property
    def frames(self) -> int:
        return len(self.pts)


@dataclass(frozen=True)
class Segment:
    """Frames ``start`` to ``end`` (exclusive, indices in presentation order) of a video,
    written; ``warmup`` frames before ``start`` run through the stabilizer first."""

    index: int
    start: int
    end: int
    warmup: int


@dataclass
class SegmentResult:
    """What :func:`colorize_segment` did; sums, so segments add up to a whole video's figures
    (:func:`combine_segments`)."""

    frames: int
    cuts: int  # shot cuts among the written frames
    colorfulness_sum: float
    flicker_sum: float  # warping error over the written frames' pairs (RGB, Lai et al.)
    flicker_ab_sum: float
    pairs: int
    seconds: float


def probe_video(src: VideoSource) -> VideoInfo:
    """A video's frame timestamps and format from its packets (a demux, no decoding: seconds
    for an hour of film). Raises :class:`VideoError` for what cannot be read as a video."""
    inp, video = _open_input(src)
    try:
        with inp:
            pts = sorted(p.pts for p in inp.demux(video) if p.pts is not None)
            info = VideoInfo(
                pts=tuple(pts),
                time_base=video.time_base,
                fps=float(video.average_rate or video.guessed_rate or 0),
                width=video.width,
                height=video.height,
                audio_streams=len(inp.streams.audio),
            )
            declared = video.frames
    except av.FFmpegError as e:
        raise VideoError(f"broken or truncated: reading its packets failed: {e}") from e
    if not info.pts:
        raise VideoError("no video frame in the file")
    if declared and len(info.pts) < declared:  # an index (MP4, MOV) that lists more frames
        raise VideoError(f"broken or truncated: {len(info.pts)} of {declared} frames present")
    return info


def split_segments(frames: int, length: int, warmup: int = SEGMENT_WARMUP) -> list[Segment]:
    """``frames`` cut into segments of ``length`` frames (the last one takes the remainder,
    and a remainder under a quarter of ``length`` joins the one before)."""
    if length <= 0:
        raise ValueError(f"segment length must be positive, got {length}")
    starts = list(range(0, frames, length))
    if len(starts) > 1 and frames - starts[-1] < length / 4:
        starts.pop()
    ends = starts[1:] + [frames]
    return [
        Segment(i, s, e, min(warmup, s)) for i, (s, e) in enumerate(zip(starts, ends, strict=True))
    ]


def colorize_segment(
    src: VideoSource,
    dest: str | Path,
    info: VideoInfo,
    segment: Segment,
    model: nn.Module,
    table: ColorTable | None,
    *,
    temperature: float | None = None,
    saturation: float | None = None,
    rebalance_correction: float | None = None,
    stabilize: bool = True,
    codec: str = DEFAULT_CODEC,
    crf: int = CRF,
    pix_fmt: str = PIX_FMT,
    size: int | None = None,
    batch_size: int = 8,
    measure: bool = True,
    params: StabilizerParams = StabilizerParams(),
) -> SegmentResult:
    """Colorize ``segment`` of the video ``src`` (whose :func:`probe_video` is ``info``) into
    the video-only file ``dest`` (MP4), each frame at its own timestamp. Decoding starts at
    the key frame before the warm-up (a seek), or at the first frame if the container cannot
    seek there; ``crf`` and ``pix_fmt`` as :func:`colorize_video`'s. Raises :class:`VideoError`
    (and leaves no ``dest``) when the segment's frames do not all decode."""
    dest = Path(dest)
    tmp = dest.with_name(f".{dest.stem}.partial.mp4")
    colorizer = FrameColorizer(
        model, table, temperature, saturation, size, stabilize, params, rebalance_correction
    )
    first, start = info.pts[segment.start - segment.warmup], info.pts[segment.start]
    stop = info.pts[segment.end] if segment.end < info.frames else None
    t0 = time.perf_counter()
    want = segment.end - segment.start
    try:
        check_encoder(codec, pix_fmt)
        _, matrix = _display_matrix(src)
        # a seek lands on the key frame at or before the warm-up's first frame; a container
        # that lands after it is read from its first frame instead
        for seek in (segment.start > segment.warmup, False):
            inp, video = _open_input(src)
            with inp:
                if seek:
                    inp.seek(first, stream=video, backward=True, any_frame=False)
                s = _open_output(
                    tmp, inp, video, codec, matrix, audio=False, crf=crf, pix_fmt=pix_fmt
                )
                with s.out:
                    frames = (f for f in _frames(s) if f.pts is not None and f.pts >= first)
                    got = _write_segment(
                        s, colorizer, _until(frames, stop), start, batch_size, measure
                    )
            if got.first_pts == first or not seek:
                break
            colorizer = FrameColorizer(
                model, table, temperature, saturation, size, stabilize, params, rebalance_correction
            )
        if got.frames != want or got.first_pts != first:
            raise VideoError(
                f"broken or truncated: frames {segment.start}-{segment.end - 1}: "
                f"{got.frames} of {want} decoded"
            )
        os.replace(tmp, dest)
    except av.FFmpegError as e:
        tmp.unlink(missing_ok=True)
        raise VideoError(
            f"broken or truncated: frames {segment.start}-{segment.end - 1}: {e}"
        ) from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return SegmentResult(
        frames=got.frames,
        cuts=got.cuts,
        colorfulness_sum=got.colour,
        flicker_sum=got.flicker[0],
        flicker_ab_sum=got.flicker[1],
        pairs=got.pairs,
        seconds=time.perf_counter() - t0,
    )


def _until(frames: Iterator[av.VideoFrame], stop: int | None) -> Iterator[av.VideoFrame]:
    for f in frames:
        if stop is not None and f.pts >= stop:
            return
        yield f


@dataclass
class _Written:
    frames: int = 0
    first_pts: int | None = None  # of the first frame decoded (warm-up included)
    cuts: int = 0
    colour: float = 0.0
    flicker: tuple[float, float] = (0.0, 0.0)
    pairs: int = 0


def _write_segment(
    s: _Streams, colorizer: FrameColorizer, frames: Iterator, start: int, batch_size: int, measure
) -> _Written:
    """Colorize ``frames`` (warm-up first), encode those from timestamp ``start`` on."""
    got = _Written()
    meter = FlickerMeter(1, spaces=("rgb", "ab")) if measure else None
    for batch in _batches(frames, batch_size, None):
        if got.first_pts is None:
            got.first_pts = batch[0].pts
        for frame, (grey, rgb, cut) in zip(batch, colorizer([_rgb(f) for f in batch]), strict=True):
            if frame.pts < start:
                continue
            # a segment's times start at 0: an MP4 starting later keeps its start only to
            # the millisecond (an edit list); the join puts each segment back at its time
            s.out.mux(s.vout.encode(_encode_frame(rgb, frame, s.vout, start)))
            got.cuts += cut  # never the video's first frame; a segment's first can be one
            got.frames += 1
            k = max(1, math.ceil(max(rgb.shape[:2]) / _COLOURFULNESS_SIDE))
            got.colour += colorfulness(rgb[::k, ::k])
            if meter is not None:
                meter.add(grey, rgb, cut=cut)
    s.out.mux(s.vout.encode(None))
    if meter is not None and meter.pairs:
        got.pairs = meter.pairs
        got.flicker = (meter.of("rgb")[0] * meter.pairs, meter.of("ab")[0] * meter.pairs)
    return got


def join_segments(
    src: VideoSource,
    segments: Sequence[str | Path],
    dest: str | Path,
    info: VideoInfo,
    parts: Sequence[Segment],
) -> float:
    """The segment files of ``parts`` (in order) remuxed packet for packet into ``dest``, each
    at its first frame's time in the video ``src`` (whose :func:`probe_video` is ``info``),
    with every audio stream of ``src`` copied, interleaved by time; written under a hidden name
    and renamed once whole. Returns the output's duration in seconds. Raises
    :class:`VideoError` and leaves no ``dest`` when the segments do not hold every frame."""
    dest = Path(dest)
    tmp = dest.with_name(f".{dest.stem}.partial{dest.suffix}")
    try:
        _, matrix = _display_matrix(src)
        inp, _ = _open_input(src)
        with inp:
            starts = [info.pts[p.start] * info.time_base for p in parts]
            written = _remux(inp, [Path(p) for p in segments], starts, tmp, matrix)
        if written != info.frames:
            raise VideoError(f"the segments hold {written} frames, the video {info.frames}")
        with av.open(str(tmp)) as check:
            duration = (check.duration or 0) / av.time_base
        os.replace(tmp, dest)
    except av.FFmpegError as e:
        tmp.unlink(missing_ok=True)
        raise VideoError(f"joining the segments failed: {e}") from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return duration


def _remux(
    inp: av.container.InputContainer,
    segments: list[Path],
    starts: list[Fraction],
    tmp: Path,
    matrix: list[int] | None,
) -> int:
    """Write the segments' video packets, each segment moved to its start (seconds), and
    ``inp``'s audio packets into ``tmp`` in time order; returns the video packets written."""
    mp4 = tmp.suffix.lower() in (".mp4", ".mov")
    with (
        av.open(str(segments[0])) as first,
        av.open(str(tmp), "w", options={"movflags": "+faststart"} if mp4 else {}) as out,
    ):
        vout = out.add_stream_from_template(first.streams.video[0])
        if matrix is not None:
            vout.set_display_matrix(matrix)
        audio = {a.index: out.add_stream_from_template(a) for a in inp.streams.audio}
        video_packets = _segment_packets(segments, starts)
        audio_packets = (p for p in inp.demux(*inp.streams.audio) if p.dts is not None)
        n = 0
        for p in _by_time(video_packets, audio_packets if audio else iter(())):
            if p.stream.type == "video":
                p.stream = vout
                n += 1
            else:
                p.stream = audio[p.stream.index]
            out.mux(p)
    return n


def _segment_packets(segments: list[Path], starts: list[Fraction]) -> Iterator[av.Packet]:
    for path, start in zip(segments, starts, strict=True):
        with av.open(str(path)) as seg:
            stream = seg.streams.video[0]
            shift = round(start / stream.time_base)
            for p in seg.demux(stream):
                if p.dts is not None:
                    p.pts, p.dts = p.pts + shift, p.dts + shift
                    yield p


def _by_time(a: Iterator[av.Packet], b: Iterator[av.Packet]) -> Iterator[av.Packet]:
    """Two packet streams, each in decoding order, merged by decoding time."""

    def t(p):
        return float(p.dts * p.time_base)

    pa, pb = next(a, None), next(b, None)
    while pa is not None or pb is not None:
        if pb is None or (pa is not None and t(pa) <= t(pb)):
            yield pa
            pa = next(a, None)
        else:
            yield pb
            pb = next(b, None)


def combine_segments(results: Sequence[SegmentResult]) -> dict:
    """A whole video's figures from its segments': frames, shots, mean colourfulness and
    flicker (the pairs across the seams are not measured), seconds of work."""
    frames = sum(r.frames for r in results)
    pairs = sum(r.pairs for r in results)
    return {
        "frames": frames,
        "shots": 1 + sum(r.cuts for r in results),
        "colorfulness": sum(r.colorfulness_sum for r in results) / max(frames, 1),
        "flicker": sum(r.flicker_sum for r in results) / pairs if pairs else None,
        "flicker_ab": sum(r.flicker_ab_sum for r in results) / pairs if pairs else None,
        "seconds": sum(r.seconds for r in results),
    }
