"""The whole cascade from the prompt, its parameters, progress, cancellation and memory modes."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from models import (
    STAGES,
    GenerationCancelled,
    GenerationParams,
    GenerationResult,
    Show1Cascade,
    StageSteps,
    steps_per_stage,
)
from models.params import sr_window_starts
from models.pipelines.first_frame_sr import upscale_first_frame
from models.pipelines.latent_sr import resize_frames, to_uint8_frames
from models.pipelines.pixel_sr import super_resolve_video
from models.text import PromptEmbeddings
from tests.models.golden_case import GOLDEN_KEYS, MODELS_DIR, case_params, max_diff, recorded, requires_golden

pytestmark = requires_golden

THROUGH_SR1_TOLERANCE = 1e-3
# Fewer steps for tests that check behaviour rather than numbers.
QUICK_STEPS = StageSteps(base=2, interp=2, sr1_image=2, sr1=2, sr2=3)


@pytest.fixture(scope="module")
def cascade() -> Show1Cascade:
    return Show1Cascade.from_pretrained(MODELS_DIR, device="cpu")


@pytest.fixture(scope="module")
def golden_run(cascade: Show1Cascade) -> tuple[GenerationResult, list[tuple[str, int, int]], float]:
    ticks: list[tuple[str, int, int]] = []
    start = time.perf_counter()
    result = cascade.generate(case_params(), progress=lambda *tick: ticks.append(tick), keep_stages=True)
    return result, ticks, time.perf_counter() - start


def test_defaults_and_loading(cascade: Show1Cascade) -> None:
    assert cascade.device == torch.device("cpu")
    assert cascade.dtype == torch.float32
    assert cascade.memory_mode == "resident"
    assert set(cascade.model_info) == {
        "show-1-base",
        "show-1-interpolation",
        "IF-II-L-v1.0",
        "show-1-sr1",
        "show-1-sr2",
    }
    assert all(info["revision"].startswith("config-") for info in cascade.model_info.values())


def test_end_to_end_keeps_every_golden_stage(golden_run: tuple[GenerationResult, list, float]) -> None:
    result, _, _ = golden_run
    golden = recorded()
    for key in GOLDEN_KEYS:
        assert result.stages[key].shape == golden[key].shape, key
    np.testing.assert_array_equal(result.frames, result.stages["final_uint8"].numpy())
    assert set(result.timings) == {"text", *STAGES}


def test_end_to_end_matches_reference_through_interpolation(
    golden_run: tuple[GenerationResult, list, float],
) -> None:
    result, _, seconds = golden_run
    diffs = _golden_diffs(result)
    early = ("prompt_embeds", "negative_prompt_embeds", "keyframes", "interpolated")
    report = f"max |diff| per stage {diffs}, end to end {seconds:.1f} s"
    assert all(diffs[key] <= THROUGH_SR1_TOLERANCE for key in early), report


def test_end_to_end_later_stages_take_the_earlier_outputs(
    cascade: Show1Cascade, golden_run: tuple[GenerationResult, list, float]
) -> None:
    """From IF-II on, each stage of the run is exactly that stage applied to the run's previous output."""
    result, _, _ = golden_run
    stages, params, m = result.stages, case_params(), cascade.models
    prompt = PromptEmbeddings(stages["prompt_embeds"], stages["negative_prompt_embeds"])
    first_frame = upscale_first_frame(
        m.if_unet,
        m.if_scheduler,
        m.if_noising_scheduler,
        prompt,
        stages["interpolated"][:, :, 0],
        size=params.sr1_size,
        num_inference_steps=params.steps.sr1_image,
        guidance_scale=params.guidance.sr1_image,
        noise_level=params.noise_level_sr1_image,
        seed=params.seed,
    )
    assert torch.equal(first_frame, stages["first_frame_sr"])
    sr1 = super_resolve_video(
        m.sr1_unet,
        m.sr1_scheduler,
        m.sr1_noising_scheduler,
        prompt,
        stages["interpolated"],
        stages["first_frame_sr"],
        size=params.sr1_size,
        window=params.window,
        stride=params.stride,
        num_inference_steps=params.steps.sr1,
        guidance_scale=params.guidance.sr1,
        noise_level=params.noise_level_sr1,
        seed=params.seed,
    )
    assert torch.equal(sr1, stages["sr1"])
    frames = resize_frames(to_uint8_frames(stages["sr1"]), params.output_size)
    np.testing.assert_array_equal(frames, stages["sr2_input_uint8"].numpy())


def _golden_diffs(result: GenerationResult) -> dict[str, float]:
    golden = recorded()
    keys = ("prompt_embeds", "negative_prompt_embeds", "keyframes", "interpolated", "first_frame_sr", "sr1")
    return {key: max_diff(result.stages[key], golden[key]) for key in keys}


def test_progress_ticks_match_steps_per_stage(golden_run: tuple[GenerationResult, list, float]) -> None:
    _, ticks, _ = golden_run
    expected = steps_per_stage(case_params())
    for stage in STAGES:
        stage_ticks = [(step, total) for name, step, total in ticks if name == stage]
        assert stage_ticks == [(step, expected[stage]) for step in range(expected[stage] + 1)], stage
    assert [name for name, _, _ in ticks] == sorted((t[0] for t in ticks), key=STAGES.index)


