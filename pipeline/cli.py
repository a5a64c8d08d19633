"""The ``colorize`` command. Thin: each command builds a typed config and calls one function."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Annotated

import typer

from colorization.shipped import DEFAULT_MODEL
from colorization.tables import TableParams
from pipeline.cluster import connect
from pipeline.run_stage import RunConfig
from pipeline.sources import StorageOptions

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
tables_app = typer.Typer(no_args_is_help=True, help="Colour-class tables from an image set.")
app.add_typer(tables_app, name="tables")

# `colorize run`'s defaults are RunConfig's: one place to change them
_RUN = {f.name: f.default for f in fields(RunConfig)}

EndpointOpt = Annotated[
    str | None,
    typer.Option(help="S3-compatible endpoint URL (default: AWS_ENDPOINT_URL or AWS)"),
]


@tables_app.command("build")
def tables_build(
    sources: Annotated[list[str], typer.Argument(help="folders, globs, s3:// prefixes, COCO json")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output directory")],
    grid: float = 10.0,
    min_count: int = 1,
    min_mass: float = 0.0,
    sigma: float = 5.0,
    lam: Annotated[float, typer.Option("--lambda", help="uniform mixing of the weights")] = 0.5,
    shards: Annotated[int, typer.Option(help="0: automatic")] = 0,
    categories: Annotated[bool, typer.Option(help="per-category histograms (COCO)")] = False,
    skip_grey: bool = True,
    images_dir: Annotated[str | None, typer.Option(help="images of a COCO json")] = None,
    endpoint_url: EndpointOpt = None,
    progress: bool = True,
) -> None:
    """Compute ab statistics with Ray tasks and write the colour-class table."""
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
        typer.echo(f"... {report['n_failed'] - 20} more in {out / 'report.json'}", err=True)


@tables_app.command("show")
def tables_show(
    directory: Annotated[Path, typer.Argument(help="a tables directory or a classes.parquet")],
    png: Annotated[Path | None, typer.Option(help="where to write the ab-plane picture")] = None,
) -> None:
    """Print a table's summary and write the ab-plane picture (prior and weights)."""
    from pipeline.tables_stage import show_table

    typer.echo(show_table(directory, png))


