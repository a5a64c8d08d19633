"""A real Ray cluster on loopback: ``ray start --head`` on 127.0.0.1, each stage submitted with
``ray job submit`` through the job server, waited for until SUCCEEDED, outputs checked. The
cluster is stopped at the end whatever happens (its own process group, killed).

Work in progress (the cluster issue): on this machine the job server's readiness check
(``ray job list``) has not succeeded yet, so the module is marked slow and CI does not run it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.archive_fixtures import write_bad_inputs, write_grey_copies
from tests.conftest import FAKE_AWS_ENV, require
from tests.shared_paths import REPO, SHARED_DATA

pytestmark = [pytest.mark.timeout(600), pytest.mark.ray, pytest.mark.slow]

BIN = Path(sys.executable).parent
COCO = SHARED_DATA / "coco-tiny"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[str]:
    """A one-node Ray cluster (2 CPUs) with its job server on 127.0.0.1; yields its address."""
    temp = tmp_path_factory.mktemp("ray")
    port, dash = _free_port(), _free_port()
    env = {
        **os.environ,
        **FAKE_AWS_ENV,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "disabled",
    }
    cmd = [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1"]
    cmd += [f"--port={port}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}"]
    cmd += ["--num-cpus=2", "--disable-usage-stats", f"--temp-dir={temp}"]
    head = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL)
    address = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", dash), timeout=1).close()
                if _ray_job(address, "list").returncode == 0:
                    break
            except OSError:
                pass
            assert head.poll() is None, "ray start --head exited"
            time.sleep(1)
        else:
            pytest.fail("the job server did not come up")
        yield address
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(head.pid, sig)
            except ProcessLookupError:
                break
            time.sleep(3)


def _ray_job(address: str, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        **FAKE_AWS_ENV,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "disabled",
    }
    return subprocess.run(
        [str(BIN / "ray"), "job", *args, "--address", address],
        capture_output=True,
        text=True,
        env=env,
        timeout=560,
    )


def submit(address: str, module: str, config: str, *overrides: str) -> str:
    """``ray job submit --working-dir . -- python -m jobs.<module> --config ...``; waits for the
    end and returns the job's logs (the test fails unless the job succeeded)."""
    entry = [sys.executable, "-m", f"jobs.{module}", "--config", f"jobs/configs/{config}"]
    res = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(REPO)]
        + ["--", *entry, *overrides],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            **FAKE_AWS_ENV,
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_AUTH_MODE": "disabled",
        },
        timeout=560,
        cwd=REPO,
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0 and "succeeded" in out, out[-4000:]  # exits 1 when it failed
    return out


def test_tables_then_run_as_ray_jobs(cluster, tmp_path):
    tables = tmp_path / "tables"
    submit(
        cluster,
        "tables",
        "tables_coco_s3.yaml",
        f"sources=[{require(COCO / 'val2017')}]",
        f"out={tables}",
    )
    report = json.loads((tables / "report.json").read_text())
    assert report["n_ok"] >= 78 and (tables / "classes.parquet").exists()

    src = tmp_path / "archive"
    expected = write_grey_copies(COCO / "val2017", src, n=12) + write_bad_inputs(src)
    out = submit(
        cluster,
        "run",
        "run_local.yaml",
        f"src={src}",
        f"dst={tmp_path / 'colour'}",
        "allow_errors=true",
        "progress=false",
    )
    rows = pq.read_table(tmp_path / "colour" / "manifest.parquet").to_pylist()
    assert len(rows) == len(expected), out[-2000:]
    assert sum(r["status"] == "ok" for r in rows) == 12
