"""Stage 2b: training on Ray Train (TorchTrainer; CPU workers here, N GPUs on a cluster).

``train(cfg)`` -> TorchTrainer(train_loop_per_worker) -> each worker streams its share of the
prepared shards, trains with DDP, and rank 0 reports checkpoints every ``checkpoint_every``
steps (weights as safetensors, optimizer/scheduler state, step, config, table fingerprint).
A killed worker restarts the group from the last checkpoint (FailureConfig); re-running the
same command (same ``storage_path`` and ``name``) resumes a stopped run.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from colorization import color
from colorization.checkpoint import (
    TABLE,
    CheckpointError,
    checkpoints_newest_first,
    load_matching,
    load_model,
    load_state_strict,
    load_training_state,
    read_meta,
    save_checkpoint,
)
from colorization.inference import colorize_images, rgb_to_model_input
from colorization.losses import ColorizationLoss, SemanticConsistencyLoss
from colorization.metrics import colorfulness, psnr, ssim
from colorization.models import create_model
from colorization.models.efficientnet import NUM_IMAGENET_CLASSES, imagenet_classifier
from colorization.segmentation import NUM_SEG_CLASSES, SEG_IGNORE
from colorization.shipped import DEFAULT_TEMPERATURE, resolve_model
from colorization.tables import ColorTable
from pipeline.config import save_config
from pipeline.prepared import Sample, read_dataset_info, read_prepared, samples_of
from pipeline.sources import StorageOptions, arrow_filesystem, is_s3, read_bytes


@dataclass
class ModelConfig:
    name: str = "seg"
    base_width: int = 16
    encoder: str = "lite0"  # "scratch" or an EfficientNet-Lite ("lite0", "lite2")
    pretrained: bool = True  # the encoder starts from its ImageNet weights
    kwargs: dict[str, Any] = field(default_factory=dict)  # any other constructor argument


@dataclass
class LossConfig:
    color: float = 1.0
    category: float = 0.1
    segmentation: float = 0.1
    # semantic consistency: a frozen ImageNet classifier (`semantic_classifier`) should see the
    # same classes in the colorized crop as in its colour original (0 = off)
    semantic: float = 0.0
    semantic_classifier: str = "lite0"


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved as ``config.yaml`` beside its checkpoints."""

    data: str  # a prepared dataset (``colorize prepare``)
    val_data: str | None = None  # a prepared dataset held out for validation
    tables: str | None = None  # classes.parquet (or its directory): class models need it
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    crop: int = 96  # training crop side (multiple of 16), at most the prepared size
    batch_size: int = 16  # per worker
    lr: float = 2e-3
    encoder_lr_scale: float = 1.0  # the pretrained encoder's learning rate, relative to lr
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    steps: int = 1000
    checkpoint_every: int = 100
    log_every: int = 10
    val_images: int = 32
    temperature: float = DEFAULT_TEMPERATURE
    num_workers: int = 2
    use_gpu: bool = False
    amp: bool = True  # bfloat16 autocast on GPU
    threads_per_worker: int = 1
    # CPUs Ray reserves for each worker of a CPU run (it runs threads_per_worker threads all
    # the same): the rest of the node runs the Ray Data reading; workers that reserve every
    # CPU leave the reading none and the run never starts
    cpus_per_worker: float = 0.5
    storage_path: str = "runs"  # a folder or s3://bucket/prefix (checkpoints)
    storage_endpoint_url: str | None = None  # S3-compatible endpoint (else AWS variables)
    local_dir: str = "runs"  # config, progress and result files when storage is s3://
    name: str = "colorize"
    max_failures: int = 3
    seed: int = 0
    # a model to start from (shipped name, checkpoint or run directory): the weights whose
    # names and shapes fit are copied; a resumed run ignores it
    init_from: str | None = None


