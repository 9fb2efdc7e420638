"""Stage outputs: a run that finds them stored goes on from there and makes exactly the same frames;
a draft stops after interpolation and is finished into the frames of a full run."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from models import GenerationParams, Show1Cascade, StageSteps, steps_per_stage
from models.stage_outputs import (
    FINAL_FRAMES,
    FIRST_FRAME_SR,
    INTERPOLATION,
    KEYFRAMES,
    LATENT_SR,
    PIXEL_SR,
    ResumePoint,
    from_bytes,
    to_bytes,
    window_output,
)
from tests.models.golden_case import MODELS_DIR, case_params, requires_golden

pytestmark = requires_golden

STEPS = StageSteps(base=2, interp=2, sr1_image=2, sr1=2, sr2=3)


class MemoryOutputs:
    """Stage outputs kept in memory, stored as bytes as the service stores them."""

    def __init__(self, stored: dict[str, bytes] | None = None) -> None:
        self.stored = dict(stored or {})
        self.saved: list[str] = []

    def load(self, name: str) -> torch.Tensor | None:
        return from_bytes(self.stored[name]) if name in self.stored else None

    def save(self, name: str, output: torch.Tensor) -> None:
        self.stored[name] = to_bytes(output)
        self.saved.append(name)


@pytest.fixture(scope="module")
def cascade() -> Show1Cascade:
    return Show1Cascade.from_pretrained(MODELS_DIR, device="cpu")


@pytest.fixture(scope="module")
def params() -> GenerationParams:
    return case_params(num_keyframes=4, steps=STEPS)  # 13 frames: two pixel-SR windows


@pytest.fixture(scope="module")
def full_run(cascade: Show1Cascade, params: GenerationParams) -> tuple[np.ndarray, MemoryOutputs]:
    outputs = MemoryOutputs()
    result = cascade.generate(params, stored=outputs)
    assert result.resumed_from is None
    return result.frames, outputs


def test_every_stage_and_window_is_stored_in_order(full_run: tuple[np.ndarray, MemoryOutputs]) -> None:
    frames, outputs = full_run
    assert outputs.saved == [
        KEYFRAMES,
        INTERPOLATION,
        FIRST_FRAME_SR,
        window_output(0),
        window_output(1),
        FINAL_FRAMES,
    ]
    np.testing.assert_array_equal(from_bytes(outputs.stored[FINAL_FRAMES]).numpy(), frames)


@pytest.mark.parametrize(
    ("kept", "resumed_from"),
    [
        ((KEYFRAMES,), ResumePoint(INTERPOLATION)),
        ((KEYFRAMES, INTERPOLATION), ResumePoint(FIRST_FRAME_SR)),
        ((INTERPOLATION, FIRST_FRAME_SR), ResumePoint(PIXEL_SR, 0)),
        ((INTERPOLATION, window_output(0)), ResumePoint(PIXEL_SR, 1)),
        ((INTERPOLATION, window_output(0), window_output(1)), ResumePoint(LATENT_SR)),
        ((FINAL_FRAMES,), ResumePoint(FINAL_FRAMES)),
    ],
    ids=["interpolation", "first-frame-sr", "pixel-sr-window-0", "pixel-sr-window-1", "latent-sr", "done"],
)
def test_a_resumed_run_makes_the_same_frames(
    cascade: Show1Cascade,
    params: GenerationParams,
    full_run: tuple[np.ndarray, MemoryOutputs],
    kept: tuple[str, ...],
    resumed_from: ResumePoint,
) -> None:
    frames, outputs = full_run
    resumed = MemoryOutputs({name: outputs.stored[name] for name in kept})
    ticks: list[tuple[str, int, int]] = []
    result = cascade.generate(params, stored=resumed, progress=lambda *tick: ticks.append(tick))
    assert result.resumed_from == resumed_from
    np.testing.assert_array_equal(result.frames, frames)
    # Progress covers only what was left: stages before the resume point never tick, pixel SR from
    # the steps of the windows already done.
    ticked = [stage for stage, _, _ in ticks]
    order = [KEYFRAMES, INTERPOLATION, FIRST_FRAME_SR, PIXEL_SR, LATENT_SR]
    if resumed_from.stage in order:
        assert ticked[0] == resumed_from.stage and set(ticked) == set(
            order[order.index(resumed_from.stage) :]
        )
    else:
        assert ticks == []
    if resumed_from.stage == PIXEL_SR:
        done = resumed_from.window * params.steps.sr1
        pixel = [step for stage, step, _ in ticks if stage == PIXEL_SR]
        assert pixel == list(range(done, steps_per_stage(params)[PIXEL_SR] + 1))


def test_a_draft_finished_is_the_full_video(cascade: Show1Cascade, params: GenerationParams) -> None:
    draft_outputs = MemoryOutputs()
    draft = cascade.generate(params, stored=draft_outputs, last_stage=INTERPOLATION)
    assert draft.frames.shape == (params.num_frames, *params.keyframe_size, 3)
    assert draft_outputs.saved == [KEYFRAMES, INTERPOLATION]
    # Finished with other later-stage settings: the frames a full run with those settings makes.
    later = dataclasses.replace(params, steps=dataclasses.replace(STEPS, sr1=3), fps=4)
    finished = cascade.generate(
        later, stored=MemoryOutputs({INTERPOLATION: draft_outputs.stored[INTERPOLATION]})
    )
    assert finished.resumed_from == ResumePoint(FIRST_FRAME_SR)
    np.testing.assert_array_equal(finished.frames, cascade.generate(later).frames)
