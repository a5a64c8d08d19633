"""The ``colorize`` commands. Thin: each builds a typed config and calls one library or stage
function. :mod:`pipeline.cli` lists them without importing this module (which pulls in the
stages' configs and, through them, numpy, pyarrow and Ray Data); it loads when a command runs.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Annotated

import typer

from colorization.shipped import (
    DEFAULT_MODEL,
    DEFAULT_REBALANCE_CORRECTION,
    DEFAULT_SATURATION,
    DEFAULT_SIZE,
    DEFAULT_TEMPERATURE,
)
from colorization.tables import TableParams
from colorization.videofiles import CRF, DEFAULT_CODEC, PIX_FMT
from pipeline.cli import COMMANDS, TABLES_COMMANDS
from pipeline.cluster import connect
from pipeline.run_stage import RunConfig
from pipeline.sources import StorageOptions

app = typer.Typer(add_completion=False)
tables_app = typer.Typer(no_args_is_help=True)
app.add_typer(tables_app, name="tables", help=COMMANDS["tables"])

# the defaults of `colorize run` and `colorize tables build` are their configs': one owner
_RUN = {f.name: f.default for f in fields(RunConfig)}
_TABLE = {f.name: f.default for f in fields(TableParams)}


def command(group: typer.Typer, name: str, summaries: dict[str, str], **kw) -> Callable:
    """Register ``fn`` as command ``name``: its help is its one-line summary (the one
    :mod:`pipeline.cli` lists) followed by the function's docstring."""

    def register(fn: Callable) -> Callable:
        paragraphs = inspect.cleandoc(fn.__doc__ or "").split("\n\n")
        text = "\n\n".join([summaries[name], *(" ".join(p.split()) for p in paragraphs if p)])
        return group.command(name, help=text, short_help=summaries[name], **kw)(fn)

    return register


EndpointOpt = Annotated[
    str | None,
    typer.Option(help="S3-compatible endpoint URL (default: AWS_ENDPOINT_URL or AWS)"),
]


@command(tables_app, "build", TABLES_COMMANDS)
def tables_build(
    sources: Annotated[list[str], typer.Argument(help="folders, globs, s3:// prefixes, COCO json")],
    out: Annotated[str, typer.Option("--out", "-o", help="folder or s3://bucket/prefix")],
    grid: Annotated[float, typer.Option(help="spacing of the colour classes (ab units)")] = _TABLE[
        "grid"
    ],
    min_count: Annotated[
        int, typer.Option(help="a colour needs this many pixels to become a class")
    ] = _TABLE["min_count"],
    min_mass: Annotated[float, typer.Option(help="... and this share of all pixels")] = _TABLE[
        "min_mass"
    ],
    sigma: Annotated[
        float, typer.Option(help="smoothing of the colour frequencies (ab units)")
    ] = _TABLE["sigma"],
    lam: Annotated[
        float,
        typer.Option("--lambda", help="0: rare colours weigh most in training, 1: all the same"),
    ] = _TABLE["lam"],
    shards: Annotated[int, typer.Option(help="0: automatic")] = 0,
    categories: Annotated[bool, typer.Option(help="per-category histograms (COCO)")] = False,
    skip_grey: Annotated[bool, typer.Option(help="leave grey photos out")] = True,
    images_dir: Annotated[str | None, typer.Option(help="images of a COCO json")] = None,
    endpoint_url: EndpointOpt = None,
    progress: bool = True,
) -> None:
    """Counts the colours of every photo (in parallel on Ray) and writes the table, its
    histogram and a report to OUT. Grey photos and photos that cannot be read are counted
    and left out."""
    from pipeline.tables_stage import TablesConfig, build_tables

    params = TableParams(grid=grid, min_count=min_count, min_mass=min_mass, sigma=sigma, lam=lam)
    cfg = TablesConfig(
        sources=list(sources),
        out=str(out),
        params=params,
        shards=shards,
        categories=categories,
        skip_grey=skip_grey,
        images_dir=images_dir,
        storage=StorageOptions(endpoint_url=endpoint_url),
        progress=progress,
    )
    connect()
    report = build_tables(cfg)
    summary = {k: v for k, v in report.items() if k != "failures"}
    typer.echo(json.dumps(summary, indent=2))
    for f in report["failures"][:20]:
        typer.echo(f"failed: {f['uri']}: {f['error']}", err=True)
    if report["n_failed"] > 20:
        typer.echo(f"... {report['n_failed'] - 20} more in {out}/report.json", err=True)


