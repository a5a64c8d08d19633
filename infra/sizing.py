"""Cluster sizing from this project's measured throughput: the wall time and cost of the
cluster stages at a few cluster sizes (the table in infra/README.md, which a test keeps equal
to :func:`sizing_table`).

    python infra/sizing.py        # prints the markdown table

Every measured figure below comes from docs/benchmarks.md, measured on this project's CI
machine: 2 CPU cores (a KVM guest with 2 vCPUs), no GPU. A cluster row extrapolates it
linearly per Ray CPU (one vCPU), times an assumed scaling efficiency. No GPU figure has been
measured: the GPU rows are ESTIMATES from the model's FLOPs and an ASSUMED sustained GPU
throughput. Prices are assumed list prices. Pure Python: no Ray, no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MEASURED_ON = "this project's CI machine: 2 CPU cores, no GPU"
MEASURED_CPUS = 2

# --- measured on MEASURED_ON (docs/benchmarks.md) ---------------------------------------------
# Section 2, statistics job: `build_tables` on a warm local Ray with 2 CPUs, 864 COCO JPEGs,
#   RAY_USAGE_STATS_ENABLED=0 .venv/bin/python benchmarks/bench_tables_job.py $S $S $S
TABLES_IMAGES_PER_S = 647.4
# Section 3, training: `colorize train`, seg (base_width 16), 128 px crops, batch 8 per worker,
# 2 Ray Train CPU workers (DDP over gloo),
#   RAY_USAGE_STATS_ENABLED=0 .venv/bin/python benchmarks/bench_train.py --seconds 15 --ray --ray-steps 40
TRAIN_SMALL_IMAGES_PER_S = 8.8
# Same section and command: one process, 2 torch threads, seg (base_width 16), 256 px, batch 4.
TRAIN_SMALL_256_IMAGES_PER_S = 2.3
# Section 5, archive job: `colorize run` s3:// -> s3:// (moto's S3 server on loopback) with the
# shipped seg-starter (the model before seg-lite0), JPEG out, 1,000 inputs; and the bare
# model loop on the same images,
#   RAY_USAGE_STATS_ENABLED=0 .venv/bin/python benchmarks/bench_run.py --n 1000 --repeat 1 --memory 100,1000 (commit 1d6bfcc)
RUN_IMAGES_PER_S = 5.32
RUN_MODEL_ONLY_IMAGES_PER_S = 7.74

# --- model arithmetic (counted, not timed) ------------------------------------------------------
# Forward GFLOP per image (a multiply-add is 2 FLOPs), counted with torch's FlopCounterMode over
# one forward pass (tests/test_infra.py counts them again):
SEG_SMALL_128_GFLOP = 2.851  # seg, base_width 16, 247 classes, 128 px: the section 3 run
SEG_SMALL_256_GFLOP = 11.41  # the same model at 256 px
SEG_FULL_256_GFLOP = (
    142.0  # seg, Lite0 encoder, base_width 64, 313 classes, 256 px: train_seg_*.yaml
)
SHIPPED_256_GFLOP = 7.57  # the shipped seg-lite0 prepared for inference, 256 px
# ASSUMED: a training step costs 3 forward passes (the backward pass about 2).
TRAIN_FORWARDS_PER_STEP = 3
# Training GFLOP/s one Ray CPU sustained in the section 3 run (derived from the figures above).
CPU_TRAIN_GFLOPS_PER_CPU = (
    TRAIN_SMALL_IMAGES_PER_S * TRAIN_FORWARDS_PER_STEP * SEG_SMALL_128_GFLOP / MEASURED_CPUS
)
# CPU-seconds per image the archive job spends outside the model (decode, encode, S3, Ray),
# assuming the model took as much CPU per image in the job as in the bare loop.
RUN_NON_MODEL_CPU_S = MEASURED_CPUS / RUN_IMAGES_PER_S - MEASURED_CPUS / RUN_MODEL_ONLY_IMAGES_PER_S

# --- ASSUMED, NOT MEASURED ------------------------------------------------------------------
# NVIDIA A100 datasheet peak, dense bf16 on tensor cores, in TFLOP/s.
A100_BF16_PEAK_TFLOPS = 312.0
# ASSUMED fraction of that peak the training step or the model actor sustains: no GPU has been
# lent to this project; replace with a measured figure (images/s per GPU) when there is one.
ASSUMED_GPU_UTILIZATION = 0.25
# ASSUMED fraction of linear scaling kept across nodes (network, stragglers, Ray overhead).
SCALING_EFFICIENCY = 0.8
# S3's documented baseline of GET requests per second per partitioned prefix (AWS, "Best
# practices design patterns: optimizing Amazon S3 performance"): one read per image, so it caps
# a job that lists one prefix until S3 partitions it further. The tables figure above was
# measured on local files, the archive figure on S3 over loopback.
S3_GETS_PER_S_PER_PREFIX = 5_500
# ASSUMED on-demand list prices, USD per hour (AWS us-east-1, Linux, 2024): check your provider.
PRICES_SOURCE = "assumed on-demand list prices (AWS us-east-1, Linux, 2024): check your provider"


@dataclass(frozen=True)
class Node:
    """A node type of infra/kuberay/raycluster.yaml and infra/aws/cluster.yaml."""

    instance: str
    cpus: int  # Ray CPUs (vCPUs) for tasks
    gpus: int
    usd_per_hour: float


CPU_NODE = Node("m5.4xlarge", cpus=16, gpus=0, usd_per_hour=0.768)  # worker groups cpu / cpu_16
GPU_NODE = Node("p4d.24xlarge", cpus=88, gpus=8, usd_per_hour=32.77)  # gpu-8x: 88 of 96 vCPUs
HEAD_NODE = Node("m5.4xlarge", cpus=0, gpus=0, usd_per_hour=0.768)  # head: drivers, no tasks
# run_s3_gpu.yaml: model actors (one GPU each) and the CPUs each one reserves
RUN_GPU_ACTORS = 8
RUN_GPU_CPUS_PER_ACTOR = 1.0

COCO_TRAIN2017_IMAGES = 118_287
TRAIN_EPOCHS = 50
ARCHIVE_IMAGES = 1_000_000

#: images/s one Ray CPU does of each stage on a cluster node before the scaling efficiency:
#: tables and run as measured; train for the cluster's model (train_seg_*.yaml), scaled from
#: the measured small model by FLOPs
IMAGES_PER_S_PER_CPU = {
    "tables": TABLES_IMAGES_PER_S / MEASURED_CPUS,
    "train": CPU_TRAIN_GFLOPS_PER_CPU / (TRAIN_FORWARDS_PER_STEP * SEG_FULL_256_GFLOP),
    "run": RUN_IMAGES_PER_S / MEASURED_CPUS,
}


def efficiency(nodes: int) -> float:
    """Fraction of linear scaling assumed on ``nodes`` nodes (one node: all of it)."""
    return 1.0 if nodes == 1 else SCALING_EFFICIENCY


def cpu_images_per_s(stage: str, cpus: int, nodes: int = 1) -> float:
    """Throughput of ``stage`` (tables, train, run) on ``cpus`` Ray CPUs over ``nodes`` nodes."""
    return IMAGES_PER_S_PER_CPU[stage] * cpus * efficiency(nodes)


def gpu_train_images_per_s(gpus: int, nodes: int = 1) -> float:
    """ESTIMATE: training images/s of train_seg_*.yaml's model on ``gpus`` A100s."""
    per_gpu = A100_BF16_PEAK_TFLOPS * 1e3 * ASSUMED_GPU_UTILIZATION
    return gpus * per_gpu / (TRAIN_FORWARDS_PER_STEP * SEG_FULL_256_GFLOP) * efficiency(nodes)


