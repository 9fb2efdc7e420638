"""Admission by memory, with a real worker that announces a small memory: a job it could not hold is
refused with a 422 naming the field that grows memory most; with no worker known, such a job is queued
and the worker that takes it fails it with a clear error instead of running out of memory."""

from __future__ import annotations

from pathlib import Path

import httpx
import redis
from rq import Queue

from app.jobs import JobStore
from app.memory import GB, live_workers
from tests.api.test_api import AUTH
from tests.conftest import FAST_REQUEST, REDIS_URL, Processes, service_env, wait_for

# Far beyond a 1 GB CPU worker with the tiny preset: about 4 GB in the latent stage (bench/memory.py).
LARGE = {**FAST_REQUEST, "output_size": {"height": 720, "width": 1280}, "num_keyframes": 9}


def _job(base: str, job_id: str) -> dict:
    return httpx.get(f"{base}/v1/videos/{job_id}", headers=AUTH).json()


def test_a_job_no_worker_can_hold_is_refused_or_failed_never_run(
    processes: Processes, namespace: str, tiny_preset: Path, tmp_path: Path
) -> None:
    env = service_env(namespace, tiny_preset, tmp_path, SHOW1_WORKER_MEMORY_GB="1.2")
    base = processes.api(env)
    queue = Queue(namespace, connection=redis.Redis.from_url(REDIS_URL))

    # No worker has ever announced itself: nothing to estimate with, so the job is queued ...
    early = httpx.post(f"{base}/v1/videos", json={"prompt": "too large", **LARGE}, headers=AUTH)
    assert early.status_code == 202, early.text
    processes.worker(env)
    # ... and the worker that takes it fails it at once, naming the memory, rather than running it.
    failed = wait_for(
        lambda: (job := _job(base, early.json()["id"]))["status"] == "failed" and job, 120, "the job to fail"
    )
    assert failed["error"]["code"] == "insufficient_memory"
    assert "GB" in failed["error"]["message"] and "output_size grows it most" in failed["error"]["message"]
    assert failed["started_at"] is None, "the worker never started it"

    store = JobStore(redis.Redis.from_url(REDIS_URL), namespace, 3600)
    (worker,) = live_workers(store, heartbeat_seconds=2)
    assert 0 < worker.budget_bytes < 1.2 * GB

    # Now a worker is alive: the same request is refused before anything is queued.
    queued_before = queue.count
    refused = httpx.post(f"{base}/v1/videos", json={"prompt": "too large", **LARGE}, headers=AUTH)
    assert refused.status_code == 422, refused.text
    (detail,) = refused.json()["detail"]
    assert detail["loc"] == ["body", "output_size"]
    assert "GB of memory" in detail["msg"] and "largest worker can hold" in detail["msg"]
    assert queue.count == queued_before

    # Large keyframes at a small output grow the pixel stages instead; the field named follows.
    large_keyframes = {**FAST_REQUEST, "keyframe_size": {"height": 64, "width": 112}}
    refused = httpx.post(
        f"{base}/v1/videos", json={"prompt": "large keyframes", **large_keyframes}, headers=AUTH
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"][0]["loc"] == ["body", "keyframe_size"]

    # What it can hold runs.
    small = httpx.post(f"{base}/v1/videos", json={"prompt": "fits", **FAST_REQUEST}, headers=AUTH)
    assert small.status_code == 202, small.text
    done = wait_for(
        lambda: (job := _job(base, small.json()["id"]))["status"] in ("succeeded", "failed") and job,
        120,
        "the small job to end",
    )
    assert done["status"] == "succeeded", done


def test_with_no_worker_alive_the_last_one_announced_and_the_budget_decide(
    processes: Processes, namespace: str, tiny_preset: Path, tmp_path: Path
) -> None:
    """The last worker's announcement outlives it: with none alive, admission estimates with it,
    against SHOW1_MEMORY_BUDGET_GB when set."""
    env = service_env(namespace, tiny_preset, tmp_path, SHOW1_WORKER_MEMORY_GB="1.2")
    worker = processes.worker(env)
    store = JobStore(redis.Redis.from_url(REDIS_URL), namespace, 3600)
    wait_for(lambda: live_workers(store, heartbeat_seconds=2), 120, "the worker to announce itself")
    worker.terminate()
    worker.wait(30)
    store.redis.delete(store.keys.workers())  # gone, as the ETA registry prunes silent workers

    base = processes.api(env)
    refused = httpx.post(f"{base}/v1/videos", json={"prompt": "too large", **LARGE}, headers=AUTH)
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", "output_size"]
    roomy = processes.api({**env, "SHOW1_MEMORY_BUDGET_GB": "64"})
    accepted = httpx.post(f"{roomy}/v1/videos", json={"prompt": "fits 64 GB", **LARGE}, headers=AUTH)
    assert accepted.status_code == 202, accepted.text
