"""Public URLs as clients see them, end to end (`show1 serve` under uvicorn, a real worker, a webhook
receiver): from the request's host, or a trusted proxy's forwarded one, never a bind address; the
URLs a worker makes (preview, webhook payloads) included. Also the image's health check per role,
against the same live processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.conftest import FAST_REQUEST, REDIS_URL, REPO, free_port, service_env, wait_for
from tests.service.test_end_to_end import poll_to_end
from tests.service.test_webhook_delivery import Receiver

PROXY = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "videos.example:8443"}


def healthcheck(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "worker.cli", "healthcheck", *args]
    return subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=60)


def test_urls_follow_the_request_and_a_trusted_proxy(namespace, tiny_preset, tmp_path, processes):  # noqa: ANN001
    alive = tmp_path / "worker.alive"
    # No SHOW1_PUBLIC_BASE_URL; the API binds every address, as in a container.
    env = service_env(namespace, tiny_preset, tmp_path, SHOW1_WORKER_ALIVE_FILE=str(alive))
    port = free_port()
    processes.start(["worker.cli", "serve", "--host", "0.0.0.0", "--port", str(port)], env, "api")
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: healthcheck(env, "--role", "serve", "--port", str(port)).returncode == 0, 30, "the API")
    # Before the worker is up, its health check fails and says why.
    waiting = healthcheck(env, "--role", "worker")
    assert waiting.returncode == 1 and "has not written" in waiting.stderr, waiting
    worker = processes.worker(env)
    receiver = Receiver()
    try:
        # Made through a proxy on loopback (trusted by default): the job's URLs are the proxy's.
        body = {"prompt": "a lighthouse", "num_keyframes": 2, "webhook_url": receiver.url, **FAST_REQUEST}
        job = httpx.post(f"{base}/v1/videos", json=body, headers=PROXY, timeout=10).json()
        final, _ = poll_to_end(base, job["id"])
        assert final["status"] == "succeeded", processes.logs()

        # Read directly: URLs under the address the reader used.
        direct = f"{base}/v1/videos/{job['id']}"
        assert final["result"]["url"] == f"{direct}/content"
        assert final["preview_url"] == f"{direct}/preview"
        video = httpx.get(final["result"]["url"], timeout=10)
        assert video.status_code == 200 and video.content[4:8] == b"ftyp"
        assert httpx.get(final["preview_url"], timeout=10).content[:4] == b"\x89PNG"
        openai_view = httpx.get(f"{base}/openai/v1/videos/{job['id']}", timeout=10).json()
        assert openai_view["preview_url"] == f"{direct}/preview"

        # Read through the proxy: its scheme and host.
        proxied = httpx.get(direct, headers=PROXY, timeout=10).json()
        public = f"https://videos.example:8443/v1/videos/{job['id']}"
        assert proxied["result"]["url"] == f"{public}/content"
        assert proxied["preview_url"] == f"{public}/preview"

        # The worker's webhook: the base URL of the request that made the job, as no request is at hand.
        wait_for(lambda: receiver.hits, 30, "the webhook")
        payload = json.loads(receiver.hits[0][2])
        assert payload["event"] == "job.succeeded"
        assert payload["job"]["result"]["url"] == f"{public}/content"
        assert payload["job"]["preview_url"] == f"{public}/preview"

        # The health check per role, against these processes.
        wait_for(lambda: alive.exists(), 60, "the worker's alive file")
        assert healthcheck(env, "--role", "worker").returncode == 0
        assert healthcheck(env, "--role", "up", "--port", str(port)).returncode == 0
        # A worker that stopped beating (stopped here, so it cannot touch the file again meanwhile).
        worker.kill()
        worker.wait(timeout=30)
        stale = time.time() - 10 * 60
        os.utime(alive, (stale, stale))
        old = healthcheck(env, "--role", "worker")
        assert old.returncode == 1 and "old" in old.stderr, old
        nothing = healthcheck(env, "--role", "serve", "--port", str(free_port()))
        assert nothing.returncode == 1 and "does not answer" in nothing.stderr
    finally:
        receiver.close()


def test_forwarded_headers_count_only_from_trusted_proxies(namespace: str, tmp_path: Path):
    settings = Settings(
        redis_url=REDIS_URL,
        key_prefix=namespace,
        queue_name=namespace,
        local_storage_dir=tmp_path / "storage",
        trusted_proxies="10.0.0.0/8",
    )
    app = create_app(settings)
    body = {"prompt": "a cat"}
    proxied = {**PROXY, "X-Forwarded-For": "203.0.113.9, 10.1.2.3"}
    with TestClient(app, base_url="http://api.internal:8000", client=("10.1.2.3", 5000)) as trusted:
        job = trusted.post("/v1/videos", json=body, headers=proxied).json()
        view = trusted.get(f"/v1/videos/{job['id']}", headers=proxied).json()
        assert view["id"] == job["id"]
        store_base = app.state.services.store.get(job["id"])["base_url"]
        assert store_base == "https://videos.example:8443"
        # A forged host is not taken even from a trusted proxy.
        forged = trusted.post("/v1/videos", json=body, headers={"X-Forwarded-Host": "evil/../x"}).json()
        assert app.state.services.store.get(forged["id"])["base_url"] == "http://api.internal:8000"
    with TestClient(app, base_url="http://api.internal:8000", client=("198.51.100.7", 5000)) as stranger:
        job = stranger.post("/v1/videos", json=body, headers=proxied).json()
        assert app.state.services.store.get(job["id"])["base_url"] == "http://api.internal:8000"
    configured = Settings(
        redis_url=REDIS_URL,
        key_prefix=namespace,
        queue_name=namespace,
        local_storage_dir=tmp_path / "storage",
        public_base_url="https://api.example.com/",
    )
    configured_app = create_app(configured)
    with TestClient(configured_app, client=("127.0.0.1", 5000)) as client:
        job = client.post("/v1/videos", json=body, headers=PROXY).json()
        assert configured_app.state.services.store.get(job["id"])["base_url"] == "https://api.example.com"
