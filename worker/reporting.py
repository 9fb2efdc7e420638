"""Progress of a running job: stage, step, overall progress and ETA, written to its record.

The ETA is the job's remaining cost (models/cost.py: PFLOP per stage from its sizes, frames and steps)
times this worker's seconds per unit of cost: measured per stage on earlier jobs where it has them,
else measured on the job so far, from its first step on. So the first progress write of the first
job already carries an ETA, and every write refines it. Progress is the elapsed share of the expected
time; it never goes back (the job store keeps the highest value written) and stays below 1 until the
job has succeeded.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis

from app.jobs import JobStore
from models.cost import stage_costs
from models.errors import GenerationCancelled

log = logging.getLogger("show1.worker")

WRITE_INTERVAL_SECONDS = 0.5
# The record says "almost done" rather than done while the video is still being encoded and uploaded.
MAX_RUNNING_PROGRESS = 0.99


class AttemptSuperseded(GenerationCancelled):
    """This attempt no longer holds its job: another took it over (this worker was frozen past its
    heartbeat) or the job ended. The attempt stops at its next step and publishes nothing."""


class Throughput:
    """Seconds per unit of cost, per stage, as this worker measured them (exponential average).

    The warm-up run at start-up gives a first value for every stage; it is a small job, whose pace
    overhead dominates, so the first real job's measurement replaces it rather than averaging with it.
    """

    def __init__(self) -> None:
        self.seconds_per_unit: dict[str, float] = {}
        self._from_warm_up: set[str] = set()

    def record(self, stage: str, seconds: float, cost: float, *, warm_up: bool = False) -> None:
        if cost <= 0 or seconds <= 0:
            return
        rate = seconds / cost
        previous = self.seconds_per_unit.get(stage)
        if previous is None or stage in self._from_warm_up:
            self.seconds_per_unit[stage] = rate
        else:
            self.seconds_per_unit[stage] = 0.5 * previous + 0.5 * rate
        if warm_up:
            self._from_warm_up.add(stage)
        else:
            self._from_warm_up.discard(stage)


def warm_up(cascade: Any, throughput: Throughput) -> float:
    """One small generation at start-up: kernels compiled and caches filled before the first job, and a
    first pace for every stage, so even the first job's ETA is a number. Returns its seconds."""
    from models.params import DEMO_KEYFRAME_SIZE, DEMO_OUTPUT_SIZE, GenerationParams, StageSteps

    params = GenerationParams(
        prompt="warm-up",
        seed=0,
        num_keyframes=2,
        keyframe_size=DEMO_KEYFRAME_SIZE,
        output_size=DEMO_OUTPUT_SIZE,
        steps=StageSteps(base=1, interp=1, sr1_image=1, sr1=1, sr2=2),
        keyframe_dropout="off",
    )
    result = cascade.generate(params)
    for stage, cost in stage_costs(params).items():
        throughput.record(stage, result.timings[stage], cost, warm_up=True)
    return sum(result.timings.values())


