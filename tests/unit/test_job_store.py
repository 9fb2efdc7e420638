"""The job store's rules on a real Redis: a requested cancel beats publishing, events for every write."""

from __future__ import annotations

import json

import redis

from app.jobs import CANCELED, RUNNING, SUCCEEDED, JobStore


def test_a_cancel_requested_before_publishing_wins(redis_connection: redis.Redis, namespace: str) -> None:
    store = JobStore(redis_connection, namespace, 3600)
    job = store.create("owner", {"params": {}})
    assert store.mark_running(job.id, "worker-1")
    assert store.request_cancel(job.id)  # e.g. DELETE while the video is being encoded
    assert not store.finish(job.id, SUCCEEDED, {"result": {"bytes": 1}})
    record = store.get(job.id)
    assert record.status == RUNNING and record["result"] is None
    assert store.finish(job.id, CANCELED)
    assert store.get(job.id).status == CANCELED


def test_without_a_cancel_the_video_is_published(redis_connection: redis.Redis, namespace: str) -> None:
    store = JobStore(redis_connection, namespace, 3600)
    job = store.create("owner", {"params": {}})
    assert store.mark_running(job.id, "worker-1")
    assert store.finish(job.id, SUCCEEDED, {"result": {"bytes": 1}})
    assert not store.request_cancel(job.id), "after publishing, a cancel is refused (the API answers 409)"


def test_every_write_is_an_event(redis_connection: redis.Redis, namespace: str) -> None:
    store = JobStore(redis_connection, namespace, 3600)
    job = store.create("owner", {"params": {}})
    store.mark_running(job.id, "worker-1", eta_seconds=12.0)
    store.update_running(job.id, {"stage": "keyframes", "progress": 0.3})
    store.update_running(job.id, {"progress": 0.2})  # a lower estimate: the stored value stays
    store.update_running(job.id, {"preview_url": "/v1/videos/x/preview"})
    store.finish(job.id, SUCCEEDED)
    entries = redis_connection.xrange(store.events_key(job.id))
    events = [(fields[b"event"].decode(), json.loads(fields[b"data"])) for _, fields in entries]
    assert [name for name, _ in events] == ["status", "progress", "progress", "preview", "status"]
    assert events[0][1]["status"] == RUNNING and events[0][1]["eta_seconds"] == 12.0
    assert events[2][1]["progress"] == 0.3
    assert events[-1][1]["status"] == SUCCEEDED and events[-1][1]["progress"] == 1.0
