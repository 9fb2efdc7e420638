"""The RQ queue between the API and the GPU workers."""

from __future__ import annotations

import contextlib

import redis
from rq import Queue, Retry
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job

from app.settings import Settings

# The job function, by import path: the API process never imports torch or the worker.
GENERATE_VIDEO = "worker.jobs.generate_video"
ON_FAILURE = "worker.jobs.on_job_failure"


def video_queue(connection: redis.Redis, settings: Settings) -> Queue:
    return Queue(settings.queue_name, connection=connection)


def enqueue_video(queue: Queue, job_id: str, settings: Settings) -> Job:
    """One RQ job per video, with the video's id; crashes and storage faults are retried."""
    from rq import Callback

    return queue.enqueue(
        GENERATE_VIDEO,
        job_id,
        job_id=job_id,
        job_timeout=settings.job_timeout_seconds,
        retry=Retry(max=settings.job_retries) if settings.job_retries else None,
        result_ttl=3600,
        failure_ttl=settings.job_record_ttl_seconds,
        on_failure=Callback(ON_FAILURE),
    )


def queue_position(queue: Queue, job_id: str) -> int | None:
    """0-based position while waiting; None once a worker took it."""
    return queue.get_job_position(job_id)


def remove_queued(queue: Queue, job_id: str) -> bool:
    """Take a job out of the queue before a worker gets it; False if it already left the queue."""
    removed = queue.connection.lrem(queue.key, 0, job_id)
    if removed:
        with contextlib.suppress(NoSuchJobError, InvalidJobOperation):
            Job.fetch(job_id, connection=queue.connection).cancel()
    return bool(removed)
