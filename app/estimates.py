"""How long a queued job will wait and run, from the jobs ahead of it and the workers alive.

Every worker announces itself in one Redis hash (models/cost.py's seconds per unit of cost it measured,
per stage, and when it last beat); a worker silent for three heartbeats is gone. A queued job's ETA:
what the running jobs still need (their own ETAs) plus what the jobs ahead of it need, spread over
the workers alive, plus its own expected run. Unknown (None) while no worker is alive, or before any
worker has measured a job.
"""

from __future__ import annotations

import json
import time
from statistics import median
from typing import Any

import redis

from app.jobs import RUNNING, JobStore
from models.cost import stage_costs
from models.params import GenerationParams

# Enough to be useful; a position beyond it is extrapolated from the average of these.
MAX_JOBS_AHEAD_READ = 100
WORKER_SILENT_BEATS = 3


def announce_worker(store: JobStore, name: str, seconds_per_unit: dict[str, float]) -> None:
    """A worker's heartbeat entry; called by the worker every heartbeat."""
    entry = {"seen": time.time(), "seconds_per_unit": seconds_per_unit}
    store.redis.hset(store.keys.workers(), name, json.dumps(entry))


def live_worker_rates(store: JobStore, heartbeat_seconds: float) -> list[dict[str, float]]:
    """Seconds per unit of cost, per stage, of each worker alive (dead entries are pruned)."""
    now, rates, gone = time.time(), [], []
    for name, raw in store.redis.hgetall(store.keys.workers()).items():
        entry = json.loads(raw)
        if now - entry["seen"] > WORKER_SILENT_BEATS * heartbeat_seconds:
            gone.append(name)
        else:
            rates.append(entry["seconds_per_unit"])
    if gone:
        store.redis.hdel(store.keys.workers(), *gone)
    return rates


def expected_seconds(params: dict[str, Any], rates: list[dict[str, float]]) -> float | None:
    """A whole run of `params` at the median measured pace of the workers (None before any measured)."""
    measured = [rate for rate in rates if rate]
    if not measured:
        return None
    costs = stage_costs(GenerationParams.from_dict(params))
    total = 0.0
    for stage, cost in costs.items():
        paces = [rate[stage] for rate in measured if stage in rate]
        # A stage no worker has timed yet: the slowest pace any stage has shown, to err long.
        pace = median(paces) if paces else max(max(rate.values()) for rate in measured)
        total += cost * pace
    return total


def queued_eta(
    store: JobStore, queue_ids: list[str], record_params: dict[str, Any], heartbeat_seconds: float
) -> float | None:
    """Seconds until a queued job (whose queue predecessors are `queue_ids`) has its video."""
    try:
        rates = live_worker_rates(store, heartbeat_seconds)
        own = expected_seconds(record_params, rates)
        if own is None:
            return None
        ahead = queue_ids[:MAX_JOBS_AHEAD_READ]
        pipe = store.redis.pipeline()
        for job_id in ahead:
            pipe.hget(store.keys.record(job_id), "params")
        for job_id in store.active_ids(RUNNING):
            pipe.hget(store.keys.record(job_id), "eta_seconds")
        values = pipe.execute()
    except (redis.RedisError, ValueError, TypeError):
        return None
    waiting = [expected_seconds(json.loads(raw), rates) or own for raw in values[: len(ahead)] if raw]
    if len(queue_ids) > len(ahead) and waiting:
        waiting += [sum(waiting) / len(waiting)] * (len(queue_ids) - len(ahead))
    running = [json.loads(raw) or 0.0 for raw in values[len(ahead) :] if raw]
    return round((sum(waiting) + sum(running)) / len(rates) + own, 1)
