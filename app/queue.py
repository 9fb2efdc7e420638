"""The RQ queue between the API and the GPU workers."""

from __future__ import annotations

import contextlib
import secrets
from typing import Any

import redis
from rq import Queue, Retry
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job

from app.jobs import JobStore
from app.settings import Settings

# The job function, by import path: the API process never imports torch or the worker.
GENERATE_VIDEO = "worker.jobs.generate_video"
ON_FAILURE = "worker.jobs.on_job_failure"


def video_queue(connection: redis.Redis, settings: Settings) -> Queue:
    return Queue(settings.queue_name, connection=connection)


def enqueue_video(queue: Queue, store: JobStore, job_id: str, settings: Settings) -> Job:
    """One RQ job per video, with the video's id; crashes and storage faults are retried. The queue
    entry and the job's ticket in the store's waiting line are one transaction."""
    with queue.connection.pipeline() as pipe:
        job = queue.enqueue(GENERATE_VIDEO, job_id, job_id=job_id, pipeline=pipe, **_options(settings))
        store.take_ticket(job_id, pipe)
        pipe.execute()
    return job


def hand_over(queue: Queue, job_id: str, settings: Settings) -> Job:
    """A queued video back at the head of the queue, for another worker (one that can hold it): a new
    queue entry under a fresh id, as the entry this worker took is still its running RQ job. The
    video keeps its ticket (and place) in the waiting line; a cancel reaches it through its record."""
    entry = f"{job_id}-handover-{secrets.token_hex(4)}"
    return queue.enqueue(GENERATE_VIDEO, job_id, job_id=entry, at_front=True, **_options(settings))


def _options(settings: Settings) -> dict[str, Any]:
    from rq import Callback

    return {
        "job_timeout": settings.job_timeout_seconds,
        "retry": Retry(max=settings.job_retries) if settings.job_retries else None,
        "result_ttl": 3600,
        "failure_ttl": settings.job_record_ttl_seconds,
        "on_failure": Callback(ON_FAILURE),
    }


def remove_queued(queue: Queue, job_id: str) -> bool:
    """Take a job out of the queue before a worker gets it; False if it already left the queue."""
    removed = queue.connection.lrem(queue.key, 0, job_id)
    if removed:
        with contextlib.suppress(NoSuchJobError, InvalidJobOperation):
            Job.fetch(job_id, connection=queue.connection).cancel()
    return bool(removed)