@app.command("prepare")
def prepare_cmd(
    sources: Annotated[list[str], typer.Argument(help="folders, globs, s3:// prefixes, COCO json")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output directory of parquet shards")],
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
    """Decode, resize and store training images once as parquet shards (Ray Data)."""
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


@app.command("train", context_settings={"allow_extra_args": True})
def train_cmd(
    ctx: typer.Context,
    config: Annotated[Path, typer.Option("--config", "-c", help="YAML training config")],
) -> None:
    """Train a model on Ray Train: ``colorize train --config C.yaml [key=value ...]``."""
    from pipeline.config import load_config
    from pipeline.train_stage import TrainConfig, train

    cfg = load_config(TrainConfig, config, ctx.args)
    connect()
    result = train(cfg)
    typer.echo(json.dumps(result, indent=2, default=str))


TemperatureOpt = Annotated[
    float | None,
    typer.Option(help="annealed-mean temperature (default: the model's own, else 0.38)"),
]
SaturationOpt = Annotated[
    float | None,
    typer.Option(help="factor on the predicted chroma (default: the model's own, else 1)"),
]
ModelOpt = Annotated[
    str,
    typer.Option("--model", "-m", help="a shipped model's name, a checkpoint or a run directory"),
]


@app.command("image")
def image_cmd(
    inputs: Annotated[list[Path], typer.Argument(help="image files")],
    model: ModelOpt = DEFAULT_MODEL,
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("colorized"),
    temperature: TemperatureOpt = None,
    saturation: SaturationOpt = None,
    size: Annotated[int, typer.Option(help="model input side (multiple of 16)")] = 256,
) -> None:
    """Colorize image files; outputs keep the inputs' sizes (PNG)."""
    from colorization.imageio import DecodeError, decode_image
    from colorization.inference import colorize_images
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
        colorize_images(net, table, [im], size, temperature, saturation=saturation)[0].save(dest)
        typer.echo(f"{path} -> {dest}")
    if failed:
        raise typer.Exit(1)


@app.command("eval")
def eval_cmd(
    sources: Annotated[list[str], typer.Argument(help="folders, globs, s3:// prefixes, COCO json")],
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("eval-out"),
    models: Annotated[
        str, typer.Option(help="comma-separated: shipped names, checkpoints, run dirs; label=path")
    ] = DEFAULT_MODEL,
    temperature: TemperatureOpt = None,
    saturation: SaturationOpt = None,
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
) -> None:
    """Score models against the originals at 256x256 beside the grey baseline; HTML report.
    With --temperatures / --saturations, every model at each combination (choose a model's
    settings this way on a validation set, never on the test set)."""
    from pipeline.eval_stage import EvalConfig, run_eval

    cfg = EvalConfig(
        sources=list(sources),
        out=str(out),
        models=[m.strip() for m in models.split(",") if m.strip()],
        temperature=temperature,
        saturation=saturation,
        batch_size=batch_size,
        limit=limit,
        images_dir=images_dir,
        storage=StorageOptions(endpoint_url=endpoint_url),
        judge=judge,
        temperatures=[float(t) for t in temperatures.split(",") if t.strip()],
        saturations=[float(s) for s in saturations.split(",") if s.strip()],
    )
    typer.echo(run_eval(cfg))


@app.command("run")
def run_cmd(
    src: Annotated[str, typer.Argument(help="folder, glob, s3://bucket/prefix, or a manifest")],
    dst: Annotated[str, typer.Argument(help="folder or s3://bucket/prefix")],
    model: ModelOpt = _RUN["model"],
    format: Annotated[str, typer.Option(help="jpeg | png | webp")] = _RUN["format"],
    quality: int = _RUN["quality"],
    temperature: TemperatureOpt = None,
    saturation: SaturationOpt = None,
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
    endpoint_url: EndpointOpt = None,
    allow_errors: Annotated[bool, typer.Option(help="exit 0 even if inputs failed")] = False,
    progress: bool = _RUN["progress"],
) -> None:
    """Colorize an archive into DST with a manifest row per input (Ray Data)."""
    from pipeline.run_stage import run

    cfg = RunConfig(
        src=src,
        dst=dst,
        model=model,
        format=format,
        quality=quality,
        temperature=temperature,
        saturation=saturation,
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
    )
    connect(task_slots=cfg.task_slots)
    summary = run(cfg)
    typer.echo(json.dumps(summary, indent=2))
    if summary["error"] and not allow_errors:
        raise typer.Exit(1)


@app.command("export-model")
def export_cmd(
    src: Annotated[str, typer.Argument(help="a checkpoint or a training run directory")],
    dest: Annotated[Path, typer.Argument(help="the model directory to write")],
    eval_dir: Annotated[
        Path | None, typer.Option("--eval", help="a `colorize eval` output for the card")
    ] = None,
    command: Annotated[str | None, typer.Option(help="the command that trained it")] = None,
    temperature: TemperatureOpt = None,
    saturation: SaturationOpt = None,
    notes: Annotated[Path | None, typer.Option(help="a markdown file added to the card")] = None,
) -> None:
    """Write a checkpoint's inference version (no optimizer state, no training-only category
    head) with a generated MODEL_CARD.md, for shipping; ``--temperature`` / ``--saturation``
    become the model's own inference settings."""
    from pipeline.export import export_model

    inference = {"temperature": temperature, "saturation": saturation}
    inference = {k: v for k, v in inference.items() if v is not None}
    text = notes.read_text() if notes else None
    typer.echo(export_model(src, dest, eval_dir, command, inference, text))


@app.command("demo")
def demo(
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("demo-out"),
    model: ModelOpt = DEFAULT_MODEL,
) -> None:
    """The main job on its embedded default: sample photos, local Ray, local files."""
    from pipeline.demo import run_demo

    typer.echo(run_demo(out, model))


if __name__ == "__main__":
    app()
