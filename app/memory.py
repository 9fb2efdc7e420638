"""Admission by memory: a job is queued only if a worker can hold it (models/memory.py estimates it).

Every worker announces, with its heartbeat, what it may use (`WorkerMemory`: its models' profile, its
memory mode and the bytes an estimate may reach on it); the last announcement is also remembered
without expiry, so that with no worker alive the API still knows what kind of worker will come. A
request whose estimated peak no live worker could hold (or, with none alive, one over
`memory_budget_gb`, else over what the last worker announced) is refused before anything is queued,
naming the field that grows its memory most; a worker that takes a job it cannot hold leaves it for a
larger one, or fails it when there is none (worker/jobs.py).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from app.estimates import live_worker_entries
from app.jobs import JobStore
from models.memory import ModelProfile, estimate_memory
from models.params import GenerationParams

GB = 2**30
# The request fields a memory estimate grows with, as the request names them, and the paper's value
# each is compared at.
_GROWING_FIELDS = ("output_size", "keyframe_size", "num_keyframes")


@dataclass(frozen=True)
class WorkerMemory:
    """What one worker may hold: `budget_bytes` is what an estimate of its profile may reach (device
    memory on a GPU, weights included; on a CPU, RAM beyond the loaded process)."""

    budget_bytes: int
    memory_mode: str
    profile: ModelProfile

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget_bytes": self.budget_bytes,
            "memory_mode": self.memory_mode,
            "profile": self.profile.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkerMemory:
        return cls(data["budget_bytes"], data["memory_mode"], ModelProfile.from_dict(data["profile"]))

    def peak(self, params: GenerationParams, stages: Iterable[str]) -> int:
        return estimate_memory(params, self.profile, self.memory_mode, stages).peak

    def holds(self, params: GenerationParams, stages: Iterable[str]) -> bool:
        return self.peak(params, stages) <= self.budget_bytes


def remember(store: JobStore, memory: WorkerMemory) -> None:
    """A worker's announcement kept beyond its life: what admission uses while no worker is alive."""
    store.redis.set(store.keys.last_worker_memory(), json.dumps(memory.to_dict()))


def live_workers(store: JobStore, heartbeat_seconds: float) -> list[WorkerMemory]:
    """The memory of each worker alive, from the registry app/estimates.py keeps."""
    entries = live_worker_entries(store, heartbeat_seconds)
    return [WorkerMemory.from_dict(entry["memory"]) for entry in entries if entry.get("memory")]


def last_worker(store: JobStore) -> WorkerMemory | None:
    raw = store.redis.get(store.keys.last_worker_memory())
    return WorkerMemory.from_dict(json.loads(raw)) if raw else None


@dataclass(frozen=True)
class MemoryRefusal:
    """Why no worker can hold a job: its peak on the worker with the most room, that worker's budget,
    and the request field that grows the peak most."""

    peak_bytes: int
    budget_bytes: int
    field: str

    def message(self) -> str:
        return (
            f"this video needs an estimated {self.peak_bytes / GB:.2f} GB of memory, over the "
            f"{self.budget_bytes / GB:.2f} GB the largest worker can hold; {self.field} grows it most"
        )


def memory_refusal(
    params: GenerationParams, stages: Iterable[str], workers: list[WorkerMemory]
) -> MemoryRefusal | None:
    """None when one of `workers` holds the job; else why not, on the worker with the most room."""
    stages = tuple(stages)
    if not workers or any(worker.holds(params, stages) for worker in workers):
        return None
    largest = max(workers, key=lambda worker: worker.budget_bytes - worker.peak(params, stages))
    return MemoryRefusal(
        largest.peak(params, stages), largest.budget_bytes, _growing_field(params, stages, largest)
    )


def _growing_field(params: GenerationParams, stages: tuple[str, ...], worker: WorkerMemory) -> str:
    """The field whose paper value would lower the peak most."""
    paper = GenerationParams(prompt=params.prompt, seed=params.seed)
    peak = worker.peak(params, stages)
    savings = {
        name: peak - worker.peak(dataclasses.replace(params, **{name: getattr(paper, name)}), stages)
        for name in _GROWING_FIELDS
    }
    return max(savings, key=savings.__getitem__)
