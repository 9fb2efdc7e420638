"""Admission that holds: the in-flight limit under concurrent submissions, and a failure after
admission that leaves nothing behind."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import redis
from rq import Queue

from app.actions import settle_pending_admissions
from app.jobs import JobStore
from tests.api.test_api import AUTH, make_client
from tests.conftest import FAST_REQUEST, REDIS_URL, Processes, service_env


def test_concurrent_submissions_hold_the_in_flight_limit_exactly(
    processes: Processes, namespace: str, tiny_preset: Path, tmp_path: Path
) -> None:
    env = service_env(
        namespace, tiny_preset, tmp_path, SHOW1_API_KEYS="key-a,key-b", SHOW1_MAX_JOBS_IN_FLIGHT_PER_KEY="4"
    )
    base = processes.api(env)

    def post(index: int) -> tuple[str, int, str | None]:
        key = "key-a" if index % 2 else "key-b"
        answer = httpx.post(
            f"{base}/v1/videos",
            json={"prompt": f"job {index}", **FAST_REQUEST},
            headers={"Authorization": f"Bearer {key}"},
            timeout=60,
        )
        return key, answer.status_code, answer.json().get("id")

    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(post, range(200)))
    for key in ("key-a", "key-b"):
        codes = [code for owner, code, _ in results if owner == key]
        assert codes.count(202) == 4 and codes.count(429) == 96, (key, sorted(set(codes)))
        listed = httpx.get(f"{base}/v1/videos", headers={"Authorization": f"Bearer {key}"}).json()["items"]
        assert len(listed) == 4
    accepted = [job_id for _, code, job_id in results if code == 202]
    assert len(set(accepted)) == 8, "a job id was handed out twice"
    queued = Queue(namespace, connection=redis.Redis.from_url(REDIS_URL)).get_job_ids()
    assert sorted(queued) == sorted(accepted), "every accepted job is queued once, and nothing else"


def test_a_busy_key_with_a_high_limit_gets_no_errors_and_exact_positions(
    processes: Processes, namespace: str, tiny_preset: Path, tmp_path: Path
) -> None:
    """Customers submitting in parallel on one key: every POST is a 202 (no 500, no dropped
    connection), and the positions the API gives are RQ's order, exactly."""
    env = service_env(namespace, tiny_preset, tmp_path, SHOW1_MAX_JOBS_IN_FLIGHT_PER_KEY="10000")
    base = processes.api(env)

    def post(index: int) -> tuple[int, str]:
        answer = httpx.post(f"{base}/v1/videos", json={"prompt": f"job {index}"}, headers=AUTH, timeout=60)
        return answer.status_code, answer.text

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(post, range(300)))
    assert [code for code, _ in results] == [202] * 300, sorted(
        {text for code, text in results if code != 202}
    )
    queued = Queue(namespace, connection=redis.Redis.from_url(REDIS_URL)).get_job_ids()
    assert len(queued) == 300
    positions = {}
    cursor = None
    while True:
        params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        page = httpx.get(f"{base}/v1/videos", params=params, headers=AUTH, timeout=10).json()
        positions.update({job["id"]: job["queue_position"] for job in page["items"]})
        if not (cursor := page["next_cursor"]):
            break
    assert [positions[job_id] for job_id in queued] == list(range(300))


def test_a_failed_enqueue_leaves_nothing_behind(namespace: str, tmp_path: Path) -> None:
    connection = redis.Redis.from_url(REDIS_URL)
    queue_key = f"rq:queue:{namespace}"
    with make_client(namespace, tmp_path, max_jobs_in_flight_per_key=1) as client:
        connection.set(queue_key, "not a list")  # the queue's RPUSH now fails inside Redis
        body = {"prompt": "a cat"}
        headers = {**AUTH, "Idempotency-Key": "order-1"}
        failed = client.post("/v1/videos", json=body, headers=headers)
        assert failed.status_code == 503, failed.text
        assert client.get("/v1/videos", headers=AUTH).json()["items"] == []
        store = JobStore(connection, namespace, 3600)
        assert store.pending_since(time.time()) == []
        connection.delete(queue_key)
        # The same request again, same key: accepted, even with an in-flight limit of 1.
        retried = client.post("/v1/videos", json=body, headers=headers)
        assert retried.status_code == 202
        assert client.post("/v1/videos", json=body, headers=headers).json()["id"] == retried.json()["id"]


def test_an_admission_left_pending_by_a_dead_api_is_settled(
    redis_connection: redis.Redis, namespace: str
) -> None:
    store = JobStore(redis_connection, namespace, 3600)
    queue = Queue(namespace, connection=redis_connection)
    # Admitted, then the API process died before queueing it: the client never got its 202.
    lost = store.admit("owner", {"params": {}, "idempotency_slot": None}, max_in_flight=1).record
    redis_connection.zadd(store.keys.pending_admissions(), {lost.id: time.time() - 120})
    assert store.admit("owner", {"params": {}}, max_in_flight=1).outcome == "limit"
    assert settle_pending_admissions(store, queue) == 1
    assert store.get(lost.id) is None and store.count_in_flight("owner") == 0
    assert store.admit("owner", {"params": {}}, max_in_flight=1).outcome == "created"
