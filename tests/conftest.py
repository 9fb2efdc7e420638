"""Shared fixtures: real Redis (isolated by key prefix and queue name), the tiny preset, a local S3
server reached over HTTP, and helpers that start the service's own processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from app.jobs import Keys

REDIS_URL = os.environ.get("SHOW1_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REPO = Path(__file__).resolve().parents[1]

# Small sizes and few steps: a whole job runs in a few seconds on 2 CPU cores with the tiny preset.
FAST_REQUEST = {
    "keyframe_size": {"height": 16, "width": 24},
    "output_size": {"height": 64, "width": 112},
    "steps": {"base": 2, "interp": 2, "sr1_image": 2, "sr1": 2, "sr2": 2},
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def redis_connection() -> redis.Redis:
    connection = redis.Redis.from_url(REDIS_URL)
    connection.ping()
    return connection


@pytest.fixture
def namespace(redis_connection: redis.Redis) -> Iterator[str]:
    """A fresh key prefix and queue name; everything under them is deleted afterwards."""
    name = f"t{uuid.uuid4().hex[:10]}"
    yield name
    delete_namespace(redis_connection, name)


def delete_namespace(connection: redis.Redis, name: str) -> None:
    """Every key of a namespace, and RQ's per-job keys of its jobs (named by job id alone)."""
    records = connection.scan_iter(match=Keys(name).record("*"))
    job_ids = [key.decode().rsplit(":", 1)[-1] for key in records]
    keys = [*connection.scan_iter(match=f"{{{name}}}:*"), *connection.scan_iter(match=f"rq:*{name}*")]
    keys += [f"rq:{kind}:{job_id}" for job_id in job_ids for kind in ("job", "results")]
    if keys:
        connection.delete(*keys)


@pytest.fixture(scope="session")
def tiny_preset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from models.tiny import make_tiny_preset

    # Named as the cache layout has it, so `show1 up` finds it through SHOW1_CACHE_DIR.
    return make_tiny_preset(tmp_path_factory.mktemp("cache") / "tiny-preset")


@pytest.fixture
def s3_server() -> Iterator[str]:
    """moto's standalone S3 server on a free loopback port."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def s3_env(endpoint: str, bucket: str = "videos") -> dict[str, str]:
    import boto3

    boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    ).create_bucket(Bucket=bucket)
    return {
        "SHOW1_STORAGE_BACKEND": "s3",
        "SHOW1_S3_ENDPOINT_URL": endpoint,
        "SHOW1_S3_BUCKET": bucket,
        "SHOW1_S3_ACCESS_KEY_ID": "test",
        "SHOW1_S3_SECRET_ACCESS_KEY": "test",
    }


def service_env(namespace: str, tiny_preset: Path, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SHOW1_")}
    env.update(
        {
            "SHOW1_REDIS_URL": REDIS_URL,
            "SHOW1_KEY_PREFIX": namespace,
            "SHOW1_QUEUE_NAME": namespace,
            "SHOW1_MODELS_DIR": str(tiny_preset),
            "SHOW1_LOCAL_STORAGE_DIR": str(tmp_path / "storage"),
            "SHOW1_LOG_FORMAT": "text",
            "SHOW1_HEARTBEAT_SECONDS": "2",
            "SHOW1_RATE_LIMIT_PER_MINUTE": "100000",
            "SHOW1_MAX_JOBS_IN_FLIGHT_PER_KEY": "100",
            # Webhook receivers in tests listen on loopback, which only an allowlist lets through.
            "SHOW1_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


class Processes:
    """Service processes started by a test; all are stopped (and reaped) at the end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[subprocess.Popen] = []

    def start(self, args: list[str], env: dict[str, str], name: str) -> subprocess.Popen:
        log = open(self.tmp_path / f"{name}-{len(self.started)}.log", "wb")  # noqa: SIM115 - kept open for the child
        process = subprocess.Popen(
            [sys.executable, "-m", *args], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT
        )
        self.started.append(process)
        return process

    def api(self, env: dict[str, str]) -> str:
        port = free_port()
        self.start(["uvicorn", "app.main:create_app", "--factory", "--port", str(port)], env, "api")
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(f"{base}/healthz"), 30, "the API to start")
        return base

    def worker(self, env: dict[str, str]) -> subprocess.Popen:
        return self.start(["worker.cli", "worker"], env, "worker")

    def logs(self) -> str:
        return "\n".join(
            path.read_text(errors="replace")[-3000:] for path in sorted(self.tmp_path.glob("*.log"))
        )

    def stop(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.started:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path)
    yield started
    started.stop()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def wait_for(condition, timeout: float, what: str, interval: float = 0.2):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