def gpu_run_images_per_s(nodes: int = 1) -> float:
    """ESTIMATE: archive images/s with run_s3_gpu.yaml on GPU nodes: the slower of the model
    actors (assumed GPU FLOP/s) and the CPUs left for decoding and encoding (measured cost)."""
    model = RUN_GPU_ACTORS * A100_BF16_PEAK_TFLOPS * 1e3 * ASSUMED_GPU_UTILIZATION
    model /= SHIPPED_256_GFLOP
    cpus = GPU_NODE.cpus - RUN_GPU_ACTORS * RUN_GPU_CPUS_PER_ACTOR
    return min(model, cpus / RUN_NON_MODEL_CPU_S) * nodes * efficiency(nodes)


def wall_hours(images: int, images_per_s: float) -> float:
    return images / images_per_s / 3600


def cores_for(images: int, hours: float, stage: str, efficiency: float = SCALING_EFFICIENCY) -> int:
    """Ray CPUs (vCPUs) that do ``images`` of ``stage`` within ``hours`` on a CPU cluster of
    several nodes; divide by a node's CPUs for the node count."""
    return math.ceil(images / (hours * 3600 * IMAGES_PER_S_PER_CPU[stage] * efficiency))


@dataclass(frozen=True)
class Estimate:
    job: str
    images: int
    node: Node
    nodes: int
    images_per_s: float
    basis: str

    @property
    def hours(self) -> float:
        return wall_hours(self.images, self.images_per_s)

    @property
    def usd(self) -> float:
        """Workers and the head for the wall time (start-up and idle time not included)."""
        return self.hours * (self.nodes * self.node.usd_per_hour + HEAD_NODE.usd_per_hour)