class JobProgress:
    """The cascade's progress callback for one job; raises GenerationCancelled when asked to stop."""

    def __init__(
        self,
        store: JobStore,
        job_id: str,
        steps_per_stage: dict[str, int],
        stage_costs: dict[str, float],
        throughput: Throughput,
    ) -> None:
        self.store, self.job_id = store, job_id
        self.attempt: int | None = None  # set once the job is claimed: every write is fenced by it
        self.steps = steps_per_stage
        self.costs = stage_costs
        self.throughput = throughput
        self.done: dict[str, int] = {}
        # Steps this attempt did not run: found stored by an earlier attempt (models/stage_outputs.py).
        self.skipped: dict[str, int] = {}
        self.stage: str | None = None
        self._unflushed_work = 0.0  # cost units computed since the last write, for the work counter
        # The job starts now: text encoding and model moves count toward the first stage's steps.
        self.started = self.stage_started = self.last_tick = time.monotonic()
        self.last_write = 0.0
        self._written_stage: str | None = None

    def __call__(self, stage: str, step: int, total: int) -> None:
        now = time.monotonic()
        if stage != self.stage:
            # A stage starts where the previous one's last step ended, so its first step is timed too.
            self.stage, self.stage_started = stage, self.last_tick
            if stage not in self.done:
                self._skip_to(stage, step)
        self.last_tick = now
        self._unflushed_work += self.costs[stage] * max(step - self.done.get(stage, 0), 0) / self.steps[stage]
        self.done[stage] = step
        if step == total:
            self._stage_finished(stage, now - self.stage_started)
        if stage != self._written_stage or step == total or now - self.last_write >= WRITE_INTERVAL_SECONDS:
            self.write(now)
            if self._cancel_requested():
                raise GenerationCancelled(f"job {self.job_id} canceled")

    def _skip_to(self, stage: str, step: int) -> None:
        """A resumed attempt starts at `stage` (at `step`, for pixel SR's stored windows): the stages
        before it and those steps are done, and no pace or ETA counts them."""
        for earlier in self.steps:
            if earlier == stage:
                break
            if self.done.get(earlier, 0) < self.steps[earlier]:
                self.skipped[earlier] = self.steps[earlier] - self.done.get(earlier, 0)
                self.done[earlier] = self.steps[earlier]
        if step:
            self.skipped[stage] = step
            self.done[stage] = step

    def _cancel_requested(self) -> bool:
        try:
            return self.store.cancel_requested(self.job_id)
        except redis.RedisError as error:
            # Redis away for a moment: keep rendering; the flag is read again a step later.
            log.warning("cancel flag not read: %s", error)
            return False

    def _stage_finished(self, stage: str, seconds: float) -> None:
        self.throughput.record(stage, seconds, self.costs[stage] * self._fraction_run(stage))
        try:
            pipe = self.store.redis.pipeline()
            pipe.hincrbyfloat(self.store.keys.stage_metrics(stage), "seconds", seconds)
            pipe.hincrby(self.store.keys.stage_metrics(stage), "count", 1)
            pipe.execute()
        except redis.RedisError as error:
            log.warning("stage metrics not written: %s", error)

    def _fraction_done(self, stage: str) -> float:
        return self.done.get(stage, 0) / self.steps[stage]

    def _fraction_run(self, stage: str) -> float:
        """The share of the stage this attempt has run itself."""
        return (self.done.get(stage, 0) - self.skipped.get(stage, 0)) / self.steps[stage]

    def eta_seconds(self, now: float | None = None) -> float:
        """Seconds until the last stage ends, from the remaining cost of every stage."""
        now = now or time.monotonic()
        cost_done = sum(self.costs[stage] * self._fraction_run(stage) for stage in self.steps)
        job_rate = (now - self.started) / cost_done if cost_done > 0 else 0.0
        remaining = 0.0
        for stage in self.steps:
            left = self.costs[stage] * (1.0 - self._fraction_done(stage))
            if left <= 0:
                continue
            if stage == self.stage and self._fraction_run(stage) > 0:
                # The stage under way: its own pace on this job.
                rate = (now - self.stage_started) / (self.costs[stage] * self._fraction_run(stage))
            else:
                rate = self.throughput.seconds_per_unit.get(stage, job_rate)
            remaining += left * rate
        return round(remaining, 1)

    def progress(self, now: float | None = None) -> float:
        now = now or time.monotonic()
        elapsed = now - self.started
        eta = self.eta_seconds(now)
        share = elapsed / (elapsed + eta) if elapsed + eta > 0 else 0.0
        return min(share, MAX_RUNNING_PROGRESS)

    def write(self, now: float | None = None) -> None:
        now = now or time.monotonic()
        self.last_write = now
        self._written_stage = self.stage
        fields = {
            "stage": self.stage,
            "progress": round(self.progress(now), 4),
            "stage_progress": {
                stage: {"step": step, "total": self.steps[stage]} for stage, step in self.done.items()
            },
            "eta_seconds": self.eta_seconds(now),
        }
        try:
            written = self.store.update_running(self.job_id, fields, attempt=self.attempt)
            if self._unflushed_work:
                self.store.add_work(self._unflushed_work)
                self._unflushed_work = 0.0
        except redis.RedisError as error:
            # Progress is best effort: a Redis blip must not cost the video.
            log.warning("progress not written: %s", error)
            return
        if not written:
            raise AttemptSuperseded(f"attempt {self.attempt} no longer holds job {self.job_id}")