@command(tables_app, "show", TABLES_COMMANDS)
def tables_show(
    directory: Annotated[Path, typer.Argument(help="a tables directory or a classes.parquet")],
    png: Annotated[Path | None, typer.Option(help="where to write the ab-plane picture")] = None,
) -> None:
    """With --png, also draws the table's colours with how often each occurs."""
    from pipeline.tables_stage import show_table

    typer.echo(show_table(directory, png))


@command(app, "prepare", COMMANDS)
def prepare_cmd(
    sources: Annotated[list[str], typer.Argument(help="folders, globs, s3:// prefixes, COCO json")],
    out: Annotated[
        str, typer.Option("--out", "-o", help="folder or s3://bucket/prefix for the shards")
    ],
    size: Annotated[int, typer.Option(help="stored square side (px)")] = 144,
    images_dir: Annotated[str | None, typer.Option(help="images of a COCO json")] = None,
    masks: Annotated[
        list[str] | None,
        typer.Option(
            "--masks",
            help="FORMAT:IMAGES_DIR=MASKS_DIR, FORMAT coco-panoptic or camvid (repeatable)",
        ),
    ] = None,
    teacher: Annotated[str, typer.Option(help="category teacher: lite0, lite2 or none")] = "lite0",
    endpoint_url: EndpointOpt = None,
) -> None:
    """Each photo is decoded once, cropped to a square of SIZE pixels and stored with its
    segmentation mask (if given) and the category teacher's guess, so training never decodes
    a JPEG. Grey photos and unreadable files are skipped and counted."""
    from pipeline.prepare_stage import PrepareConfig, prepare

    cfg = PrepareConfig(
        sources=list(sources),
        out=str(out),
        size=size,
        images_dir=images_dir,
        storage=StorageOptions(endpoint_url=endpoint_url),
        masks=list(masks or []),
        teacher=None if teacher.lower() == "none" else teacher,
    )
    connect()
    summary = prepare(cfg)
    typer.echo(json.dumps({k: v for k, v in summary.items() if k in _PREPARE_KEYS}, indent=2))


_PREPARE_KEYS = (
    "size", "n_listed", "n_ok", "n_skipped", "n_error", "n_seg", "n_mask_warnings", "teacher",
    "seg_sources", "seconds",
)  # fmt: skip


@command(app, "train", COMMANDS, context_settings={"allow_extra_args": True})
def train_cmd(
    ctx: typer.Context,
    config: Annotated[Path, typer.Option("--config", "-c", help="YAML training config")],
) -> None:
    """Settings come from the YAML file; any of them can be overridden on the command line
    as key=value (e.g. ``colorize train -c C.yaml steps=200 model.encoder=lite0``). Checkpoints
    are written as training goes; a rerun resumes from the newest one."""
    from pipeline.config import load_config
    from pipeline.train_stage import TrainConfig, train

    cfg = load_config(TrainConfig, config, ctx.args)
    connect()
    result = train(cfg)
    typer.echo(json.dumps(result, indent=2, default=str))


TemperatureOpt = Annotated[
    float | None,
    typer.Option(
        help="lower: bolder, riskier colours; higher: safer, duller ones "
        f"(default: the model's own, else {DEFAULT_TEMPERATURE})"
    ),
]
SaturationOpt = Annotated[
    float | None,
    typer.Option(
        help="factor on the colours' strength "
        f"(default: the model's own, else {DEFAULT_SATURATION:g})"
    ),
]
RebalanceOpt = Annotated[
    float | None,
    typer.Option(
        help="how much of the training's class rebalancing the decoding takes back: 0 as "
        "trained (colourful), 1 the plain posterior (duller, closer on average) "
        f"(default: the model's own, else {DEFAULT_REBALANCE_CORRECTION:g})"
    ),
]
ModelOpt = Annotated[
    str,
    typer.Option("--model", "-m", help="a shipped model's name, a checkpoint or a run directory"),
]


