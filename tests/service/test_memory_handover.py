"""A worker that takes a job it cannot hold never claims it: it hands it to the head of the queue when a
live worker can hold it, and fails it, naming the memory, when none can (worker/jobs.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import redis
import torch
from rq import Queue

from app.estimates import announce_worker
from app.jobs import QUEUED, JobStore
from app.memory import GB, WorkerMemory
from app.queue import enqueue_video
from app.settings import Settings
from models.memory import DEFAULT_WORKING_BYTES, default_pairs_per_batch, profile_of
from models.params import GenerationParams
from models.stage_outputs import stages_through
from tests.conftest import REDIS_URL
from worker import runtime
from worker.jobs import _unless_it_fits


@pytest.fixture
def small_worker(namespace: str, tiny_preset: Path, tmp_path: Path):  # noqa: ANN201
    from models.loading import load_models

    models = load_models(tiny_preset, torch.float32)
    profile = profile_of(
        models,
        element_size=4,
        device_type="cpu",
        working_bytes=DEFAULT_WORKING_BYTES,
        interpolation_pairs_per_batch=default_pairs_per_batch("cpu", "resident"),
    )
    settings = Settings(
        redis_url=REDIS_URL,
        key_prefix=namespace,
        queue_name=namespace,
        heartbeat_seconds=2,
        local_storage_dir=tmp_path / "storage",
    )
    connection = redis.Redis.from_url(REDIS_URL)
    store = JobStore(connection, namespace, 3600)
    memory = WorkerMemory(int(0.5 * GB), "resident", profile)
    previous = runtime._runtime
    runtime.install(
        runtime.WorkerRuntime(
            settings=settings,
            redis=connection,
            store=store,
            storage=None,
            webhooks=None,  # type: ignore[arg-type]
            cascade=None,
            name="small",
            memory=memory,
        )
    )
    yield store, memory
    runtime._runtime = previous


def _queued_job(store: JobStore, params: GenerationParams) -> str:
    admission = store.admit("owner", {"params": params.to_dict(), "costs": {}}, max_in_flight=10)
    job_id = admission.record.id
    store.confirm(job_id)
    return job_id


LARGE = GenerationParams(prompt="large", seed=1, keyframe_size=(64, 112), output_size=(720, 1280))
STAGES = stages_through("latent_sr")


def test_a_job_too_large_for_this_worker_goes_to_one_that_can_hold_it(small_worker, namespace: str):  # noqa: ANN001
    store, small = small_worker
    settings = runtime.current().settings
    queue = Queue(namespace, connection=store.redis)
    job_id = _queued_job(store, LARGE)
    enqueue_video(queue, store, job_id, settings)
    queue.connection.lpop(queue.key)  # as the small worker's dequeue did
    roomy = dataclasses.replace(small, budget_bytes=64 * GB)
    assert not small.holds(LARGE, STAGES) and roomy.holds(LARGE, STAGES)
    announce_worker(store, "roomy", {}, roomy.to_dict())

    assert _unless_it_fits(job_id, LARGE, STAGES) == QUEUED
    record = store.get(job_id)
    assert record.status == QUEUED and int(record["attempts"] or 0) == 0, "never claimed"
    head = queue.get_job_ids()[0]
    assert head.startswith(f"{job_id}-handover-") and queue.fetch_job(head).args == (job_id,)


def test_a_job_no_live_worker_can_hold_fails_naming_the_memory(small_worker):  # noqa: ANN001
    store, _ = small_worker
    job_id = _queued_job(store, LARGE)
    assert _unless_it_fits(job_id, LARGE, STAGES) == "failed"
    error = store.get(job_id)["error"]
    assert error["code"] == "insufficient_memory"
    assert "0.50 GB the largest worker can hold" in error["message"]
    # What it can hold, it keeps.
    small_job = GenerationParams(prompt="small", seed=1, keyframe_size=(16, 24), output_size=(64, 112))
    assert _unless_it_fits(_queued_job(store, small_job), small_job, STAGES) is None
