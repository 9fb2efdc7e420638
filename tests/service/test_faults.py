"""Faults the service must survive: a worker killed mid-job, storage down, cancellation, bad webhooks."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx
import pytest
import redis
from standardwebhooks import Webhook, WebhookVerificationError

from app.storage import video_key
from tests.conftest import FAST_REQUEST, Processes, free_port, s3_env, service_env, wait_for
from tests.service.test_end_to_end import poll_to_end, submit

WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the Standard Webhooks specification's example

# Enough pixel-SR steps that a job is still running when the test acts on it.
SLOW_STEPS = {**FAST_REQUEST["steps"], "sr1": 12}


def job(base: str, job_id: str) -> dict:
    return httpx.get(f"{base}/v1/videos/{job_id}", timeout=5).json()


def test_killed_worker_job_is_completed_by_another(
    processes: Processes, namespace: str, tiny_preset: Path, tmp_path: Path
):
    env = service_env(namespace, tiny_preset, tmp_path)
    base = processes.api(env)
    first = processes.worker(env)
    submitted = submit(base, steps=SLOW_STEPS)
    wait_for(lambda: job(base, submitted["id"])["stage"] == "pixel_sr", 120, "the job to reach pixel SR")

    first.send_signal(signal.SIGKILL)
    first.wait()
    assert job(base, submitted["id"])["status"] == "running"
    processes.worker(env)

    final, _ = poll_to_end(base, submitted["id"])
    assert final["status"] == "succeeded", processes.logs()
    assert final["attempts"] == 2


def test_job_survives_a_storage_outage(
    processes: Processes, namespace: str, tiny_preset: Path, tmp_path: Path
):
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = service_env(namespace, tiny_preset, tmp_path, **s3_env(endpoint))
    base = processes.api(env)
    processes.worker(env)
    submitted = submit(base)
    wait_for(lambda: job(base, submitted["id"])["status"] == "running", 60, "the job to start")
    server.stop()
    try:
        wait_for(lambda: "upload of" in processes.logs(), 120, "an upload to fail")
        assert job(base, submitted["id"])["status"] == "running"
    finally:
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
        server.start()
    try:
        final, _ = poll_to_end(base, submitted["id"])
        assert final["status"] == "succeeded", processes.logs()
        assert httpx.get(final["result"]["url"], timeout=10).status_code == 200
    finally:
        server.stop()


def test_cancel_a_queued_job(processes: Processes, namespace: str, tiny_preset: Path, tmp_path: Path):
    env = service_env(namespace, tiny_preset, tmp_path)
    base = processes.api(env)  # no worker: the job stays queued
    submitted = submit(base)
    assert job(base, submitted["id"])["queue_position"] == 0
    canceled = httpx.delete(f"{base}/v1/videos/{submitted['id']}").json()
    assert canceled["status"] == "canceled"
    assert redis.Redis.from_url(env["SHOW1_REDIS_URL"]).llen(f"rq:queue:{namespace}") == 0
    assert httpx.delete(f"{base}/v1/videos/{submitted['id']}").status_code == 409


def test_cancel_a_running_job(processes: Processes, namespace: str, tiny_preset: Path, tmp_path: Path):
    env = service_env(namespace, tiny_preset, tmp_path)
    base = processes.api(env)
    processes.worker(env)
    submitted = submit(base, steps=SLOW_STEPS)
    wait_for(lambda: job(base, submitted["id"])["stage"] == "pixel_sr", 120, "the job to reach pixel SR")
    assert httpx.delete(f"{base}/v1/videos/{submitted['id']}").json()["cancel_requested"] is True
    final, _ = poll_to_end(base, submitted["id"], timeout=60)
    assert final["status"] == "canceled" and final["result"] is None
    assert final["stage_progress"]["pixel_sr"]["step"] < final["stage_progress"]["pixel_sr"]["total"]
    assert not (tmp_path / "storage" / video_key(submitted["id"], final["attempts"])).exists()


class Receiver(BaseHTTPRequestHandler):
    received: list[tuple[dict, bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.received.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_webhooks_signed_and_a_dead_receiver_does_not_fail_the_job(
    processes: Processes, namespace: str, tiny_preset: Path, tmp_path: Path
):
    server = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = service_env(namespace, tiny_preset, tmp_path, SHOW1_WEBHOOK_SECRET=WEBHOOK_SECRET)
    base = processes.api(env)
    processes.worker(env)
    try:
        dead = submit(base, webhook_url=f"http://127.0.0.1:{free_port()}/hook")
        live = submit(base, webhook_url=f"http://127.0.0.1:{server.server_port}/hook", webhook_on_start=True)
        assert poll_to_end(base, dead["id"])[0]["status"] == "succeeded"
        assert poll_to_end(base, live["id"])[0]["status"] == "succeeded"
        wait_for(lambda: len(Receiver.received) >= 2, 30, "two webhook deliveries")
    finally:
        server.shutdown()
    events = []
    for headers, body in Receiver.received:
        Webhook(WEBHOOK_SECRET).verify(body, headers)  # raises unless signed per Standard Webhooks
        with pytest.raises(WebhookVerificationError):
            Webhook("whsec_" + "A" * 32).verify(body, headers)
        payload = json.loads(body)
        assert payload["job"]["id"] == live["id"]
        events.append(payload["event"])
    assert events == ["job.started", "job.succeeded"]
    assert payload["job"]["result"]["frames"] == 29


def test_job_survives_a_redis_restart(processes: Processes, tiny_preset: Path, tmp_path: Path):
    """Redis with AOF (as deployed) restarted mid-job: the worker reconnects and the job completes."""
    port = free_port()
    folder = tmp_path / "redis"
    folder.mkdir()
    command = [
        "redis-server",
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        str(folder),
        "--appendonly",
        "yes",
        "--save",
        "",
    ]

    def start_redis() -> subprocess.Popen:
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        wait_for(lambda: _pings(port), 10, "redis-server to start")
        return server

    server = start_redis()
    env = service_env("restart", tiny_preset, tmp_path, SHOW1_REDIS_URL=f"redis://127.0.0.1:{port}/0")
    try:
        base = processes.api(env)
        processes.worker(env)
        submitted = submit(base, steps=SLOW_STEPS)
        wait_for(lambda: job(base, submitted["id"])["stage"] == "pixel_sr", 120, "the job to reach pixel SR")
        server.send_signal(signal.SIGTERM)  # a clean restart: Redis flushes its AOF on the way down
        server.wait(timeout=10)
        time.sleep(2)
        server = start_redis()
        final, _ = poll_to_end(base, submitted["id"])
        assert final["status"] == "succeeded", processes.logs()
        assert httpx.get(final["result"]["url"], timeout=10).status_code == 200
    finally:
        processes.stop()
        server.terminate()
        server.wait()


def _pings(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


def test_a_job_past_its_time_limit_fails_once_as_resource_exhausted(
    processes: Processes, namespace: str, tiny_preset: Path, tmp_path: Path
):
    # The same job would time out again: no retry, however many the queue allows.
    env = service_env(namespace, tiny_preset, tmp_path, SHOW1_JOB_TIMEOUT_SECONDS="10", SHOW1_JOB_RETRIES="3")
    base = processes.api(env)
    processes.worker(env)
    submitted = submit(base, steps={**FAST_REQUEST["steps"], "sr1": 200})
    final, _ = poll_to_end(base, submitted["id"], timeout=120)
    assert final["status"] == "failed" and final["attempts"] == 1, processes.logs()
    assert final["error"]["code"] == "resource_exhausted"
    assert "smaller sizes" in final["error"]["message"]
    time.sleep(3)
    assert job(base, submitted["id"])["attempts"] == 1
