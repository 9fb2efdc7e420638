"""The job store's rules on a real Redis: a requested cancel beats publishing, events for every write."""

from __future__ import annotations

import json

import redis

from app.jobs import CANCELED, RUNNING, SUCCEEDED, JobStore


def test_a_cancel_requested_before_publishing_wins(redis_connection: redis.Redis, namespace: str) -> None:
    store = JobStore(redis_connection, namespace, 3600)
    job = store.create("owner", {"params": {}})
    assert store.claim(job.id, "worker-1")
    assert store.request_cancel(job.id)  # e.g. DELETE while the video is being encoded
    assert not store.finish(job.id, SUCCEEDED, {"result": {"bytes": 1}})
    record = store.get(job.id)
    assert record.status == RUNNING and record["result"] is None
    assert store.finish(job.id, CANCELED)
    assert store.get(job.id).status == CANCELED


def test_without_a_cancel_the_video_is_published(redis_connection: redis.Redis, namespace: str) -> None:
    store = JobStore(redis_connection, namespace, 3600)
    job = store.create("owner", {"params": {}})
    assert store.claim(job.id, "worker-1")
    assert store.finish(job.id, SUCCEEDED, {"result": {"bytes": 1}})
    assert not store.request_cancel(job.id), "after publishing, a cancel is refused (the API answers 409)"


def test_every_write_is_an_event(redis_connection: redis.Redis, namespace: str) -> None:
    store = JobStore(redis_connection, namespace, 3600)
    job = store.create("owner", {"params": {}})
    store.claim(job.id, "worker-1", eta_seconds=12.0)
    store.update_running(job.id, {"stage": "keyframes", "progress": 0.3})
    store.update_running(job.id, {"progress": 0.2})  # a lower estimate: the stored value stays
    store.update_running(job.id, {"preview_url": "/v1/videos/x/preview"})
    store.finish(job.id, SUCCEEDED)
    entries = redis_connection.xrange(store.keys.events(job.id))
    events = [(fields[b"event"].decode(), json.loads(fields[b"data"])) for _, fields in entries]
    assert [name for name, _ in events] == ["status", "progress", "progress", "preview", "status"]
    assert events[0][1]["status"] == RUNNING and events[0][1]["eta_seconds"] == 12.0
    assert events[2][1]["progress"] == 0.3
    assert events[-1][1]["status"] == SUCCEEDED and events[-1][1]["progress"] == 1.0


class CountingRedis(redis.Redis):
    """Counts round trips: one per command, one per pipeline."""

    round_trips = 0

    def execute_command(self, *args: object, **options: object) -> object:
        CountingRedis.round_trips += 1
        return super().execute_command(*args, **options)

    def pipeline(self, transaction: bool = True, shard_hint: object = None) -> redis.client.Pipeline:
        CountingRedis.round_trips += 1
        return super().pipeline(transaction, shard_hint)


def test_a_filtered_page_of_a_long_history_reads_only_the_page(namespace: str) -> None:
    from tests.conftest import REDIS_URL

    connection = CountingRedis.from_url(REDIS_URL)
    store = JobStore(connection, namespace, 3600)
    ids = [store.create("busy", {"params": {}}).id for _ in range(20_000)]
    for job_id in ids[::400]:  # 50 of them fail
        store.fail(job_id, "internal_error", "x")
    CountingRedis.round_trips = 0
    page, cursor = store.list_for_owner("busy", status="failed", offset=0, limit=20)
    assert len(page) == 20 and all(record.status == "failed" for record in page)
    assert [record.id for record in page] == ids[::400][::-1][:20]  # newest first
    assert CountingRedis.round_trips <= 3
    rest, end = store.list_for_owner("busy", status="failed", offset=cursor, limit=100)
    assert len(rest) == 30 and end is None
