"""A job's stage outputs in the storage backend: what a retried attempt resumes from, what a draft's
finishing job starts from.

Each attempt writes its own keys (app/storage.py `stage_output_key`), and the record's `stages` (output
name -> storage key) changes only through writes fenced by the attempt's token: a stale attempt never
replaces what the attempt holding the job stored, and what it wrote anyway is tracked and expires.
Storage trouble never costs the video: an output that cannot be written is recomputed by a later
attempt if one is needed, one that cannot be read is recomputed now.
"""

from __future__ import annotations

import logging
import time

import redis
import torch

from app.jobs import JobStore
from app.storage import Storage, StorageError, stage_output_key
from models.stage_outputs import from_bytes, to_bytes
from worker.reporting import AttemptSuperseded

log = logging.getLogger("show1.worker")


class StoredStageOutputs:
    """models.stage_outputs.StageOutputs on the service's storage, for one attempt at one job."""

    def __init__(
        self,
        store: JobStore,
        storage: Storage,
        job_id: str,
        attempt: int,
        stages: dict[str, str],
        ttl_seconds: int,
    ) -> None:
        self.store, self.storage = store, storage
        self.job_id, self.attempt = job_id, attempt
        self.stages = dict(stages)  # as the record has them when the attempt starts
        self.ttl_seconds = ttl_seconds

    def load(self, name: str) -> torch.Tensor | None:
        key = self.stages.get(name)
        if key is None:
            return None
        try:
            return from_bytes(self.storage.get(key))
        except (StorageError, RuntimeError, EOFError, ValueError) as error:
            log.warning("stage output %s not readable (%s); it is computed again", name, error)
            return None

    def save(self, name: str, output: torch.Tensor) -> None:
        key = stage_output_key(self.job_id, self.attempt, name)
        data = to_bytes(output)
        try:
            self.store.track_stage_output(key, len(data), time.time() + self.ttl_seconds)
            self.storage.put(key, data, "application/octet-stream")
        except (StorageError, redis.RedisError) as error:
            log.warning("stage output %s not stored (%s); a retry would compute it again", name, error)
            return
        self.stages[name] = key
        try:
            written = self.store.update_running(self.job_id, {"stages": self.stages}, attempt=self.attempt)
        except redis.RedisError as error:
            log.warning("stage output %s not recorded: %s", name, error)
            return
        if not written:
            raise AttemptSuperseded(f"attempt {self.attempt} no longer holds job {self.job_id}")
