"""What the benchmarks share: how busy the machine was while they ran."""

import os
import time
from pathlib import Path


def proc_stats() -> dict[int, tuple[int, str, int]]:
    """Every live process from ``/proc``: ``{pid: (parent pid, name, CPU ticks user+system)}``."""
    stats = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        stats[int(stat.parent.name)] = (int(fields[1]), name, int(fields[11]) + int(fields[12]))
    return stats


def process_tree(root: int, stats: dict[int, tuple[int, str, int]] | None = None) -> set[int]:
    """``root`` and all its live descendants (for Ray: the GCS, raylet, workers, actors)."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in (stats if stats is not None else proc_stats()).items():
        children.setdefault(ppid, []).append(pid)
    tree, frontier = {root}, [root]
    while frontier:
        kids = [k for k in children.get(frontier.pop(), []) if k not in tree]
        tree.update(kids)
        frontier += kids
    return tree


def host_load(seconds: float = 1.0) -> dict:
    """How busy the machine is while this script sleeps (Linux ``/proc``): the benchmarks need
    a quiet machine, so every run records how quiet it was."""
    hz = os.sysconf("SC_CLK_TCK")
    before = proc_stats()
    time.sleep(seconds)
    after = proc_stats()
    use = sorted(
        (
            (ticks - before.get(pid, (0, name, ticks))[2]) / hz / seconds,
            name,
        )
        for pid, (_, name, ticks) in after.items()
    )[::-1]
    return {
        "loadavg_1min": round(os.getloadavg()[0], 2),
        "others_cpus_busy": round(sum(u for u, _ in use), 2),
        "busiest": [f"{n} {u:.0%}" for u, n in use[:3] if u >= 0.05],
    }


def cpu_times() -> list[int]:
    """The machine's CPU ticks so far (``/proc/stat``): user, nice, system, idle, iowait, irq,
    softirq, steal."""
    return [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]


def cpu_use_since(before: list[int]) -> dict:
    """The machine's CPU time since ``before`` (:func:`cpu_times`): ``busy_s`` the seconds every
    process together ran (user, nice, system, interrupts), and the shares of the elapsed CPU
    time that were ``idle`` (with iowait) and ``stolen`` by the hypervisor. Busy seconds per
    image do not count the time the hypervisor took, so they compare two phases that lost
    different shares of the machine; the idle share is what a phase left unused."""
    d = [a - b for a, b in zip(cpu_times(), before, strict=True)]
    total = max(1, sum(d))
    hz = os.sysconf("SC_CLK_TCK")
    return {
        "busy_s": round((d[0] + d[1] + d[2] + d[5] + d[6]) / hz, 2),
        "idle": round((d[3] + d[4]) / total, 3),
        "stolen": round(d[7] / total, 3),
    }