@command(app, "image", COMMANDS)
def image_cmd(
    inputs: Annotated[list[Path], typer.Argument(help="image files")],
    model: ModelOpt = DEFAULT_MODEL,
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("colorized"),
    temperature: TemperatureOpt = None,
    saturation: SaturationOpt = None,
    rebalance_correction: RebalanceOpt = None,
    size: Annotated[
        int | None,
        typer.Option(help="model input side, a multiple of 16 (default: the model's own)"),
    ] = None,
) -> None:
    """Each output is a PNG of the input's size, in OUT under the input's name."""
    from colorization.imageio import DecodeError, decode_image
    from colorization.inference import colorize_image
    from colorization.shipped import load

    net, table, _ = load(model)
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for path in inputs:
        try:
            im = decode_image(path.read_bytes())
        except (DecodeError, OSError) as e:
            typer.echo(f"error: {path}: {e}", err=True)
            failed += 1
            continue
        dest = out / f"{path.stem}.png"
        colored = colorize_image(
            net, table, im, size, temperature, saturation, rebalance_correction
        )
        colored.save(dest)
        typer.echo(f"{path} -> {dest}")
    if failed:
        raise typer.Exit(1)


@command(app, "video", COMMANDS)
def video_cmd(
    inputs: Annotated[list[Path], typer.Argument(help="video files (mp4, mov, mkv, avi, webm)")],
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("colorized"),
    model: ModelOpt = DEFAULT_MODEL,
    temperature: TemperatureOpt = None,
    saturation: SaturationOpt = None,
    rebalance_correction: RebalanceOpt = None,
    stabilize: Annotated[
        bool,
        typer.Option(
            "--stabilize/--no-stabilize",
            help="carry colour along the motion so it does not flicker (off: each frame alone)",
        ),
    ] = True,
    codec: Annotated[
        str, typer.Option(help="FFmpeg video encoder, e.g. libx265 or libvpx-vp9")
    ] = DEFAULT_CODEC,
    crf: Annotated[
        int, typer.Option(help="x264 / x265 rate factor: lower is closer to lossless (0)")
    ] = CRF,
    pix_fmt: Annotated[
        str, typer.Option(help="pixel format, e.g. yuv420p10le (10-bit) for masters")
    ] = PIX_FMT,
) -> None:
    """Each output has the input's name, size, frame rate, duration, rotation and sound, in
    OUT (a .webm input gives .mkv unless the codec is a WebM one). A colour video is made grey
    first. Frames per second and the time left are shown as it goes; a JSON line per video
    says what was done. A video that cannot be read leaves no output."""
    from colorization.shipped import load
    from colorization.video import VideoError, colorize_video
    from colorization.videofiles import output_path

    net, table, _ = load(model)
    failed = 0
    for path in inputs:
        dest = output_path(path, out, codec)
        try:
            result = colorize_video(
                path, dest, net, table, temperature=temperature, saturation=saturation,
                rebalance_correction=rebalance_correction, stabilize=stabilize, codec=codec,
                crf=crf, pix_fmt=pix_fmt, progress=_progress_line(path.name),
            )  # fmt: skip
        except VideoError as e:
            typer.echo(f"\nerror: {e}", err=True)
            failed += 1
            continue
        typer.echo("", err=True)
        typer.echo(json.dumps(result.as_dict()))
    if failed:
        raise typer.Exit(1)


def _progress_line(name: str) -> Callable:
    """A progress callback that rewrites one line on stderr: frames, frames/s, time left."""

    def show(p) -> None:
        total = f"/{p.total}" if p.total else ""
        left = "" if p.eta_s is None else f", {p.eta_s:.0f} s left"
        typer.echo(f"\r{name}: {p.frames}{total} frames, {p.fps:.1f}/s{left}", err=True, nl=False)

    return show


