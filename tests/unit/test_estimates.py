"""The cost model, the running job's ETA and progress, and the queued job's ETA, on known numbers."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import redis

from app.estimates import announce_worker, expected_seconds, live_worker_rates
from app.jobs import JobStore
from models.cost import REFERENCE_COST, REFERENCE_PFLOP, REFERENCE_VAE_PFLOP, stage_costs, total_cost
from models.params import DEMO_KEYFRAME_SIZE, DEMO_OUTPUT_SIZE, DEMO_STEPS, GenerationParams, StageSteps
from worker import reporting
from worker.reporting import JobProgress, Throughput

PAPER = GenerationParams(prompt="x", seed=0)


def test_the_reference_job_costs_what_the_bench_counts() -> None:
    with_vae = {**REFERENCE_PFLOP, "latent_sr": REFERENCE_PFLOP["latent_sr"] + REFERENCE_VAE_PFLOP}
    assert stage_costs(PAPER) == pytest.approx(with_vae)
    assert total_cost(PAPER) == pytest.approx(REFERENCE_COST)


def test_cost_follows_steps_sizes_and_frames() -> None:
    double_steps = dataclasses.replace(PAPER, steps=StageSteps(base=150))
    assert stage_costs(double_steps)["keyframes"] == pytest.approx(2 * REFERENCE_PFLOP["keyframes"])
    assert stage_costs(double_steps)["pixel_sr"] == pytest.approx(REFERENCE_PFLOP["pixel_sr"])
    wide = dataclasses.replace(PAPER, keyframe_size=(40, 128))
    for stage in ("keyframes", "interpolation", "first_frame_sr", "pixel_sr"):
        assert stage_costs(wide)[stage] == pytest.approx(2 * REFERENCE_PFLOP[stage])
    longer = dataclasses.replace(PAPER, num_keyframes=15)  # 57 frames: 8 pixel-SR windows instead of 4
    assert stage_costs(longer)["pixel_sr"] == pytest.approx(2 * REFERENCE_PFLOP["pixel_sr"])
    demo = dataclasses.replace(
        PAPER, keyframe_size=DEMO_KEYFRAME_SIZE, output_size=DEMO_OUTPUT_SIZE, steps=DEMO_STEPS
    )
    assert total_cost(demo) < REFERENCE_COST / 100


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_eta_and_progress_of_a_running_job(
    monkeypatch: pytest.MonkeyPatch, redis_connection: redis.Redis, namespace: str
) -> None:
    clock = Clock()
    monkeypatch.setattr(reporting.time, "monotonic", clock)
    store = JobStore(redis_connection, namespace, 3600)
    job = store.create("owner", {"params": PAPER.to_dict()})
    throughput = Throughput()
    progress = JobProgress(store, job.id, {"a": 2, "b": 2}, {"a": 1.0, "b": 3.0}, throughput)
    assert store.claim(job.id, "w", eta_seconds=progress.eta_seconds())

    progress("a", 0, 2)  # a stage starts at step 0 (the steps an earlier attempt did: none)
    clock.now = 101.0
    progress("a", 1, 2)  # 1 s for half of 1 unit: 2 s per unit, for the rest of this job too
    assert progress.eta_seconds() == pytest.approx(1.0 + 6.0)
    assert store.get(job.id)["progress"] == pytest.approx(1 / 8, abs=1e-3)
    clock.now = 102.0
    progress("a", 2, 2)
    assert throughput.seconds_per_unit == {"a": 2.0}
    progress("b", 0, 2)
    clock.now = 105.0
    progress("b", 1, 2)  # the first step of b is timed from a's end: 3 s for 1.5 units
    assert progress.eta_seconds() == pytest.approx(3.0)
    record = store.get(job.id)
    assert record["eta_seconds"] == pytest.approx(3.0)
    assert record["progress"] == pytest.approx(5 / 8, abs=1e-3)
    clock.now = 108.0
    progress("b", 2, 2)
    assert store.get(job.id)["progress"] == reporting.MAX_RUNNING_PROGRESS  # not 1 before it succeeded

    # The store keeps the highest progress written: a slower estimate never moves it back.
    store.update_running(job.id, {"progress": 0.2})
    assert store.get(job.id)["progress"] == reporting.MAX_RUNNING_PROGRESS


def test_a_resumed_attempt_counts_only_what_is_left(
    monkeypatch: pytest.MonkeyPatch, redis_connection: redis.Redis, namespace: str
) -> None:
    """An attempt that starts at b's second half (a and b's first half stored by an earlier one):
    neither the ETA nor the pace counts the stored work as done in no time."""
    clock = Clock()
    monkeypatch.setattr(reporting.time, "monotonic", clock)
    store = JobStore(redis_connection, namespace, 3600)
    job = store.create("owner", {"params": PAPER.to_dict()})
    throughput = Throughput()
    throughput.record("a", 1.0, 1.0)
    throughput.record("b", 2.0, 1.0)
    progress = JobProgress(store, job.id, {"a": 2, "b": 4}, {"a": 1.0, "b": 4.0}, throughput)
    assert store.claim(job.id, "w")
    progress("b", 2, 4)  # the cascade's start tick: two of b's steps were stored
    assert progress.done == {"a": 2, "b": 2} and progress.skipped == {"a": 2, "b": 2}
    assert progress.eta_seconds() == pytest.approx(2.0 * 2.0)  # half of b at b's measured pace
    clock.now = 103.0
    progress("b", 3, 4)  # 3 s for one unit of b
    assert progress.eta_seconds() == pytest.approx(3.0)
    clock.now = 106.0
    progress("b", 4, 4)
    assert throughput.seconds_per_unit["b"] == pytest.approx(0.5 * 2.0 + 0.5 * 3.0)  # 6 s for 2 units
    assert store.work() == pytest.approx(2.0)  # the units this attempt computed


def test_the_warm_up_pace_is_replaced_by_the_first_real_one() -> None:
    throughput = Throughput()
    throughput.record("a", 10.0, 1.0, warm_up=True)
    throughput.record("a", 2.0, 1.0)
    throughput.record("a", 4.0, 1.0)
    assert throughput.seconds_per_unit["a"] == pytest.approx(3.0)


def test_expected_seconds_and_live_workers(
    redis_connection: redis.Redis, namespace: str, tmp_path: Path
) -> None:
    store = JobStore(redis_connection, namespace, 3600)
    assert live_worker_rates(store, heartbeat_seconds=2) == []
    pace = {stage: 2.0 for stage in REFERENCE_PFLOP}
    announce_worker(store, "w1", pace)
    assert live_worker_rates(store, heartbeat_seconds=2) == [pace]
    assert expected_seconds(stage_costs(PAPER), [pace]) == pytest.approx(2.0 * REFERENCE_COST)
    assert expected_seconds(stage_costs(PAPER), [{}]) is None
    # A stage no worker has timed counts at the slowest pace seen, to err long.
    partial = {"keyframes": 1.0, "pixel_sr": 3.0}
    assert expected_seconds(stage_costs(PAPER), [partial]) == pytest.approx(
        1.0 * REFERENCE_PFLOP["keyframes"] + 3.0 * (REFERENCE_COST - REFERENCE_PFLOP["keyframes"])
    )
