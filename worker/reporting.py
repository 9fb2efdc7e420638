"""Progress of a running job: stage, step, overall progress and ETA, written to its record.

Overall progress weighs each stage by its expected duration: the seconds per step this worker measured
on earlier jobs, or, before it has any, the stage's share of the cascade's FLOPs (DESIGN.md).
"""

from __future__ import annotations

import logging
import time

import redis

from app.jobs import JobStore
from app.metrics import stage_metrics_key
from models.errors import GenerationCancelled

log = logging.getLogger("show1.worker")

# PFLOP per video at the reference defaults, by stage (DESIGN.md): a prior for stage weights.
FLOP_SHARE = {
    "keyframes": 0.8,
    "interpolation": 3.4,
    "first_frame_sr": 0.3,
    "pixel_sr": 24.1,
    "latent_sr": 2.1,
}
WRITE_INTERVAL_SECONDS = 0.5


class StepTimes:
    """Seconds per denoising step per stage, as measured by this worker (exponential average)."""

    def __init__(self) -> None:
        self.seconds_per_step: dict[str, float] = {}

    def record(self, stage: str, seconds_per_step: float) -> None:
        previous = self.seconds_per_step.get(stage)
        self.seconds_per_step[stage] = (
            seconds_per_step if previous is None else 0.5 * previous + 0.5 * seconds_per_step
        )


class JobProgress:
    """The cascade's progress callback for one job; raises GenerationCancelled when asked to stop."""

    def __init__(
        self,
        store: JobStore,
        job_id: str,
        steps_per_stage: dict[str, int],
        step_times: StepTimes,
        prefix: str,
    ) -> None:
        self.store, self.job_id, self.prefix = store, job_id, prefix
        self.steps = steps_per_stage
        self.step_times = step_times
        self.done: dict[str, int] = {}
        self.stage: str | None = None
        self.stage_started = 0.0
        self.last_write = 0.0

    def __call__(self, stage: str, step: int, total: int) -> None:
        now = time.monotonic()
        if stage != self.stage:
            self.stage, self.stage_started = stage, now - 1e-9
        self.done[stage] = step
        if step == total:
            self._stage_finished(stage, total, now - self.stage_started)
        if stage != self._written_stage or step == total or now - self.last_write >= WRITE_INTERVAL_SECONDS:
            self.write(now)
            if self._cancel_requested():
                raise GenerationCancelled(f"job {self.job_id} canceled")

    def _cancel_requested(self) -> bool:
        try:
            return self.store.cancel_requested(self.job_id)
        except redis.RedisError as error:
            # Redis away for a moment: keep rendering; the flag is read again a step later.
            log.warning("cancel flag not read: %s", error)
            return False

    _written_stage: str | None = None

    def _stage_finished(self, stage: str, steps: int, seconds: float) -> None:
        self.step_times.record(stage, seconds / steps)
        try:
            pipe = self.store.redis.pipeline()
            pipe.hincrbyfloat(stage_metrics_key(self.prefix, stage), "seconds", seconds)
            pipe.hincrby(stage_metrics_key(self.prefix, stage), "count", 1)
            pipe.execute()
        except redis.RedisError as error:
            log.warning("stage metrics not written: %s", error)

    def _expected_seconds(self, stage: str) -> float | None:
        per_step = self.step_times.seconds_per_step.get(stage)
        return None if per_step is None else per_step * self.steps[stage]

    def progress(self) -> float:
        weights = {stage: FLOP_SHARE[stage] for stage in self.steps}
        if all(self._expected_seconds(stage) is not None for stage in self.steps):
            weights = {stage: self._expected_seconds(stage) or 0.0 for stage in self.steps}
        total = sum(weights.values()) or 1.0
        done = sum(weights[stage] * self.done.get(stage, 0) / self.steps[stage] for stage in self.steps)
        return min(done / total, 1.0)

    def eta_seconds(self) -> float | None:
        remaining = 0.0
        for stage, steps in self.steps.items():
            per_step = self.step_times.seconds_per_step.get(stage)
            if per_step is None:
                return None
            remaining += per_step * (steps - self.done.get(stage, 0))
        return round(remaining, 1)

    def write(self, now: float | None = None) -> None:
        self.last_write = now or time.monotonic()
        self._written_stage = self.stage
        fields = {
            "stage": self.stage,
            "progress": round(self.progress(), 4),
            "stage_progress": {
                stage: {"step": step, "total": self.steps[stage]} for stage, step in self.done.items()
            },
            "eta_seconds": self.eta_seconds(),
        }
        try:
            self.store.update_running(self.job_id, fields)
        except redis.RedisError as error:
            # Progress is best effort: a Redis blip must not cost the video.
            log.warning("progress not written: %s", error)