def estimates() -> list[Estimate]:
    """The rows of the sizing table."""
    tables_job = f"tables, COCO train2017 ({COCO_TRAIN2017_IMAGES:,} images)"
    train_images = COCO_TRAIN2017_IMAGES * TRAIN_EPOCHS
    train_job = f"train seg (width 64, 256 px), {TRAIN_EPOCHS} epochs ({train_images:,} images)"
    run_job = f"run, archive of {ARCHIVE_IMAGES:,} images"
    rows = []
    for nodes in (1, 4, 8):
        rate = cpu_images_per_s("tables", CPU_NODE.cpus * nodes, nodes)
        basis = "measured per CPU"
        if rate > S3_GETS_PER_S_PER_PREFIX:
            rate, basis = S3_GETS_PER_S_PER_PREFIX, "S3 GETs per prefix"
        rows.append(Estimate(tables_job, COCO_TRAIN2017_IMAGES, CPU_NODE, nodes, rate, basis))
    rate = cpu_images_per_s("train", CPU_NODE.cpus * 8, 8)
    rows.append(
        Estimate(train_job, train_images, CPU_NODE, 8, rate, "FLOP-scaled from measured CPU")
    )
    for nodes in (1, 2):
        rate = gpu_train_images_per_s(GPU_NODE.gpus * nodes, nodes)
        rows.append(
            Estimate(train_job, train_images, GPU_NODE, nodes, rate, "ESTIMATE: assumed GPU")
        )
    for nodes in (1, 4, 8):
        rate = cpu_images_per_s("run", CPU_NODE.cpus * nodes, nodes)
        rows.append(Estimate(run_job, ARCHIVE_IMAGES, CPU_NODE, nodes, rate, "measured per CPU"))
    rate = gpu_run_images_per_s(1)
    basis = "ESTIMATE: CPU-bound, measured"
    rows.append(Estimate(run_job, ARCHIVE_IMAGES, GPU_NODE, 1, rate, basis))
    return rows


def _duration(hours: float) -> str:
    if hours < 1 / 60:
        return f"{hours * 3600:.0f} s"
    if hours < 1:
        return f"{hours * 60:.0f} min"
    if hours < 48:
        return f"{hours:.1f} h"
    return f"{hours / 24:.1f} days"


def _rate(images_per_s: float) -> str:
    return f"{images_per_s:,.0f}" if images_per_s >= 100 else f"{images_per_s:.2g}"


def _usd(usd: float) -> str:
    return f"${usd:,.0f}" if usd >= 10 else f"${usd:.2f}"


def sizing_table() -> str:
    """The markdown table of :func:`estimates`, then the figures and assumptions behind it."""
    lines = [
        "| job | workers | Ray CPUs / GPUs | images/s | wall time | cost | basis |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for e in estimates():
        cpus, gpus = e.node.cpus * e.nodes, e.node.gpus * e.nodes
        resources = f"{cpus} / {gpus} A100" if gpus else f"{cpus} / 0"
        lines.append(
            f"| {e.job} | {e.nodes} x {e.node.instance} | {resources} | {_rate(e.images_per_s)}"
            f" | {_duration(e.hours)} | {_usd(e.usd)} | {e.basis} |"
        )
    per_cpu = IMAGES_PER_S_PER_CPU
    lines += [
        "",
        f"- Measured on {MEASURED_ON} (docs/benchmarks.md): tables {TABLES_IMAGES_PER_S} images/s"
        f" (section 2), training {TRAIN_SMALL_IMAGES_PER_S} images/s with 2 Ray Train workers"
        f" (section 3: seg width 16, 128 px), archive job {RUN_IMAGES_PER_S} images/s against"
        f" {RUN_MODEL_ONLY_IMAGES_PER_S} for the bare model (section 5). Per Ray CPU: tables"
        f" {per_cpu['tables']:.1f}, run {per_cpu['run']:.2f}, train (width 64, 256 px, scaled"
        f" by FLOPs: {SEG_FULL_256_GFLOP} vs {SEG_SMALL_128_GFLOP} GFLOP per forward pass)"
        f" {per_cpu['train']:.3f} images/s.",
        f"- Assumed, not measured: {SCALING_EFFICIENCY:.0%} of linear scaling on more than one"
        f" node; GPU rows at {ASSUMED_GPU_UTILIZATION:.0%} of the A100's"
        f" {A100_BF16_PEAK_TFLOPS:.0f} TFLOP/s bf16 peak, a training step costing"
        f" {TRAIN_FORWARDS_PER_STEP} forward passes; the GPU archive row bound by the"
        f" {GPU_NODE.cpus - RUN_GPU_ACTORS * RUN_GPU_CPUS_PER_ACTOR:.0f} CPUs left for decoding"
        f" and encoding at {RUN_NON_MODEL_CPU_S:.3f} CPU-seconds per image (measured job minus"
        f" bare model).",
        f"- Limit: {S3_GETS_PER_S_PER_PREFIX:,} GET/s per S3 prefix (AWS's documented"
        " baseline) caps a job reading one prefix; the tables figure was measured on local"
        " files.",
        f"- Cost: workers plus one {HEAD_NODE.instance} head for the wall time, at"
        f" {CPU_NODE.instance} ${CPU_NODE.usd_per_hour}/h and {GPU_NODE.instance}"
        f" ${GPU_NODE.usd_per_hour}/h, {PRICES_SOURCE}; node start-up and image pulls not"
        " included.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(sizing_table())
