"""Benchmark of the API at queue depth (not a test): does a request cost the same at 10,000 queued?

    python bench/deep_queue.py --depth 10000

Starts one uvicorn process (real Redis, a fresh key prefix, no worker, so every job stays queued) and
measures, at depth 10 and again at `--depth`, on one API key:
- POST /v1/videos (admission with the key's whole queue in flight);
- GET /v1/videos/{id} of the job at the end of the queue (its position and ETA);
- GET /v1/videos?limit=100 (the key's newest 100 jobs, each queued one with its position and ETA;
  at depth 10 the page is 10 queued and 90 canceled jobs);
then 64 POSTs at once from that key and counts what was not a 202. A worker's heartbeat entry is
announced (with a pace per stage) so the ETAs are computed as with a live worker. Prints p50/p99 and
the ratio deep : shallow; everything written to Redis is deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from load_api import delete_prefix, percentiles, start_api  # noqa: E402 - this folder is on the path

from app.estimates import announce_worker  # noqa: E402
from app.jobs import JobStore  # noqa: E402
from models.params import STAGES  # noqa: E402

HEADERS = {"Authorization": "Bearer bench-key"}
BODY = {"prompt": "a fox running through snow"}


def submit(base: str, count: int, concurrency: int) -> tuple[list[str], list[int]]:
    """`count` POSTs, `concurrency` at a time; the ids made and the status of every answer."""

    async def run() -> tuple[list[str], list[int]]:
        ids, codes = [], []
        limit = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(base_url=base, headers=HEADERS, timeout=60) as http:

            async def one() -> None:
                async with limit:
                    try:
                        answer = await http.post("/v1/videos", json=BODY)
                    except httpx.HTTPError:
                        codes.append(0)  # a dropped connection
                        return
                    codes.append(answer.status_code)
                    if answer.status_code == 202:
                        ids.append(answer.json()["id"])

            await asyncio.gather(*(one() for _ in range(count)))
        return ids, codes

    return asyncio.run(run())


def timed(http: httpx.Client, method: str, url: str, repeats: int, **kwargs: object) -> list[float]:
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        answer = http.request(method, url, **kwargs)
        seconds.append(time.perf_counter() - started)
        assert answer.status_code in (200, 202), answer.text
    return seconds


def measure(base: str, repeats: int, tail_id: str) -> dict[str, list[float]]:
    with httpx.Client(base_url=base, headers=HEADERS, timeout=60) as http:
        return {
            "POST /v1/videos": timed(http, "POST", "/v1/videos", repeats, json=BODY),
            "GET /v1/videos/{id}": timed(http, "GET", f"/v1/videos/{tail_id}", repeats),
            "GET /v1/videos?limit=100": timed(http, "GET", "/v1/videos", repeats, params={"limit": 100}),
        }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--depth", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()

    prefix = f"deep{uuid.uuid4().hex[:8]}"
    api, base = start_api(args.redis_url, prefix, SHOW1_API_KEYS="bench-key")
    connection = redis.Redis.from_url(args.redis_url)
    store = JobStore(connection, prefix, 3600)

    def depth() -> int:  # RQ's list: the same measure for any version of the service
        return connection.llen(f"rq:queue:{prefix}")

    beating = threading.Event()

    def beat() -> None:  # a live worker's entry, as worker/rq_worker.py announces it every heartbeat
        while not beating.wait(1.0):
            announce_worker(store, "bench-worker", dict.fromkeys(STAGES, 0.5))

    threading.Thread(target=beat, daemon=True).start()
    made: list[str] = []
    try:
        # Shallow: 90 canceled jobs (so the page has 100 items) and 10 queued.
        canceled, _ = submit(base, 90, 16)
        for job_id in canceled:
            httpx.delete(f"{base}/v1/videos/{job_id}", headers=HEADERS, timeout=10)
        queued, _ = submit(base, 10, 16)
        made += canceled + queued
        shallow_depth = depth()
        shallow = measure(base, args.repeats, queued[-1])

        started = time.monotonic()
        filled, codes = submit(base, args.depth - depth(), 16)
        fill_seconds = time.monotonic() - started
        made += filled
        deep_depth = depth()
        deep = measure(base, args.repeats, filled[-1])
        burst_ids, burst = submit(base, 64, 64)
        made += burst_ids

        print(
            f"one uvicorn process, one key, no worker; filled to {deep_depth} queued in {fill_seconds:.0f} s"
        )
        print(f"(fill errors: {len([code for code in codes if code != 202])})")
        print(
            f"{'request':<28}{f'depth {shallow_depth} p50/p99 ms':>22}{f'depth {deep_depth} p50/p99 ms':>26}"
            f"{'ratio p50':>11}"
        )
        for name in shallow:
            low, high = percentiles(shallow[name]), percentiles(deep[name])
            print(
                f"{name:<28}{low[0]:>12.1f} /{low[1]:>7.1f}{high[0]:>16.1f} /{high[1]:>7.1f}"
                f"{high[0] / low[0]:>11.2f}"
            )
        errors = {code: burst.count(code) for code in sorted(set(burst)) if code != 202}
        print(
            f"64 POSTs at once from one key at depth {deep_depth}: {burst.count(202)} x 202, others {errors}"
        )
    finally:
        beating.set()
        api.terminate()
        api.wait()
        delete_prefix(args.redis_url, prefix, made)


if __name__ == "__main__":
    main()
