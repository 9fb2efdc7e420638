"""Webhooks that cannot be aimed inward and cannot be lost: checks at submit and at delivery, leased
deliveries that survive a killed sender, and a deadline that keeps a slow receiver from delaying others."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from app.egress import EgressPolicy
from app.jobs import Keys
from tests.api.test_api import AUTH, make_client, queued
from tests.conftest import REDIS_URL, REPO, wait_for
from worker.webhooks import WebhookQueue, WebhookSender


class Receiver:
    """A webhook receiver on loopback; `hold` makes it sit on requests, `drip` answer a byte at a time."""

    def __init__(self, drip: bool = False) -> None:
        self.hits: list[tuple[float, dict[str, str], bytes]] = []
        self.hold = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.hits.append((time.monotonic(), dict(self.headers), body))
                while receiver.hold.is_set():
                    time.sleep(0.05)
                if drip:
                    self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                    for _ in range(40):
                        self.wfile.write(b"X")
                        self.wfile.flush()
                        time.sleep(3)
                    return
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"

    def close(self) -> None:
        self.hold.clear()
        self.server.shutdown()


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    made: list[Receiver] = []
    yield made
    for receiver in made:
        receiver.close()


def sender(namespace: str, allowed: list[str], deadline: float = 2.0) -> WebhookSender:
    queue = WebhookQueue(redis.Redis.from_url(REDIS_URL), Keys(namespace))
    thread = WebhookSender(queue, "", deadline, 6, EgressPolicy.from_hosts(allowed))
    thread.start()
    return thread


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:6379/",
        "http://[::1]/",
        "http://10.0.0.1/",
        "http://2130706433/",
        "http://0177.0.0.1/",
        "http://[::ffff:127.0.0.1]/",
        "http://redis:6379/",
    ],
)
def test_submit_refuses_internal_targets(namespace: str, tmp_path: Path, url: str) -> None:
    with make_client(namespace, tmp_path) as client:
        answer = client.post("/v1/videos", json={"prompt": "a cat", "webhook_url": url}, headers=AUTH)
        assert answer.status_code == 422, answer.text
        assert answer.json()["detail"][0]["loc"] == ["body", "webhook_url"]
        assert queued(namespace) == 0


def test_an_allowlisted_private_host_is_accepted(namespace: str, tmp_path: Path) -> None:
    with make_client(namespace, tmp_path, webhook_allowed_hosts="hooks.internal,127.0.0.1") as client:
        body = {"prompt": "a cat", "webhook_url": "http://127.0.0.1:9000/hook"}
        assert client.post("/v1/videos", json=body, headers=AUTH).status_code == 202
        assert isinstance(client, TestClient)


def test_delivery_refuses_a_name_that_now_resolves_inward(namespace: str, receivers: list[Receiver]) -> None:
    receivers.append(receiver := Receiver())
    queue = WebhookQueue(redis.Redis.from_url(REDIS_URL), Keys(namespace))
    port = receiver.url.split(":")[2].split("/")[0]
    delivery = queue.schedule(f"http://localhost:{port}/hook", {"type": "video.completed"})
    thread = sender(namespace, allowed=[])  # nothing allowlisted: localhost is 127.0.0.1
    try:
        wait_for(
            lambda: not queue.redis.exists(queue.delivery_key(delivery)),
            20,
            "the delivery to be dropped",
        )
        assert receiver.hits == []
    finally:
        thread.stopped.set()
        thread.join(5)


def test_a_delivery_survives_a_killed_sender(namespace: str, receivers: list[Receiver]) -> None:
    receivers.append(receiver := Receiver())
    receiver.hold.set()
    queue = WebhookQueue(redis.Redis.from_url(REDIS_URL), Keys(namespace))
    delivery = queue.schedule(receiver.url, {"type": "video.completed", "data": {"id": "v1"}})
    # A sender in a process of its own, killed while the receiver sits on the request.
    script = (
        "import redis\nfrom app.egress import EgressPolicy\n"
        "from app.jobs import Keys\n"
        "from worker.webhooks import WebhookQueue, WebhookSender\n"
        f"queue = WebhookQueue(redis.Redis.from_url({REDIS_URL!r}), Keys({namespace!r}))\n"
        "WebhookSender(queue, '', 1.0, 6, EgressPolicy.from_hosts(['127.0.0.1'])).run()\n"
    )
    doomed = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    try:
        wait_for(lambda: receiver.hits, 30, "the first attempt to arrive")
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
    finally:
        doomed.kill()
    receiver.hold.clear()
    thread = sender(namespace, allowed=["127.0.0.1"], deadline=1.0)
    try:
        wait_for(lambda: len(receiver.hits) >= 2, 30, "the delivery after the sender was killed")
        wait_for(lambda: not queue.redis.exists(queue.delivery_key(delivery)), 10, "the delivery settled")
    finally:
        thread.stopped.set()
        thread.join(5)
    ids = {headers["webhook-id"] for _, headers, _ in receiver.hits}
    assert ids == {delivery}, "a retried delivery keeps its webhook-id"
    assert json.loads(receiver.hits[-1][2])["data"]["id"] == "v1"


def test_a_dripping_receiver_delays_nobody(namespace: str, receivers: list[Receiver]) -> None:
    receivers.append(slow := Receiver(drip=True))
    receivers.append(fast := Receiver())
    queue = WebhookQueue(redis.Redis.from_url(REDIS_URL), Keys(namespace))
    dripped = queue.schedule(slow.url, {"n": 1})
    queue.schedule(fast.url, {"n": 2})
    started = time.monotonic()
    thread = sender(namespace, allowed=["127.0.0.1"], deadline=2.0)
    try:
        wait_for(lambda: fast.hits, 10, "the other receiver's delivery")
        assert fast.hits[0][0] - started < 3.0
        # The dripping delivery is cut at its deadline and scheduled again, not held for minutes.
        key = queue.delivery_key(dripped)
        wait_for(lambda: queue.redis.hget(key, "attempts") == b"1", 10, "the dripping delivery's deadline")
        assert time.monotonic() - started < 8.0
    finally:
        thread.stopped.set()
        thread.join(5)


def test_canceling_a_queued_job_emits_its_event(namespace: str, tmp_path: Path) -> None:
    with make_client(namespace, tmp_path, webhook_allowed_hosts="127.0.0.1") as client:
        body = {"prompt": "a cat", "webhook_url": "http://127.0.0.1:9/hook"}
        job = client.post("/v1/videos", json=body, headers=AUTH).json()
        assert client.delete(f"/v1/videos/{job['id']}", headers=AUTH).json()["status"] == "canceled"
    queue = WebhookQueue(redis.Redis.from_url(REDIS_URL), Keys(namespace))
    (delivery,) = queue.redis.zrange(queue.due_key, 0, -1)
    payload = json.loads(queue.redis.hget(queue.delivery_key(delivery.decode()), "body"))
    assert payload["event"] == "job.canceled" and payload["job"]["id"] == job["id"]
