"""Starting or joining Ray: the entrypoints' job (the CLI, ``jobs/``), never a stage's.

The stage functions (``build_tables``, ``prepare``, ``train``, ``evaluate``, ``run``) use the
Ray application they are called in, and start none: inside a caller's own application they run
on its cluster and leave its settings as they found them. An entrypoint calls :func:`connect`
first: it joins the cluster in ``RAY_ADDRESS`` (``ray job submit`` sets it) or starts a local
one, with the local node's task slots (:data:`TASK_SLOT`) that keep decode tasks from
starving the archive job's model actors on a small machine.
"""

from __future__ import annotations

import os

#: a custom resource of a local node: at most this many decode/finish tasks run at once
TASK_SLOT = "colorize_task_slot"


def connect(task_slots: int = 0) -> bool:
    """Join ``RAY_ADDRESS``'s cluster, or start a local Ray on this machine; no-op when Ray is
    already up in this process. Returns whether this call started or joined it. Worker
    output (prints, logs, Ray Train's progress) reaches this driver's log."""
    import ray

    if ray.is_initialized():
        return False
    local = not os.environ.get("RAY_ADDRESS")
    resources = {TASK_SLOT: task_slots} if local and task_slots else None
    ray.init(include_dashboard=False, log_to_driver=True, resources=resources)
    return True


def task_slot_options() -> dict:
    """``{"resources": {TASK_SLOT: 1}}`` where the cluster has task slots (a local run started
    by :func:`connect`), else nothing: Ray's CPU accounting alone."""
    import ray

    return {"resources": {TASK_SLOT: 1}} if ray.cluster_resources().get(TASK_SLOT) else {}


def require_ray(stage: str) -> None:
    """A stage's first step: it runs on the caller's Ray application and starts none."""
    import ray

    if not ray.is_initialized():
        raise RuntimeError(
            f"{stage} runs on the caller's Ray: call ray.init() or pipeline.cluster.connect() first"
        )