@command(app, "eval", COMMANDS)
def eval_cmd(
    sources: Annotated[list[str], typer.Argument(help="folders, globs, s3:// prefixes, COCO json")],
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("eval-out"),
    models: Annotated[
        str, typer.Option(help="comma-separated: shipped names, checkpoints, run dirs; label=path")
    ] = DEFAULT_MODEL,
    temperature: TemperatureOpt = None,
    saturation: SaturationOpt = None,
    rebalance_correction: RebalanceOpt = None,
    size: Annotated[
        int | None,
        typer.Option(help="model input side, a multiple of 16 (default: each model's own)"),
    ] = None,
    batch_size: int = 8,
    limit: Annotated[int | None, typer.Option(help="evaluate at most this many images")] = None,
    images_dir: Annotated[str | None, typer.Option(help="images of a COCO json")] = None,
    endpoint_url: EndpointOpt = None,
    judge: Annotated[
        str, typer.Option(help="ImageNet classifier of the semantic test: lite2, lite0 or none")
    ] = "lite2",
    temperatures: Annotated[
        str, typer.Option(help="sweep: comma-separated temperatures, a row each")
    ] = "",
    saturations: Annotated[
        str, typer.Option(help="sweep: comma-separated saturations, a row each")
    ] = "",
    rebalance_corrections: Annotated[
        str, typer.Option(help="sweep: comma-separated rebalance corrections, a row each")
    ] = "",
) -> None:
    """The photos are made grey, colorized by each model and compared with their true
    colours, beside the grey photo itself as a baseline; grey originals are left out. With
    --temperatures / --saturations / --rebalance-corrections, every model is scored at each
    combination: choose a model's settings this way on a validation set, never on the test
    set."""
    from pipeline.eval_stage import EvalConfig, run_eval

    cfg = EvalConfig(
        sources=list(sources),
        out=str(out),
        models=[m.strip() for m in models.split(",") if m.strip()],
        temperature=temperature,
        saturation=saturation,
        rebalance_correction=rebalance_correction,
        size=size,
        batch_size=batch_size,
        limit=limit,
        images_dir=images_dir,
        storage=StorageOptions(endpoint_url=endpoint_url),
        judge=judge,
        temperatures=[float(t) for t in temperatures.split(",") if t.strip()],
        saturations=[float(s) for s in saturations.split(",") if s.strip()],
        rebalance_corrections=[float(c) for c in rebalance_corrections.split(",") if c.strip()],
    )
    typer.echo(run_eval(cfg))


