"""What the benchmarks share: how busy the machine was while they ran."""

import os
import time
from pathlib import Path


def host_load(seconds: float = 1.0) -> dict:
    """How busy the machine is while this script sleeps (Linux ``/proc``): the benchmarks need
    a quiet machine, so every run records how quiet it was."""

    def cpu_ticks() -> dict[str, int]:
        ticks = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                text = stat.read_text()
            except OSError:
                continue
            name = text[text.index("(") + 1 : text.rindex(")")]
            fields = text[text.rindex(")") + 2 :].split()
            ticks[f"{stat.parent.name} {name}"] = int(fields[11]) + int(fields[12])
        return ticks

    hz = os.sysconf("SC_CLK_TCK")
    before = cpu_ticks()
    time.sleep(seconds)
    after = cpu_ticks()
    use = sorted(
        ((after[k] - before.get(k, after[k])) / hz / seconds, k.split(" ", 1)[1]) for k in after
    )[::-1]
    return {
        "loadavg_1min": round(os.getloadavg()[0], 2),
        "others_cpus_busy": round(sum(u for u, _ in use), 2),
        "busiest": [f"{n} {u:.0%}" for u, n in use[:3] if u >= 0.05],
    }
