"""A deep queue: positions kept by the job store (exact through cancels, deletes and retries), admission
that reads no job records, and an exception inside a route answered as a 500 with a body."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from rq import Queue

from app.jobs import JobStore
from tests.api.test_api import AUTH, make_client
from tests.conftest import REDIS_URL


def _positions(client: TestClient, job_ids: list[str]) -> list[int | None]:
    return [client.get(f"/v1/videos/{job_id}", headers=AUTH).json()["queue_position"] for job_id in job_ids]


def test_positions_stay_exact_through_cancels_deletes_and_retries(namespace: str, tmp_path: Path) -> None:
    queue = Queue(namespace, connection=redis.Redis.from_url(REDIS_URL))
    with make_client(namespace, tmp_path, max_jobs_in_flight_per_key=100) as client:
        made = [
            client.post("/v1/videos", json={"prompt": f"job {n}"}, headers=AUTH).json()["id"]
            for n in range(12)
        ]
        assert _positions(client, made) == list(range(12))

        # Out of the middle: a cancel on /v1, a delete on the OpenAI face, and the head taken by a worker.
        assert client.delete(f"/v1/videos/{made[3]}", headers=AUTH).status_code == 200
        assert client.delete(f"/openai/v1/videos/{made[7]}", headers=AUTH).status_code == 200
        store: JobStore = client.app.state.services.store
        assert store.claim(made[0], "worker-1")
        queue.remove(made[0])  # as RQ's dequeue takes it off the list
        waiting = [job_id for index, job_id in enumerate(made) if index not in (0, 3, 7)]
        assert _positions(client, waiting) == list(range(len(waiting)))
        assert _positions(client, [made[0], made[3]]) == [None, None]
        assert client.get(f"/v1/videos/{made[7]}", headers=AUTH).status_code == 404  # deleted: gone
        assert queue.get_job_ids() == waiting, "the store's line is RQ's order"

        # A retried attempt goes back to the end of the line, as RQ re-enqueues it.
        assert store.requeue(made[0], "worker lost")
        assert _positions(client, [made[0]]) == [len(waiting)]

        later = client.post("/v1/videos", json={"prompt": "later"}, headers=AUTH).json()
        assert later["queue_position"] == len(waiting) + 1
        page = client.get("/v1/videos", params={"limit": 100}, headers=AUTH).json()["items"]
        listed = {job["id"]: job["queue_position"] for job in page}
        assert [listed[job_id] for job_id in [*waiting, made[0], later["id"]]] == list(
            range(len(waiting) + 2)
        )


def test_admission_counts_without_reading_records_and_the_janitor_heals_leaks(
    namespace: str, tmp_path: Path
) -> None:
    with make_client(namespace, tmp_path, max_jobs_in_flight_per_key=2) as client:
        first, second = (
            client.post("/v1/videos", json={"prompt": f"job {n}"}, headers=AUTH).json()["id"]
            for n in range(2)
        )
        assert client.post("/v1/videos", json={"prompt": "third"}, headers=AUTH).status_code == 429
        store: JobStore = client.app.state.services.store
        store.redis.delete(store.keys.record(first))  # a record gone while active (its TTL ran out)
        assert client.post("/v1/videos", json={"prompt": "third"}, headers=AUTH).status_code == 429
        assert store.heal() == 2  # its in-flight entry and its place in the line
        assert store.queue_positions([first, second]) == [None, 0]
        assert client.post("/v1/videos", json={"prompt": "third"}, headers=AUTH).status_code == 202
        assert store.heal() == 0


def test_an_exception_in_a_route_is_a_500_with_a_body_logged_once(
    namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with make_client(namespace, tmp_path) as client:
        store = client.app.state.services.store

        def broken(*args: object, **kwargs: object) -> None:
            raise RuntimeError("a bug in admission")

        monkeypatch.setattr(store, "admit", broken)
        with caplog.at_level(logging.ERROR, logger="show1.api"):
            answer = client.post("/v1/videos", json={"prompt": "a cat"}, headers=AUTH)
            openai = client.post(
                "/openai/v1/videos", json={"prompt": "a cat", "model": "show-1"}, headers=AUTH
            )
        assert answer.status_code == 500 and answer.json() == {
            "detail": "internal error; the request may be retried"
        }
        assert openai.status_code == 500 and openai.json()["error"]["type"] == "server_error"
        logged = [record for record in caplog.records if "a bug in admission" in str(record.exc_info)]
        assert len(logged) == 2, "each failure logged once"
        metrics = client.get("/metrics").text
        assert 'route="/v1/videos",status="500"' in metrics
