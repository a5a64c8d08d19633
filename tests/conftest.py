"""Shared fixtures: the real data beside the repository, one local Ray instance, one loopback S3
server (moto), and a folder of broken inputs.

Data lives in ``../shared`` relative to the repository root (``/work/shared`` beside
``/work/main`` here, the same layout in CI); tests that need it skip themselves cleanly when it
is missing. Everything network-facing binds to 127.0.0.1 only.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.shared_paths import REPO, SHARED  # noqa: F401  (re-exported for the tests)
from tests.shared_paths import SHARED_DATA as DATA
from tests.shared_paths import SHARED_REFERENCE as REFERENCE

COCO_TINY = DATA / "coco-tiny"
ZHANG_313 = REFERENCE / "zhang2016_pts_in_hull.npy"

#: the bad files of :func:`broken_dir` (every one must fail with a reason, none may be fatal)
BROKEN_FILES = ("empty.jpg", "truncated.jpg", "text.jpg", "random.png")

#: credentials for the fake S3 server; real ones must never be used by the tests
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "RAY_USAGE_STATS_ENABLED": "0",
}
#: variables that could point boto3 at a real account or endpoint
CLEARED_AWS_ENV = ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


def require(path: Path) -> Path:
    """``path``, or skip the test with the reason when the shared data is not there."""
    if not path.exists():
        pytest.skip(f"shared data missing: {path} (expected ../shared beside the repository)")
    return path


@pytest.fixture(scope="session")
def coco_tiny() -> Path:
    """``../shared/data/coco-tiny`` (80 train + 80 val images, COCO annotations)."""
    return require(COCO_TINY)


@pytest.fixture(scope="session")
def zhang_313_path() -> Path:
    """Zhang et al.'s 313 in-gamut ab centres (``pts_in_hull.npy``)."""
    return require(ZHANG_313)


# --- environment, Ray, S3 --------------------------------------------------------------------
@pytest.fixture(scope="session")
def aws_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Fake AWS credentials and no profiles, set in ``os.environ`` for the whole session.

    Ray workers inherit the driver's environment when ``ray.init`` starts the local
    instance, so :func:`ray_local` depends on this fixture to start after it.
    """
    nowhere = tmp_path_factory.mktemp("aws") / "absent"
    with pytest.MonkeyPatch.context() as mp:
        for k, v in FAKE_AWS_ENV.items():
            mp.setenv(k, v)
        mp.setenv("AWS_CONFIG_FILE", str(nowhere))
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(nowhere))
        for k in CLEARED_AWS_ENV:
            mp.delenv(k, raising=False)
        yield


@pytest.fixture(scope="session")
def ray_local(aws_env: None) -> Iterator[Any]:
    """One local Ray instance (2 CPUs, no dashboard) shared by every test of the session;
    ``build_tables`` reuses it (``ray.init(ignore_reinit_error=True)``)."""
    import ray

    if ray.is_initialized():  # an entrypoint run in-process by an earlier test started one
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def s3_server(aws_env: None) -> Iterator[str]:
    """moto's S3 server in a thread on 127.0.0.1 (a free port); yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@dataclass
class S3Bucket:
    """A bucket on the loopback server, with a client that talks to that endpoint only."""

    endpoint: str
    name: str
    client: Any

    def put(self, key: str, data: bytes | Path) -> str:
        """Upload bytes (or a local file's bytes) to ``key``; returns its ``s3://`` URI."""
        body = data.read_bytes() if isinstance(data, Path) else data
        self.client.put_object(Bucket=self.name, Key=key, Body=body)
        return self.uri(key)

    def uri(self, key: str = "") -> str:
        return f"s3://{self.name}/{key}"


def make_bucket(endpoint: str, name: str | None = None) -> S3Bucket:
    """Create a bucket (a fresh unique name by default) on the S3 server at ``endpoint``."""
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    name = name or f"test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return S3Bucket(endpoint, name, client)


@pytest.fixture
def s3_bucket(s3_server: str) -> S3Bucket:
    """An empty bucket of its own for one test."""
    return make_bucket(s3_server)


# --- bad inputs ------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def broken_files() -> tuple[str, ...]:
    """The names of the bad files in :func:`broken_dir`."""
    return BROKEN_FILES


@pytest.fixture
def broken_dir(tmp_path: Path, coco_tiny: Path) -> Path:
    """A folder of 4 bad files (:data:`BROKEN_FILES`: a zero-byte .jpg, the first 40% of a
    real JPEG, a text file named .jpg, random bytes named .png) and 3 good colour photographs
    (the first three of coco-tiny ``val2017``, none of them grey)."""
    real = sorted((coco_tiny / "val2017").glob("*.jpg"))
    if len(real) < 4:
        pytest.skip(f"coco-tiny val2017 has {len(real)} images, the fixture needs 4")
    folder = tmp_path / "broken"
    folder.mkdir()
    for src in real[:3]:
        shutil.copyfile(src, folder / src.name)
    data = real[3].read_bytes()
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(data[: int(len(data) * 0.4)])
    (folder / "text.jpg").write_text("this is not a JPEG, only text with a .jpg name\n" * 20)
    (folder / "random.png").write_bytes(np.random.default_rng(0).bytes(4096))
    return folder


class FlakyS3Proxy:
    """A loopback HTTP proxy in front of the S3 server that answers every ``every``-th request
    with ``503 SlowDown`` (what S3 sends when throttling) and forwards the others unchanged:
    transient storage errors, for real, on the wire."""

    def __init__(self, upstream: str, every: int = 3):
        import http.client
        import http.server
        import threading
        from urllib.parse import urlparse

        target = urlparse(upstream)
        self.requests = 0
        self.failed = 0
        proxy = self
        lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                with lock:
                    proxy.requests += 1
                    fail = proxy.requests % every == 0
                    proxy.failed += fail
                if fail:
                    msg = b"<Error><Code>SlowDown</Code><Message>Reduce your rate</Message></Error>"
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(msg)))
                    self.end_headers()
                    self.wfile.write(msg)
                    return
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _relay

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def flaky_s3(s3_server: str) -> Iterator[FlakyS3Proxy]:
    """Every third request to the loopback S3 server fails with 503 SlowDown."""
    proxy = FlakyS3Proxy(s3_server)
    try:
        yield proxy
    finally:
        proxy.close()
