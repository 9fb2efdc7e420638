"""Exactly one published result per job, whatever happens to the workers: a worker frozen past its
heartbeat and then resumed, and a chaos run of workers killed and frozen at random."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import redis

from app.jobs import JobStore
from tests.conftest import FAST_REQUEST, REDIS_URL, Processes, service_env, wait_for
from tests.service.test_end_to_end import poll_to_end

TERMINAL = {"succeeded", "failed", "canceled"}


class Hooks:
    """A webhook receiver on loopback that keeps every event it gets."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                hooks.events.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"

    def succeeded(self) -> Counter:
        return Counter(e["job"]["id"] for e in self.events if e["event"] == "job.succeeded")


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    receiver = Hooks()
    yield receiver
    receiver.server.shutdown()


def progress_history(connection: redis.Redis, store: JobStore, job_id: str) -> list[float]:
    entries = connection.xrange(store.keys.events(job_id))
    values = [json.loads(fields[b"data"]).get("progress") for _, fields in entries]
    return [value for value in values if value is not None]


def test_a_frozen_worker_resumed_publishes_nothing(
    processes: Processes, namespace: str, tiny_preset: Path, tmp_path: Path, hooks: Hooks
) -> None:
    env = service_env(namespace, tiny_preset, tmp_path)
    base = processes.api(env)
    frozen = processes.worker(env)
    # 80 pixel-SR steps: long enough to freeze the first attempt mid-stage; the rerun takes ~2 min here.
    body = {"prompt": "split brain", **FAST_REQUEST, "steps": {**FAST_REQUEST["steps"], "sr1": 20}}
    job = httpx.post(f"{base}/v1/videos", json={**body, "webhook_url": hooks.url}).json()
    url = f"{base}/v1/videos/{job['id']}"
    wait_for(lambda: httpx.get(url).json()["stage"] == "pixel_sr", 120, "the first attempt to reach pixel SR")
    frozen.send_signal(signal.SIGSTOP)
    try:
        processes.worker(env)  # its janitor finds the frozen worker silent and the job runs again here
        final, _ = poll_to_end(base, job["id"], timeout=420)
    finally:
        frozen.send_signal(signal.SIGCONT)
    assert final["status"] == "succeeded" and final["attempts"] == 2, processes.logs()
    # The resumed first attempt finds it lost the job at its next step and stops, publishing nothing.
    time.sleep(8)
    after = httpx.get(url).json()
    assert (after["finished_at"], after["result"]) == (final["finished_at"], final["result"])
    served = httpx.get(f"{url}/content").content
    assert len(served) == final["result"]["bytes"]
    connection = redis.Redis.from_url(REDIS_URL)
    history = progress_history(connection, JobStore(connection, namespace, 3600), job["id"])
    assert history == sorted(history), "progress went backwards"
    wait_for(lambda: hooks.succeeded()[job["id"]] >= 1, 30, "the job.succeeded webhook")
    time.sleep(2)
    assert hooks.succeeded()[job["id"]] == 1
    assert not list((tmp_path / "storage").rglob(f"{job['id']}.1.mp4")), "the stale attempt's video remains"


def test_chaos_every_job_ends_exactly_once(
    processes: Processes, namespace: str, tiny_preset: Path, tmp_path: Path, hooks: Hooks
) -> None:
    rng = random.Random(8)
    # CHAOS_STAGE_OUTPUTS=false measures the work re-done without resuming (every attempt from scratch).
    stage_outputs = os.environ.get("CHAOS_STAGE_OUTPUTS", "true")
    env = service_env(
        namespace, tiny_preset, tmp_path, SHOW1_JOB_RETRIES="6", SHOW1_STAGE_OUTPUTS=stage_outputs
    )
    base = processes.api(env)
    workers = [processes.worker(env) for _ in range(3)]
    # Four keyframes and three pixel-SR steps: about 15 s a job with three workers on two cores, long
    # enough for the chaos to strike mid-job and short enough to end 20 jobs in a few minutes.
    steps = {**FAST_REQUEST["steps"], "sr1": 3}
    body = {"prompt": "chaos", **FAST_REQUEST, "num_keyframes": 4, "steps": steps}
    ids = [
        httpx.post(f"{base}/v1/videos", json={**body, "seed": n, "webhook_url": hooks.url}).json()["id"]
        for n in range(20)
    ]

    def views() -> list[dict]:
        return [httpx.get(f"{base}/v1/videos/{job_id}").json() for job_id in ids]

    # Ninety seconds of chaos, then the workers left alive must finish every job.
    kills = freezes = 0
    chaos_ends = time.monotonic() + 90
    while time.monotonic() < chaos_ends and not all(view["status"] in TERMINAL for view in views()):
        time.sleep(rng.uniform(4, 8))
        victim = rng.randrange(len(workers))
        if rng.random() < 0.5:
            workers[victim].send_signal(signal.SIGKILL)
            workers[victim].wait()
            workers[victim] = processes.worker(env)
            kills += 1
        else:
            workers[victim].send_signal(signal.SIGSTOP)
            time.sleep(rng.uniform(1, 9))  # sometimes past the 3-beat heartbeat (6 s), sometimes not
            workers[victim].send_signal(signal.SIGCONT)
            freezes += 1
    try:
        wait_for(lambda: all(view["status"] in TERMINAL for view in views()), 420, "every job to end", 2)
    except AssertionError:
        stuck = [view for view in views() if view["status"] not in TERMINAL]
        raise AssertionError(
            f"{kills} kills, {freezes} freezes; not ended: {stuck}\n{processes.logs()}"
        ) from None
    final = views()
    time.sleep(10)  # resumed attempts and webhook retries settle
    lost = [view["id"] for view in final if view["status"] not in TERMINAL]
    succeeded = {view["id"] for view in final if view["status"] == "succeeded"}
    published = hooks.succeeded()
    double = [job_id for job_id, count in published.items() if count > 1]
    # Work re-done after faults, in models/cost.py units: what the workers computed (the counter their
    # progress callbacks keep) beyond what the succeeded jobs cost.
    store = JobStore(redis.Redis.from_url(REDIS_URL), namespace, 3600)
    computed = store.work()
    needed = sum(sum(store.get(job_id)["costs"].values()) for job_id in succeeded)
    redone = computed - needed
    print(
        f"chaos: {kills} kills, {freezes} freezes; {len(succeeded)} succeeded; lost {lost}; double {double}; "
        f"stage outputs {stage_outputs}: computed {computed:.6f} units for {needed:.6f} needed, re-done "
        f"{redone:.6f} ({redone / needed:.1%} of the needed work)"
    )
    assert computed >= 0.95 * needed, "the work counter missed work"  # a killed attempt loses its last 0.5 s
    assert lost == [] and double == []
    assert set(published) == succeeded
    for view in final:
        if view["id"] in succeeded:
            served = httpx.get(f"{base}/v1/videos/{view['id']}/content").content
            assert len(served) == view["result"]["bytes"]
    assert [httpx.get(f"{base}/v1/videos/{i}").json()["finished_at"] for i in ids] == [
        view["finished_at"] for view in final
    ]
    assert all(isinstance(worker, subprocess.Popen) for worker in workers)