def build_model(cfg: TrainConfig, table: ColorTable | None, teacher: bool) -> torch.nn.Module:
    """The configured model; it has a category head (the 1000 ImageNet classes) when the data
    carries the teacher's targets and the category loss has a weight, a segmentation head of
    the merged label space for ``seg``."""
    kwargs: dict[str, Any] = {
        "base_width": cfg.model.base_width,
        "encoder": cfg.model.encoder,
        "pretrained": cfg.model.pretrained,
        **cfg.model.kwargs,
    }
    kwargs.setdefault(
        "num_categories", NUM_IMAGENET_CLASSES if teacher and cfg.loss.category else 0
    )
    if cfg.model.name != "colornet":
        if table is None:
            raise ValueError(f"model {cfg.model.name!r} predicts colour classes: set `tables`")
        kwargs.setdefault("num_classes", table.num_classes)
    if cfg.model.name == "seg":
        kwargs.setdefault("num_seg_classes", NUM_SEG_CLASSES if cfg.loss.segmentation else 0)
    return create_model(cfg.model.name, **kwargs)


def param_groups(model: torch.nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """The pretrained encoder at ``encoder_lr_scale`` x lr, everything else at lr."""
    encoder = [p for n, p in model.named_parameters() if n.startswith("encoder.net.")]
    ids = {id(p) for p in encoder}
    rest = [p for p in model.parameters() if id(p) not in ids]
    groups = [{"params": rest, "lr": cfg.lr}]
    if encoder and cfg.model.pretrained:
        groups.append({"params": encoder, "lr": cfg.lr * cfg.encoder_lr_scale})
    elif encoder:
        groups[0]["params"] = rest + encoder
    return groups


# --- data -----------------------------------------------------------------------------------
#: rows mixed on each worker: prepared shards keep each source's photos together (a shard of
#: CamVid frames, one of Imagenette tench); the shards' order changes every epoch, and this
#: buffer mixes about four of them
SHUFFLE_ROWS = 1024


def _batches(shard, cfg: TrainConfig, rank: int, size: int) -> Iterator[dict]:
    """Endless random-crop + flip batches from this worker's share of the training dataset
    (a Ray Data shard): every epoch the shards come in a new order and rows are mixed in a
    buffer of ``SHUFFLE_ROWS``; the same seed gives the same batches."""
    rng = np.random.default_rng((cfg.seed, rank))
    epoch = 0
    while True:
        n = 0
        for batch in shard.iter_batches(
            batch_size=cfg.batch_size,
            batch_format="numpy",
            drop_last=True,
            local_shuffle_buffer_size=SHUFFLE_ROWS,
            local_shuffle_seed=cfg.seed * 100_003 + epoch * 101 + rank,
        ):
            yield collate(samples_of(batch, size), cfg.crop, rng)
            n += 1
        if n == 0:
            raise ValueError(f"worker {rank} got no training batch: fewer rows than workers")
        epoch += 1


def collate(samples: list[Sample], crop: int, rng: np.random.Generator) -> dict:
    """Samples -> tensors: rgb (N,3,c,c) float, seg (N,c,c) long (SEG_IGNORE where no mask),
    teacher (N,1000) probabilities (zeros where none), has_teacher (N,) bool."""
    rgbs, segs = [], []
    for s in samples:
        size = s.rgb.shape[0]
        y, x = rng.integers(0, size - crop + 1, 2)
        flip = rng.random() < 0.5
        rgb = s.rgb[y : y + crop, x : x + crop]
        seg = s.seg[y : y + crop, x : x + crop] if s.seg is not None else None
        if flip:
            rgb = rgb[:, ::-1]
            seg = seg[:, ::-1] if seg is not None else None
        rgbs.append(np.ascontiguousarray(rgb))
        segs.append(np.full((crop, crop), SEG_IGNORE, np.uint8) if seg is None else seg)
    teacher = torch.zeros(len(samples), NUM_IMAGENET_CLASSES)
    for i, s in enumerate(samples):
        if s.teacher is not None:
            teacher[i] = torch.from_numpy(s.teacher)
    return {
        "rgb": torch.from_numpy(np.stack(rgbs)).permute(0, 3, 1, 2).float() / 255.0,
        "seg": torch.from_numpy(np.stack(segs).astype(np.int64)),
        "teacher": teacher,
        "has_teacher": torch.tensor([s.teacher is not None for s in samples]),
    }


def color_target(model, table: ColorTable | None, rgb: torch.Tensor, ab: torch.Tensor):
    """The colour target of a batch: class indices at the model's output stride, or UV."""
    if model.output_kind == "uv":
        return color.uv_to_unit_t(color.rgb_to_yuv_t(rgb)[:, 1:])
    stride = model.output_stride
    ab_s = F.avg_pool2d(ab, stride) if stride > 1 else ab
    return table.encode_hard_t(ab_s)


def semantic_loss(cfg: TrainConfig, table: ColorTable | None) -> SemanticConsistencyLoss | None:
    """The configured semantic-consistency loss (its frozen classifier), or None when off."""
    if not cfg.loss.semantic:
        return None
    classifier = imagenet_classifier(cfg.loss.semantic_classifier)
    return SemanticConsistencyLoss(classifier, table, cfg.temperature)


# --- validation -----------------------------------------------------------------------------
def validation_samples(shard, cfg: TrainConfig, size: int) -> list[Sample]:
    """The first ``val_images`` rows of the validation dataset, in stored order (read once)."""
    samples: list[Sample] = []
    for batch in shard.iter_batches(batch_size=cfg.val_images, batch_format="numpy"):
        samples.extend(samples_of(batch, size))
        if len(samples) >= cfg.val_images:
            break
    return samples[: cfg.val_images]


def validate(model, table, samples: list[Sample], cfg: TrainConfig) -> dict[str, float]:
    """PSNR / SSIM / colourfulness (|rg|,|yb| form) on centre crops of held-out images."""
    if not samples:
        return {}
    size = samples[0].rgb.shape[0]
    side = (min(size, 256) // 16) * 16
    off = (size - side) // 2
    crops = [Image.fromarray(s.rgb[off : off + side, off : off + side]) for s in samples]
    was_training = model.training
    model.eval()
    # the inference path of the CLI, the evaluation and the archive job (at saturation 1)
    outs = colorize_images(model, table, crops, side, cfg.temperature, len(crops), 1.0)
    model.train(was_training)
    pred = [np.asarray(o.convert("RGB")) for o in outs]
    true = [np.asarray(c) for c in crops]
    return {
        "val_psnr": float(np.mean([psnr(p, t) for p, t in zip(pred, true, strict=True)])),
        "val_ssim": float(np.mean([ssim(p, t) for p, t in zip(pred, true, strict=True)])),
        "val_colorfulness": float(np.mean([colorfulness(p) for p in pred])),
    }


# --- the loop ---------------------------------------------------------------------------------
def _lr_lambda(warmup: int, total: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(warmup, 1)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return f


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point (one call per worker)."""
    import ray.train
    import ray.train.torch

    cfg = _from_plain(config)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(cfg.threads_per_worker)
    torch.manual_seed(cfg.seed + rank)
    run_dir = Path(config["_run_dir"])
    (run_dir / "pids").mkdir(parents=True, exist_ok=True)
    (run_dir / "pids" / f"rank{rank}.pid").write_text(str(os.getpid()))

    table: ColorTable | None = config["_table"]
    model = build_model(cfg, table, config["_teacher"])
    opt = torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg.warmup_steps, cfg.steps))
    restored = _restore(model, opt, sched, cfg, table, run_dir)
    if restored is None and config["_init"] is not None:
        state = model.state_dict()
        state.update(config["_init"])  # the tensors of init_from that fit (see train)
        model.load_state_dict(state, strict=True)
    step = restored or 0
    model = ray.train.torch.prepare_model(model)
    raw = model.module if hasattr(model, "module") else model
    device = ray.train.torch.get_device()
    weights = torch.tensor(table.weights, dtype=torch.float32) if table is not None else None
    loss_fn = ColorizationLoss(
        class_weights=weights,
        color_weight=cfg.loss.color,
        category_weight=cfg.loss.category,
        segmentation_weight=cfg.loss.segmentation,
        semantic=semantic_loss(cfg, table),
        semantic_weight=cfg.loss.semantic,
    ).to(device)
    size = config["_size"]
    batches = _batches(ray.train.get_dataset_shard("train"), cfg, rank, size)
    val: list[Sample] = []
    if cfg.val_data and rank == 0:
        val = validation_samples(ray.train.get_dataset_shard("val"), cfg, config["_val_size"])
    amp = cfg.use_gpu and cfg.amp and torch.cuda.is_available()
    sums: dict[str, float] = {}
    t_last, n_last = time.perf_counter(), 0
    if rank == 0:
        _log(run_dir, {"event": "start", "step": step, "restored_from": restored, "world": world})
    while step < cfg.steps:
        b = next(batches)
        rgb = b["rgb"].to(device)
        L, ab = rgb_to_model_input(rgb)
        target = color_target(raw, table, rgb, ab)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            out = model(L)
            terms = loss_fn(
                out,
                color_target=target,
                category_target=b["teacher"].to(device),
                segmentation_target=b["seg"].to(device),
                has_teacher=b["has_teacher"].to(device),
                model=raw,
                L=L,
                rgb=rgb,
            )
        opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        opt.step()
        sched.step()
        step += 1
        n_last += rgb.shape[0]
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        last = step == cfg.steps
        if step % cfg.log_every == 0 or step % cfg.checkpoint_every == 0 or last:
            dt = time.perf_counter() - t_last
            metrics = {f"loss_{k}": v / max(1, n_last // rgb.shape[0]) for k, v in sums.items()}
            metrics.update(step=step, lr=sched.get_last_lr()[0], images_per_s=n_last * world / dt)
            sums, t_last, n_last = {}, time.perf_counter(), 0
            checkpoint = None
            if (step % cfg.checkpoint_every == 0 or last) and rank == 0:
                metrics.update(validate(raw, table, val, cfg))
                checkpoint = _checkpoint(raw, table, opt, sched, step, config, metrics)
            if rank == 0:
                _log(run_dir, metrics)
                print(json.dumps({k: round(v, 4) for k, v in metrics.items()}), flush=True)
            ray.train.report(metrics, checkpoint=checkpoint)
            if checkpoint is not None:  # reported: Ray Train has copied it to storage
                shutil.rmtree(checkpoint.path, ignore_errors=True)


def _restore(model, opt, sched, cfg: TrainConfig, table, run_dir: Path) -> int | None:
    """Load the checkpoint to resume from into model/optimizer/scheduler; returns its step.

    Ray Train hands the worker group its latest registered checkpoint (from local or object
    storage). A local checkpoint written just before a worker died may not be registered yet,
    so a local run directory is searched too; the newest readable one wins, an unreadable one
    is skipped, never half-loaded."""
    import ray.train

    ckpt = ray.train.get_checkpoint()
    with contextlib.ExitStack() as stack:
        candidates = [Path(stack.enter_context(ckpt.as_directory()))] if ckpt else []
        candidates += checkpoints_newest_first(run_dir)
        candidates.sort(key=lambda d: -read_meta(d).get("step", -1))
        for d in candidates:
            try:
                loaded, _ = load_model(d, expect_model=cfg.model.name, expect_table=table)
                state = load_training_state(d)
            except CheckpointError as e:
                print(f"skipping checkpoint {d}: {e}", flush=True)
                continue
            load_state_strict(model, loaded.state_dict(), str(d))
            if state is None:
                return 0
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            return int(state["step"])
    return None


def _checkpoint(model, table, opt, sched, step, config, metrics):
    import ray.train

    d = tempfile.mkdtemp(prefix="ckpt-")
    state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": step}
    plain = {k: v for k, v in config.items() if not k.startswith("_")}
    meta = {"step": step, "config": plain, "metrics": metrics}
    save_checkpoint(d, model, table, state, meta)
    return ray.train.Checkpoint.from_directory(d)


def _log(run_dir: Path, record: dict) -> None:
    with open(run_dir / "progress.jsonl", "a") as f:
        f.write(json.dumps(dict(record, time=time.time())) + "\n")


def _from_plain(d: dict[str, Any]) -> TrainConfig:
    from pipeline.config import from_dict

    return from_dict(TrainConfig, {k: v for k, v in d.items() if not k.startswith("_")})


# --- the driver -------------------------------------------------------------------------------
def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint with the highest step under a run directory (for resuming)."""
    found = checkpoints_newest_first(run_dir)
    return found[0] if found else None


def _data_storage(cfg: TrainConfig) -> StorageOptions:
    return StorageOptions(endpoint_url=cfg.storage_endpoint_url)


def _storage(cfg: TrainConfig):
    """(storage path for Ray, pyarrow filesystem or None, local run directory)."""
    if not is_s3(cfg.storage_path):
        storage = Path(cfg.storage_path).resolve()
        return str(storage), None, storage / cfg.name
    fs, path = arrow_filesystem(cfg.storage_path, _data_storage(cfg))
    return path, fs, Path(cfg.local_dir).resolve() / cfg.name


def _load_table(cfg: TrainConfig) -> ColorTable | None:
    """The colour table, read by the driver (a folder or ``s3://``) and sent to the workers."""
    if not cfg.tables:
        return None
    uri = cfg.tables if cfg.tables.endswith(".parquet") else cfg.tables.rstrip("/") + "/" + TABLE
    if not is_s3(uri):
        return ColorTable.load(uri)
    with tempfile.TemporaryDirectory() as d:
        local = Path(d) / TABLE
        local.write_bytes(read_bytes(uri, _data_storage(cfg)))
        return ColorTable.load(local)


def _init_weights(
    cfg: TrainConfig, table: ColorTable | None, teacher: bool
) -> dict[str, torch.Tensor] | None:
    """The tensors of ``init_from`` that fit the configured model (names and shapes; the
    colour head only with the same table), read by the driver and sent to the workers."""
    if not cfg.init_from:
        return None
    model = build_model(cfg, table, teacher)
    copied, skipped = load_matching(model, resolve_model(cfg.init_from), table)
    print(f"init_from {cfg.init_from}: {len(copied)} tensors copied, skipped {skipped[:10]}")
    own = model.state_dict()
    return {k: own[k] for k in copied}


def _with_absolute_paths(cfg: TrainConfig) -> TrainConfig:
    def absolute(p: str | None) -> str | None:
        return p if p is None or "://" in p else str(Path(p).resolve())

    return replace(
        cfg,
        data=absolute(cfg.data),
        val_data=absolute(cfg.val_data),
        tables=absolute(cfg.tables),
        storage_path=absolute(cfg.storage_path),
        local_dir=absolute(cfg.local_dir),
    )


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run (or resume) a training run; returns the final metrics and checkpoint path."""
    import ray
    import ray.train
    from ray.data import ExecutionOptions
    from ray.train.torch import TorchTrainer

    from pipeline.cluster import require_ray

    require_ray("training")
    cfg = _with_absolute_paths(cfg)  # Ray Train workers run in another working directory
    storage, filesystem, run_dir = _storage(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    data_storage = _data_storage(cfg)
    info = read_dataset_info(cfg.data, data_storage)
    table = _load_table(cfg)
    datasets = {"train": read_prepared(cfg.data, data_storage, shuffle_seed=cfg.seed)}
    val_size = None
    if cfg.val_data:
        val_size = int(read_dataset_info(cfg.val_data, data_storage)["size"])
        datasets["val"] = read_prepared(cfg.val_data, data_storage).limit(cfg.val_images)
    resume = latest_checkpoint(run_dir)  # the workers restore it (see _restore)
    if resume is not None:
        print(f"resuming {cfg.name} from {resume} (step {read_meta(resume).get('step')})")
    config = dict(
        asdict(cfg),
        _run_dir=str(run_dir),
        _table=table,
        _teacher=bool(info.get("teacher")),
        _size=int(info["size"]),
        _val_size=val_size,
        _init=None if resume is not None else _init_weights(cfg, table, bool(info.get("teacher"))),
    )
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config,
        datasets=datasets,
        # only the training data is split among the workers; in stored order, the split is
        # the same for the same seed (the shards' order is what changes per epoch)
        dataset_config=ray.train.DataConfig(
            datasets_to_split=["train"],
            execution_options=ExecutionOptions(preserve_order=True),
        ),
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.num_workers,
            use_gpu=cfg.use_gpu,
            resources_per_worker={"CPU": cfg.cpus_per_worker} if not cfg.use_gpu else None,
        ),
        run_config=ray.train.RunConfig(
            name=cfg.name,
            storage_path=storage,
            storage_filesystem=filesystem,
            failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=3),
        ),
    )
    result = trainer.fit()
    if result.checkpoint is not None:
        ckpt = ("s3://" if filesystem else "") + result.checkpoint.path
    else:
        ckpt = latest_checkpoint(run_dir)
    summary = {"metrics": result.metrics, "checkpoint": str(ckpt), "run_dir": str(run_dir)}
    (run_dir / "result.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary
