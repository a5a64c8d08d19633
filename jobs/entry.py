"""What every job entrypoint shares: ``--config FILE`` plus ``key=value`` overrides."""

from __future__ import annotations

import argparse


def parse_args(
    argv: list[str] | None, flags: tuple[str, ...] = ()
) -> tuple[str, list[str], dict[str, bool]]:
    """(config path, overrides of config fields, job flags that are not config fields)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", "-c", required=True, help="YAML config of the stage")
    ap.add_argument("overrides", nargs="*", help="key=value (nested keys with dots)")
    a = ap.parse_args(argv)  # --help ends here, before anything heavy is imported
    # torch before Ray, pyarrow and OpenCV load their libraries: a job driver that imported it
    # only after joining the cluster died with "Intel oneMKL FATAL ERROR: Cannot load
    # libtorch_cpu.so" (tests/test_cluster.py's jobs)
    import torch  # noqa: F401

    values = {f: False for f in flags}
    overrides = []
    for o in a.overrides:
        key, _, value = o.partition("=")
        if key in values:
            values[key] = value.lower() in ("1", "true", "yes")
        else:
            overrides.append(o)
    return a.config, overrides, values