@command(app, "run", COMMANDS)
def run_cmd(
    src: Annotated[str, typer.Argument(help="folder, glob, s3://bucket/prefix, or a manifest")],
    dst: Annotated[str, typer.Argument(help="folder or s3://bucket/prefix")],
    model: ModelOpt = _RUN["model"],
    format: Annotated[str, typer.Option(help="jpeg | png | webp")] = _RUN["format"],
    quality: int = _RUN["quality"],
    temperature: TemperatureOpt = None,
    saturation: SaturationOpt = None,
    rebalance_correction: RebalanceOpt = None,
    batch_size: int = _RUN["batch_size"],
    workers: Annotated[int, typer.Option(help="model actors")] = _RUN["workers"],
    gpus_per_worker: float = _RUN["gpus_per_worker"],
    cpus_per_worker: float = _RUN["cpus_per_worker"],
    threads_per_worker: Annotated[
        int, typer.Option(help="torch threads per model actor; 0: the machine's cores / workers")
    ] = _RUN["threads_per_worker"],
    cpus_per_task: Annotated[
        float, typer.Option(help="CPUs each decode/finish task reserves")
    ] = _RUN["cpus_per_task"],
    task_slots: Annotated[
        int, typer.Option(help="decode/finish tasks at once on a local run (0: no limit)")
    ] = _RUN["task_slots"],
    task_batch_size: Annotated[int, typer.Option(help="images per decode/finish task")] = _RUN[
        "task_batch_size"
    ],
    task_concurrency: Annotated[
        int, typer.Option(help="decode (and finish) tasks at once; 0: as the CPUs allow")
    ] = _RUN["task_concurrency"],
    in_flight_mb: Annotated[
        int, typer.Option(help="object store MB for blocks between stages; 0: Ray's share")
    ] = _RUN["in_flight_mb"],
    limit: Annotated[int | None, typer.Option(help="only the first N inputs")] = _RUN["limit"],
    resume: Annotated[bool, typer.Option(help="skip inputs DST's manifest has as ok")] = _RUN[
        "resume"
    ],
    max_pixels: Annotated[int, typer.Option(help="refuse larger images")] = _RUN["max_pixels"],
    video_segment_frames: Annotated[
        int, typer.Option(help="a video is shared out among the model actors in this many frames")
    ] = _RUN["video_segment_frames"],
    video_codec: Annotated[
        str, typer.Option(help="FFmpeg encoder of the output videos, e.g. libx265")
    ] = _RUN["video_codec"],
    video_crf: Annotated[
        int, typer.Option(help="x264 / x265 rate factor of the output videos (0: lossless)")
    ] = _RUN["video_crf"],
    video_pix_fmt: Annotated[
        str, typer.Option(help="pixel format of the output videos, e.g. yuv420p10le (10-bit)")
    ] = _RUN["video_pix_fmt"],
    stabilize: Annotated[
        bool,
        typer.Option(
            "--stabilize/--no-stabilize",
            help="videos: carry colour along the motion so it does not flicker",
        ),
    ] = _RUN["video_stabilize"],
    video_flicker: Annotated[
        bool, typer.Option(help="measure each video's flicker for the manifest")
    ] = _RUN["video_flicker"],
    endpoint_url: EndpointOpt = None,
    allow_errors: Annotated[bool, typer.Option(help="exit 0 even if inputs failed")] = False,
    progress: bool = _RUN["progress"],
) -> None:
    """Each output keeps its input's name and folder, with the format's extension (a video its
    own container, or MKV where its codec needs one). DST gets a manifest.parquet with a row per input (ok, skipped or why it failed); with --resume a
    rerun only does what is missing. Runs on this machine or on the Ray cluster in
    RAY_ADDRESS."""
    from pipeline.run_stage import run

    cfg = RunConfig(
        src=src,
        dst=dst,
        model=model,
        format=format,
        quality=quality,
        temperature=temperature,
        saturation=saturation,
        rebalance_correction=rebalance_correction,
        batch_size=batch_size,
        workers=workers,
        gpus_per_worker=gpus_per_worker,
        cpus_per_worker=cpus_per_worker,
        threads_per_worker=threads_per_worker,
        cpus_per_task=cpus_per_task,
        task_slots=task_slots,
        task_batch_size=task_batch_size,
        task_concurrency=task_concurrency,
        in_flight_mb=in_flight_mb,
        limit=limit,
        resume=resume,
        max_pixels=max_pixels,
        storage=StorageOptions(endpoint_url=endpoint_url),
        progress=progress,
        video_segment_frames=video_segment_frames,
        video_codec=video_codec,
        video_crf=video_crf,
        video_pix_fmt=video_pix_fmt,
        video_stabilize=stabilize,
        video_flicker=video_flicker,
    )
    connect(task_slots=cfg.task_slots)
    summary = run(cfg)
    typer.echo(json.dumps(summary, indent=2))
    if summary["error"] and not allow_errors:
        raise typer.Exit(1)


@command(app, "export-model", COMMANDS)
def export_cmd(
    src: Annotated[str, typer.Argument(help="a checkpoint or a training run directory")],
    dest: Annotated[Path, typer.Argument(help="the model directory to write")],
    eval_dir: Annotated[
        Path | None, typer.Option("--eval", help="a `colorize eval` output for the card")
    ] = None,
    command: Annotated[str | None, typer.Option(help="the command that trained it")] = None,
    temperature: TemperatureOpt = None,
    saturation: SaturationOpt = None,
    rebalance_correction: RebalanceOpt = None,
    size: Annotated[
        int | None,
        typer.Option(help=f"the model's input side, a multiple of 16 (default: {DEFAULT_SIZE})"),
    ] = None,
    notes: Annotated[Path | None, typer.Option(help="a markdown file added to the card")] = None,
) -> None:
    """DEST gets the weights colorizing needs (no training state) and a MODEL_CARD.md saying
    how the model was trained and how it scored; --temperature / --saturation /
    --rebalance-correction / --size become the model's own settings."""
    from pipeline.export import export_model

    inference = {
        "temperature": temperature,
        "saturation": saturation,
        "rebalance_correction": rebalance_correction,
        "size": size,
    }
    inference = {k: v for k, v in inference.items() if v is not None}
    text = notes.read_text() if notes else None
    typer.echo(export_model(src, dest, eval_dir, command, inference, text))


@command(app, "demo", COMMANDS)
def demo(
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("demo-out"),
    model: ModelOpt = DEFAULT_MODEL,
) -> None:
    """The photos ship with the package; OUT gets each one grey, colorized and as it was,
    and all of them on one contact sheet."""
    from pipeline.demo import run_demo

    connect()
    typer.echo(run_demo(out, model))
