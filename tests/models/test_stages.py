"""Each stage, fed the recorded input of that stage, against the reference's recorded output.

On tiny-d (the published folders: DPM-Solver++ pixel stages, v-prediction sr1, the reference's own UNet
class for sr2) every stage is held to 1e-4. tiny-a (DDPM pixel stages, full-scale random UNets) is
chaotic past interpolation, for the reference's own code too, so its later stages have looser limits
(explained below) and exact-match tests against diffusers' own pipelines carry the parity claim there.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import IFSuperResolutionPipeline, VideoToVideoSDPipeline
from PIL import Image

from models.loading import CascadeModels, load_models
from models.params import GenerationParams
from models.pipelines.first_frame_sr import upscale_first_frame
from models.pipelines.interpolation import interpolate_keyframes
from models.pipelines.keyframes import generate_keyframes
from models.pipelines.latent_sr import latent_super_resolve, resize_frames, to_uint8_frames
from models.pipelines.pixel_sr import super_resolve_video, super_resolve_window
from models.text import PromptEmbeddings, encode_clip, encode_t5
from tests.models.golden_case import (
    PUBLISHED_CASE,
    case_params,
    max_diff,
    models_dir,
    recorded,
    requires_golden,
    unit_range,
)

pytestmark = requires_golden

CPU = torch.device("cpu")
PIXEL_TOLERANCE = 1e-4
LATENT_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Limits:
    first_frame_sr: float
    # Frames of the pixel-SR output held to `sr1`: all of them, or only window 0's.
    sr1: float
    sr1_frames: int | None


LIMITS = {
    PUBLISHED_CASE: Limits(first_frame_sr=PIXEL_TOLERANCE, sr1=PIXEL_TOLERANCE, sr1_frames=None),
    # IF-II on tiny-a's random weights amplifies float32 rounding: on this project's CPUs the reference's
    # own recorded output is 1.04e-4 from a float64 run of the same computation, and diffusers'
    # IFSuperResolutionPipeline (bit-identical to this stage, tested below) lands 1.01e-4 to 1.17e-4 from
    # it depending on thread count. tiny-a's sr1 is chaotic: perturbing its recorded inputs by 1e-6 moves
    # window 0 by 2e-4 and every later window about 10x more (each is conditioned on the one before), so
    # only window 0 is held, to 5e-4; the reference's own code, run here, lands on the same numbers as this
    # implementation, bit for bit.
    "tiny-a": Limits(first_frame_sr=2e-4, sr1=5e-4, sr1_frames=7),
}


@dataclass
class Case:
    name: str
    models: CascadeModels

    @cached_property
    def params(self) -> GenerationParams:
        return case_params(self.name)

    @property
    def golden(self) -> dict[str, torch.Tensor]:
        return recorded(self.name)

    @property
    def limits(self) -> Limits:
        return LIMITS[self.name]

    @cached_property
    def prompt(self) -> PromptEmbeddings:
        return PromptEmbeddings(self.golden["prompt_embeds"], self.golden["negative_prompt_embeds"])


@pytest.fixture(scope="module", params=sorted(LIMITS))
def case(request: pytest.FixtureRequest) -> Case:
    loaded = load_models(models_dir(request.param), torch.float32)
    # As the cascade and the reference run it; slicing also changes how the VAE encoder batches.
    loaded.vae.enable_slicing()
    return Case(request.param, loaded)


def test_t5_prompt_embeddings_match_reference(case: Case) -> None:
    m, params = case.models, case.params
    with torch.inference_mode():
        embeddings = encode_t5(
            m.t5_tokenizer, m.t5_encoder, params.prompt, params.negative_prompt, CPU, torch.float32
        )
    positive = max_diff(embeddings.positive, case.golden["prompt_embeds"])
    negative = max_diff(embeddings.negative, case.golden["negative_prompt_embeds"])
    assert positive <= PIXEL_TOLERANCE and negative <= PIXEL_TOLERANCE, f"max |diff| {positive}, {negative}"


def test_keyframes_match_reference(case: Case) -> None:
    params = case.params
    keyframes = generate_keyframes(
        case.models.base_unet,
        case.models.base_scheduler,
        case.prompt,
        num_frames=params.num_keyframes,
        size=params.keyframe_size,
        num_inference_steps=params.steps.base,
        guidance_scale=params.guidance.base,
        seed=params.seed,
    )
    diff = max_diff(keyframes, case.golden["keyframes"])
    assert diff <= PIXEL_TOLERANCE, f"keyframes max |diff| {diff}"


def _interpolate(case: Case, max_pairs: int | None, unet: object = None) -> torch.Tensor:
    params = case.params
    return interpolate_keyframes(
        unet or case.models.interp_unet,
        case.models.interp_scheduler,
        case.prompt,
        case.golden["keyframes"],
        num_inference_steps=params.steps.interp,
        guidance_scale=params.guidance.interp,
        seed=params.seed,
        max_pairs_per_batch=max_pairs,
    )


def test_interpolation_matches_reference(case: Case) -> None:
    diff = max_diff(_interpolate(case, None), case.golden["interpolated"])
    assert diff <= PIXEL_TOLERANCE, f"interpolated max |diff| {diff}"


class BatchInvariantUNet:
    """A stand-in pixel UNet whose output for one batch member never depends on the others.

    Real UNets are only equal up to rounding across batch sizes (GEMM blocking changes with the batch),
    so exact equality of the batched and the pair-by-pair interpolation is checked with this one.
    """

    def __call__(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        class_labels: torch.Tensor | None = None,
    ) -> SimpleNamespace:
        text = encoder_hidden_states[:, :1, :1, None, None]
        epsilon = torch.tanh(sample[:, :3] * 0.5 + sample[:, 3:6] * 0.25 + sample[:, 6:7] + text)
        variance = torch.tanh(sample[:, 3:6] - text)
        return SimpleNamespace(sample=torch.cat([epsilon, variance], dim=1) * (timestep / 1000))


def test_interpolation_batched_is_exactly_pair_by_pair(case: Case) -> None:
    unet = BatchInvariantUNet()
    batched = _interpolate(case, None, unet)
    assert torch.equal(batched, _interpolate(case, 1, unet))
    assert torch.equal(batched, _interpolate(case, 3, unet))


def test_interpolation_batched_matches_pair_by_pair(case: Case) -> None:
    diff = max_diff(_interpolate(case, None), _interpolate(case, 1))
    assert diff <= PIXEL_TOLERANCE, f"batched vs pair by pair max |diff| {diff}"


def _first_frame_sr(case: Case) -> torch.Tensor:
    params, m = case.params, case.models
    return upscale_first_frame(
        m.if_unet,
        m.if_scheduler,
        m.if_noising_scheduler,
        case.prompt,
        case.golden["interpolated"][:, :, 0],
        size=params.sr1_size,
        num_inference_steps=params.steps.sr1_image,
        guidance_scale=params.guidance.sr1_image,
        noise_level=params.noise_level_sr1_image,
        seed=params.seed,
    )


def test_first_frame_sr_matches_reference(case: Case) -> None:
    diff = max_diff(_first_frame_sr(case), case.golden["first_frame_sr"])
    assert diff <= case.limits.first_frame_sr, f"first_frame_sr max |diff| {diff}"


def test_first_frame_sr_equals_diffusers_if_pipeline(case: Case) -> None:
    params, m = case.params, case.models
    pipeline = IFSuperResolutionPipeline(
        tokenizer=None,
        text_encoder=None,
        unet=m.if_unet,
        scheduler=_diffusers_ddpm(m),
        image_noising_scheduler=m.if_noising_scheduler,
        safety_checker=None,
        feature_extractor=None,
        watermarker=None,
        requires_safety_checker=False,
    )
    pipeline.set_progress_bar_config(disable=True)
    expected = pipeline(
        image=case.golden["interpolated"][:, :, 0],
        prompt_embeds=case.prompt.positive,
        negative_prompt_embeds=case.prompt.negative,
        height=params.sr1_size[0],
        width=params.sr1_size[1],
        num_inference_steps=params.steps.sr1_image,
        guidance_scale=params.guidance.sr1_image,
        noise_level=params.noise_level_sr1_image,
        generator=torch.manual_seed(params.seed),
        output_type="pt",
    ).images
    actual = _first_frame_sr(case)
    assert torch.equal(actual, expected), f"max |diff| {max_diff(actual, expected)}"


def _diffusers_ddpm(m: CascadeModels) -> object:
    from diffusers import DDPMScheduler

    assert m.if_scheduler.class_name == "DDPMScheduler"
    return DDPMScheduler.from_config(m.if_scheduler.config)


def _sr1_settings(case: Case) -> dict:
    params = case.params
    return {
        "size": params.sr1_size,
        "num_inference_steps": params.steps.sr1,
        "guidance_scale": params.guidance.sr1,
        "noise_level": params.noise_level_sr1,
        "seed": params.seed,
    }


def _super_resolve(case: Case, video: torch.Tensor) -> torch.Tensor:
    m = case.models
    return super_resolve_video(
        m.sr1_unet,
        m.sr1_scheduler,
        m.sr1_noising_scheduler,
        case.prompt,
        video,
        case.golden["first_frame_sr"],
        window=case.params.window,
        stride=case.params.stride,
        **_sr1_settings(case),
    )


def test_pixel_sr_matches_reference(case: Case) -> None:
    golden = case.golden
    video = _super_resolve(case, golden["interpolated"])
    held = case.limits.sr1_frames  # None: every window; 7: window 0 (its last frame is the next window's)
    diff = max_diff(video[:, :, :held], golden["sr1"][:, :, :held])
    by_window = {
        start: max_diff(video[:, :, start:], golden["sr1"][:, :, start:]) for start in (0, 7, 14, 21)
    }
    assert diff <= case.limits.sr1, f"sr1 max |diff| {diff}; from each window's start on: {by_window}"


def test_pixel_sr_windows_chain_on_upscaled_frames(case: Case) -> None:
    """13 frames: window 0 conditioned on IF-II, then a last window 5..12 on frame 5 as window 0 made it."""
    golden, m = case.golden, case.models
    clip = golden["interpolated"][:, :, :13]
    video = _super_resolve(case, clip)
    sr1 = (m.sr1_unet, m.sr1_scheduler, m.sr1_noising_scheduler, case.prompt)
    first_frame = golden["first_frame_sr"].unsqueeze(2)
    first = super_resolve_window(*sr1, clip[:, :, :8], first_frame, **_sr1_settings(case))
    last = super_resolve_window(*sr1, clip[:, :, 5:], first[:, :, 5:6], **_sr1_settings(case))
    assert torch.equal(video[:, :, :5], first[:, :, :5])
    assert torch.equal(video[:, :, 5:], last)


def test_latent_stage_input_matches_reference(case: Case) -> None:
    golden = case.golden
    frames = resize_frames(to_uint8_frames(golden["sr1"]), case.params.output_size)
    np.testing.assert_array_equal(frames, golden["sr2_input_uint8"].numpy())


def _latent_prompt(case: Case) -> PromptEmbeddings:
    params, m = case.params, case.models
    with torch.inference_mode():
        return encode_clip(
            m.clip_tokenizer, m.clip_encoder, params.prompt, params.latent_negative_prompt, CPU, torch.float32
        )


def _latent_sr(case: Case) -> torch.Tensor:
    params, m = case.params, case.models
    return latent_super_resolve(
        m.sr2_unet,
        m.vae,
        m.sr2_scheduler,
        _latent_prompt(case),
        case.golden["sr2_input_uint8"].numpy(),
        num_inference_steps=params.steps.sr2,
        strength=params.sr2_strength,
        guidance_scale=params.guidance.sr2,
        seed=params.seed,
    )


def test_latent_sr_matches_reference(case: Case) -> None:
    golden = case.golden
    final = _latent_sr(case)
    diff = max_diff(unit_range(final), unit_range(golden["final"]))
    assert diff <= LATENT_TOLERANCE, f"final max |diff| on [0, 1] frames {diff}"
    levels = np.abs(to_uint8_frames(final).astype(int) - golden["final_uint8"].numpy().astype(int)).max()
    assert levels <= 2, f"final_uint8 off by {levels} levels"


def test_latent_sr_equals_diffusers_video_to_video(case: Case) -> None:
    params, m = case.params, case.models
    pipeline = VideoToVideoSDPipeline(
        vae=m.vae,
        text_encoder=m.clip_encoder,
        tokenizer=m.clip_tokenizer,
        unet=m.sr2_unet,
        scheduler=m.sr2_scheduler,
    )
    pipeline.set_progress_bar_config(disable=True)
    expected = pipeline(
        params.prompt,
        negative_prompt=params.latent_negative_prompt,
        video=[Image.fromarray(frame) for frame in case.golden["sr2_input_uint8"].numpy()],
        strength=params.sr2_strength,
        num_inference_steps=params.steps.sr2,
        generator=torch.manual_seed(params.seed),
        output_type="pt",
    ).frames
    actual = unit_range(_latent_sr(case))[0].transpose(0, 1)
    assert torch.equal(actual, expected[0]), f"max |diff| {max_diff(actual, expected[0])}"
