"""Load benchmark of the API (not a test): submissions and status polls against a running uvicorn.

    python bench/load_api.py --seconds 20 --clients 16

Starts the API (real Redis, local storage, an isolated key prefix, no worker: jobs stay queued), then
runs concurrent clients on loopback for a bounded time and prints p50/p99 latency and requests/s per
route. Everything it wrote to Redis is deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import redis

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def client(base: str, deadline: float, latencies: dict[str, list[float]], job_ids: list[str]) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            response = await http.post("/v1/videos", json={"prompt": "a fox running through snow"})
            latencies["POST /v1/videos"].append(time.perf_counter() - started)
            assert response.status_code == 202, response.text
            job_ids.append(response.json()["id"])
            for _ in range(4):  # clients poll more often than they submit
                started = time.perf_counter()
                response = await http.get(f"/v1/videos/{job_ids[-1]}")
                latencies["GET /v1/videos/{id}"].append(time.perf_counter() - started)
                assert response.status_code == 200


def start_api(redis_url: str, prefix: str, **settings: str) -> tuple[subprocess.Popen, str]:
    """One uvicorn process over a fresh key prefix, no worker (jobs stay queued); returns it and its URL."""
    port = free_port()
    env = {
        **os.environ,
        "SHOW1_REDIS_URL": redis_url,
        "SHOW1_KEY_PREFIX": prefix,
        "SHOW1_QUEUE_NAME": prefix,
        "SHOW1_LOCAL_STORAGE_DIR": tempfile.mkdtemp(),
        "SHOW1_RATE_LIMIT_PER_MINUTE": "100000000",
        "SHOW1_MAX_JOBS_IN_FLIGHT_PER_KEY": "100000000",
        "SHOW1_LOG_LEVEL": "WARNING",
        **settings,
    }
    command = [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--port", str(port)]
    api = subprocess.Popen([*command, "--log-level", "warning", "--no-access-log"], cwd=REPO, env=env)
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            if httpx.get(f"{base}/healthz").status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    return api, base


def delete_prefix(redis_url: str, prefix: str, job_ids: list[str]) -> None:
    """Everything the API wrote under `prefix` (its keys carry the prefix as a hash tag) and RQ's."""
    connection = redis.Redis.from_url(redis_url)
    keys = [*connection.scan_iter(match=f"{{{prefix}}}:*"), *connection.scan_iter(match=f"rq:*{prefix}*")]
    keys += [f"rq:job:{job_id}" for job_id in job_ids]
    for start in range(0, len(keys), 1000):
        connection.delete(*keys[start : start + 1000])


def percentiles(values: list[float]) -> tuple[float, float]:
    """(p50, p99) in milliseconds."""
    ordered = sorted(values)
    return statistics.median(ordered) * 1000, ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()

    prefix = f"load{uuid.uuid4().hex[:8]}"
    api, base = start_api(args.redis_url, prefix)
    job_ids: list[str] = []
    try:
        latencies: dict[str, list[float]] = {"POST /v1/videos": [], "GET /v1/videos/{id}": []}
        deadline = time.monotonic() + args.seconds
        started = time.monotonic()

        async def run_all() -> None:
            await asyncio.gather(*(client(base, deadline, latencies, job_ids) for _ in range(args.clients)))

        asyncio.run(run_all())
        elapsed = time.monotonic() - started
        print(f"{args.clients} clients for {elapsed:.1f}s against one uvicorn process on {base}")
        print(f"{'route':<24}{'requests':>10}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
        for route, values in latencies.items():
            p50, p99 = percentiles(values)
            print(f"{route:<24}{len(values):>10}{len(values) / elapsed:>10.1f}{p50:>10.1f}{p99:>10.1f}")
        total = sum(len(values) for values in latencies.values())
        print(f"{'all':<24}{total:>10}{total / elapsed:>10.1f}")
    finally:
        api.terminate()
        api.wait()
        delete_prefix(args.redis_url, prefix, job_ids)


if __name__ == "__main__":
    main()