def test_stage_outputs_are_reported_in_order(cascade: Show1Cascade) -> None:
    params = case_params(num_keyframes=2, steps=QUICK_STEPS)
    outputs: list[tuple[str, tuple[int, ...]]] = []
    cascade.generate(params, on_stage_output=lambda stage, video: outputs.append((stage, tuple(video.shape))))
    sr1_height, sr1_width = params.sr1_size
    out_height, out_width = params.output_size
    assert outputs == [
        ("keyframes", (1, 3, 2, *params.keyframe_size)),
        ("interpolation", (1, 3, 5, *params.keyframe_size)),
        ("first_frame_sr", (1, 3, 1, sr1_height, sr1_width)),
        ("pixel_sr", (1, 3, 5, sr1_height, sr1_width)),
        ("latent_sr", (1, 3, 5, out_height, out_width)),
    ]


@pytest.mark.parametrize("num_keyframes", [2, 3, 4])
def test_other_keyframe_counts_upscale_every_frame(cascade: Show1Cascade, num_keyframes: int) -> None:
    params = case_params(num_keyframes=num_keyframes, steps=QUICK_STEPS)
    ticks: list[tuple[str, int, int]] = []
    result = cascade.generate(params, progress=lambda *tick: ticks.append(tick), keep_stages=True)
    frames = 4 * (num_keyframes - 1) + 1
    assert result.frames.shape == (frames, *params.output_size, 3)
    sr1 = result.stages["sr1"]
    assert sr1.shape == (1, 3, frames, *params.sr1_size)
    assert torch.isfinite(sr1).all()
    untouched = [index for index in range(frames) if not sr1[0, :, index].abs().amax() > 0]
    assert not untouched, f"frames never super-resolved: {untouched}"
    assert (
        sum(1 for name, step, _ in ticks if name == "pixel_sr" and step)
        == steps_per_stage(params)["pixel_sr"]
    )


def test_window_starts_cover_every_frame() -> None:
    assert sr_window_starts(29, 8, 7) == [0, 7, 14, 21]
    assert sr_window_starts(13, 8, 7) == [0, 5]
    assert sr_window_starts(9, 8, 7) == [0, 1]
    assert sr_window_starts(5, 8, 7) == [0]
    for frames in range(1, 60):
        starts = sr_window_starts(frames, 8, 7)
        covered = set().union(*(range(start, min(start + 8, frames)) for start in starts))
        assert covered == set(range(frames))
        # Every later window starts on a frame an earlier window produced.
        for index, start in enumerate(starts[1:], 1):
            assert any(prev <= start < prev + 8 for prev in starts[:index])


def test_cancel_between_steps(cascade: Show1Cascade) -> None:
    seen: list[tuple[str, int, int]] = []

    def progress(stage: str, step: int, total: int) -> None:
        seen.append((stage, step, total))
        if stage == "interpolation" and step == 1:
            raise GenerationCancelled

    with pytest.raises(GenerationCancelled):
        cascade.generate(case_params(steps=QUICK_STEPS), progress=progress)
    assert seen[-1] == ("interpolation", 1, QUICK_STEPS.interp)


@pytest.mark.parametrize("memory_mode", ["offload_text_encoder", "model_offload", "sequential_offload"])
def test_memory_modes_give_identical_videos(cascade: Show1Cascade, memory_mode: str) -> None:
    params = case_params(num_keyframes=2, steps=QUICK_STEPS)
    offloaded = Show1Cascade.from_pretrained(MODELS_DIR, device="cpu", memory_mode=memory_mode)
    assert offloaded.memory_mode == memory_mode
    np.testing.assert_array_equal(offloaded.generate(params).frames, cascade.generate(params).frames)


def test_unknown_memory_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="memory_mode"):
        Show1Cascade.from_pretrained(MODELS_DIR, device="cpu", memory_mode="swap")


def test_params_round_trip_through_json() -> None:
    params = case_params(negative_prompt="blurry", num_keyframes=3)
    restored = GenerationParams.from_dict(json.loads(json.dumps(params.to_dict())))
    assert restored == params
    minimal = GenerationParams.from_dict({"prompt": "a cat", "seed": 1})
    assert minimal == GenerationParams(prompt="a cat", seed=1)


def test_params_defaults_are_the_reference_run() -> None:
    params = GenerationParams(prompt="a cat", seed=345)
    assert params.num_frames == 29
    assert params.sr1_size == (160, 256)
    assert params.output_size == (320, 576)
    assert steps_per_stage(params) == {
        "keyframes": 75,
        "interpolation": 75,
        "first_frame_sr": 70,
        "pixel_sr": 4 * 125,
        "latent_sr": 40 + 2,  # and the VAE encode and decode
    }


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"num_keyframes": 1}, "num_keyframes"),
        ({"output_size": (100, 576)}, "output_size"),
        ({"stride": 8}, "stride"),
        ({"sr2_strength": 0.0}, "sr2_strength"),
        ({"steps": {"base": 0}}, "steps.base"),
        ({"seed": -1}, "seed"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_params_reject_bad_values(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GenerationParams.from_dict({"prompt": "a cat", "seed": 1, **overrides})


def test_parameters_import_without_torch() -> None:
    """The API process validates parameters and shows progress without loading torch."""
    code = (
        "import sys; from models import GenerationParams, GenerationCancelled, STAGES, steps_per_stage; "
        "steps_per_stage(GenerationParams(prompt='a cat', seed=1)); assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
