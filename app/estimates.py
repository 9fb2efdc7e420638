"""How long a queued job will wait and run, from the jobs ahead of it and the workers alive.

Every worker announces itself in one Redis hash (models/cost.py's seconds per unit of cost it measured,
per stage, and when it last beat); a worker silent for three heartbeats is gone. A queued job's ETA:
what the running jobs still need (their own ETAs) plus what the jobs ahead of it need, spread over
the workers alive, plus its own expected run. Unknown (None) while no worker is alive, or before any
worker has measured a job.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from statistics import median
from typing import Any

import redis

from app.jobs import QUEUED, RUNNING, JobRecord, JobStore
from models.cost import stage_costs
from models.params import GenerationParams

# Enough to be useful; a position beyond it is extrapolated from the average of these.
MAX_JOBS_AHEAD_READ = 100
WORKER_SILENT_BEATS = 3


def announce_worker(
    store: JobStore, name: str, seconds_per_unit: dict[str, float], memory: dict[str, Any] | None = None
) -> None:
    """A worker's heartbeat entry, called every heartbeat: its pace and what it may hold (app/memory.py)."""
    entry = {"seen": time.time(), "seconds_per_unit": seconds_per_unit, "memory": memory}
    store.redis.hset(store.keys.workers(), name, json.dumps(entry))


def live_worker_entries(store: JobStore, heartbeat_seconds: float) -> list[dict[str, Any]]:
    """The heartbeat entry of each worker alive (dead entries are pruned)."""
    now, alive, gone = time.time(), [], []
    for name, raw in store.redis.hgetall(store.keys.workers()).items():
        entry = json.loads(raw)
        if now - entry["seen"] > WORKER_SILENT_BEATS * heartbeat_seconds:
            gone.append(name)
        else:
            alive.append(entry)
    if gone:
        store.redis.hdel(store.keys.workers(), *gone)
    return alive


def live_worker_rates(store: JobStore, heartbeat_seconds: float) -> list[dict[str, float]]:
    """Seconds per unit of cost, per stage, of each worker alive."""
    return [entry["seconds_per_unit"] for entry in live_worker_entries(store, heartbeat_seconds)]


def job_costs(costs: dict[str, float] | None, params: dict[str, Any]) -> dict[str, float]:
    """A job's cost per stage: as admission stored it in the record (the stages the job runs), or for
    a record from before that, from its parameters."""
    return costs if costs is not None else stage_costs(GenerationParams.from_dict(params))


def expected_seconds(costs: dict[str, float], rates: list[dict[str, float]]) -> float | None:
    """A run of these stage costs at the median measured pace of the workers (None before any measured)."""
    measured = [rate for rate in rates if rate]
    if not measured:
        return None
    total = 0.0
    for stage, cost in costs.items():
        paces = [rate[stage] for rate in measured if stage in rate]
        # A stage no worker has timed yet: the slowest pace any stage has shown, to err long.
        pace = median(paces) if paces else max(max(rate.values()) for rate in measured)
        total += cost * pace
    return total


@dataclass(frozen=True)
class QueuePlace:
    """Where a queued job stands: its 0-based position and the seconds until its video (None when
    unknown). None for a job no longer in the queue."""

    position: int
    eta_seconds: float | None


def queue_places(
    store: JobStore, records: list[JobRecord], heartbeat_seconds: float
) -> dict[str, QueuePlace]:
    """The places of the queued jobs among `records`, for a status poll or a page of jobs: a rank
    lookup per job and one read of at most MAX_JOBS_AHEAD_READ jobs at the queue's head, shared by the
    page, so the cost does not grow with the queue's depth."""
    queued = [record for record in records if record.status == QUEUED]
    if not queued:
        return {}
    positions = store.queue_positions([record.id for record in queued])
    placed = [
        (record, position) for record, position in zip(queued, positions, strict=True) if position is not None
    ]
    if not placed:
        return {}
    etas = _queued_etas(store, placed, heartbeat_seconds)
    return {
        record.id: QueuePlace(position, eta) for (record, position), eta in zip(placed, etas, strict=True)
    }


class _QueueHead:
    """The stage costs of the jobs at the head of the queue, read at most once per HEAD_TTL_SECONDS by
    an API process: a job at the head waits minutes, so polls and pages within that second share one
    read, and a poll's cost is a rank lookup whatever the depth."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._read: dict[str, tuple[float, list[dict[str, float] | None]]] = {}

    def costs(self, store: JobStore) -> list[dict[str, float] | None]:
        now = time.monotonic()
        with self._lock:
            cached = self._read.get(store.keys.namespace)
            if cached is not None and now - cached[0] < HEAD_TTL_SECONDS:
                return cached[1]
        head = store.queue_head(MAX_JOBS_AHEAD_READ)
        pipe = store.redis.pipeline()
        for job_id in head:
            pipe.hmget(store.keys.record(job_id), "costs", "params")
        costs = []
        for stored_costs, params in pipe.execute():
            if params is None:
                continue  # the job left meanwhile
            costs.append(job_costs(json.loads(stored_costs) if stored_costs else None, json.loads(params)))
        with self._lock:
            self._read[store.keys.namespace] = (now, costs)
        return costs


HEAD_TTL_SECONDS = 1.0
_queue_head = _QueueHead()


def _queued_etas(
    store: JobStore, placed: list[tuple[JobRecord, int]], heartbeat_seconds: float
) -> list[float | None]:
    """Seconds until each job has its video: what the running jobs still need (their own ETAs) plus
    what the jobs ahead of it need, spread over the workers alive, plus its own run."""
    unknown: list[float | None] = [None] * len(placed)
    try:
        rates = live_worker_rates(store, heartbeat_seconds)
        if not any(rates):
            return unknown
        head_seconds = [expected_seconds(costs, rates) for costs in _queue_head.costs(store)]
        pipe = store.redis.pipeline()
        for job_id in store.active_ids(RUNNING):
            pipe.hget(store.keys.record(job_id), "eta_seconds")
        running = sum(json.loads(raw) or 0.0 for raw in pipe.execute() if raw)
    except (redis.RedisError, ValueError, TypeError):
        return unknown
    etas: list[float | None] = []
    for record, position in placed:
        own = expected_seconds(job_costs(record["costs"], record["params"]), rates) or 0.0
        ahead = [seconds or own for seconds in head_seconds[:position]]
        if position > len(ahead):
            # Deeper than the head read (or read a moment ago, shorter): the rest of the way at the
            # average of what was read, or at this job's own pace.
            ahead += [sum(ahead) / len(ahead) if ahead else own] * (position - len(ahead))
        etas.append(round((sum(ahead) + running) / len(rates) + own, 1))
    return etas
