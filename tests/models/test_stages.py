"""Each stage, fed the recorded input of that stage, against the reference's recorded output."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import IFSuperResolutionPipeline, VideoToVideoSDPipeline
from PIL import Image

from models.loading import CascadeModels, load_models
from models.pipelines.first_frame_sr import upscale_first_frame
from models.pipelines.interpolation import interpolate_keyframes
from models.pipelines.keyframes import generate_keyframes
from models.pipelines.latent_sr import latent_super_resolve, resize_frames, to_uint8_frames
from models.pipelines.pixel_sr import super_resolve_video, super_resolve_window
from models.text import PromptEmbeddings, encode_clip, encode_t5
from tests.models.golden_case import MODELS_DIR, case_params, max_diff, recorded, requires_golden, unit_range

pytestmark = requires_golden

CPU = torch.device("cpu")
PIXEL_TOLERANCE = 1e-4
# IF-II on the tiny random weights amplifies float32 rounding: on this project's CPUs the reference's own
# recorded output is 1.04e-4 from a float64 run of the same computation, and diffusers'
# IFSuperResolutionPipeline (bit-identical to this stage, tested below) lands 1.01e-4 to 1.17e-4 from it
# depending on thread count. The exact-match test against that pipeline carries the parity claim.
FIRST_FRAME_TOLERANCE = 2e-4
# The tiny random sr1 model is chaotic: perturbing its recorded inputs by 1e-6 moves window 0 by 2e-4 and
# every later window about 10x more than the one before (it is conditioned on that one's output). Float32
# rounding differences between CPUs therefore put window 0 at 2.5e-4 to 3.5e-4 from the recording here,
# and the reference's own code, run here, lands on the same numbers as this implementation, bit for bit.
SR1_FIRST_WINDOW_TOLERANCE = 5e-4
LATENT_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def models() -> CascadeModels:
    loaded = load_models(MODELS_DIR, torch.float32)
    # As the cascade and the reference run it; slicing also changes how the VAE encoder batches.
    loaded.vae.enable_slicing()
    return loaded


@pytest.fixture(scope="module")
def prompt() -> PromptEmbeddings:
    golden = recorded()
    return PromptEmbeddings(golden["prompt_embeds"], golden["negative_prompt_embeds"])


def test_t5_prompt_embeddings_match_reference(models: CascadeModels) -> None:
    params = case_params()
    with torch.inference_mode():
        embeddings = encode_t5(
            models.t5_tokenizer, models.t5_encoder, params.prompt, params.negative_prompt, CPU, torch.float32
        )
    golden = recorded()
    positive = max_diff(embeddings.positive, golden["prompt_embeds"])
    negative = max_diff(embeddings.negative, golden["negative_prompt_embeds"])
    assert positive <= PIXEL_TOLERANCE and negative <= PIXEL_TOLERANCE, f"max |diff| {positive}, {negative}"


def test_keyframes_match_reference(models: CascadeModels, prompt: PromptEmbeddings) -> None:
    params = case_params()
    keyframes = generate_keyframes(
        models.base_unet,
        models.base_scheduler,
        prompt,
        num_frames=params.num_keyframes,
        size=params.keyframe_size,
        num_inference_steps=params.steps.base,
        guidance_scale=params.guidance.base,
        seed=params.seed,
    )
    diff = max_diff(keyframes, recorded()["keyframes"])
    assert diff <= PIXEL_TOLERANCE, f"keyframes max |diff| {diff}"


def _interpolate(
    models: CascadeModels, prompt: PromptEmbeddings, max_pairs: int | None, unet: object = None
) -> torch.Tensor:
    params = case_params()
    return interpolate_keyframes(
        unet or models.interp_unet,
        models.interp_scheduler,
        prompt,
        recorded()["keyframes"],
        num_inference_steps=params.steps.interp,
        guidance_scale=params.guidance.interp,
        seed=params.seed,
        max_pairs_per_batch=max_pairs,
    )


def test_interpolation_matches_reference(models: CascadeModels, prompt: PromptEmbeddings) -> None:
    diff = max_diff(_interpolate(models, prompt, None), recorded()["interpolated"])
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


def test_interpolation_batched_is_exactly_pair_by_pair(
    models: CascadeModels, prompt: PromptEmbeddings
) -> None:
    unet = BatchInvariantUNet()
    batched = _interpolate(models, prompt, None, unet)
    assert torch.equal(batched, _interpolate(models, prompt, 1, unet))
    assert torch.equal(batched, _interpolate(models, prompt, 3, unet))


def test_interpolation_batched_matches_pair_by_pair(models: CascadeModels, prompt: PromptEmbeddings) -> None:
    batched = _interpolate(models, prompt, None)
    pair_by_pair = _interpolate(models, prompt, 1)
    diff = max_diff(batched, pair_by_pair)
    assert diff <= PIXEL_TOLERANCE, f"batched vs pair by pair max |diff| {diff}"


def _first_frame_sr(models: CascadeModels, prompt: PromptEmbeddings) -> torch.Tensor:
    params = case_params()
    return upscale_first_frame(
        models.if_unet,
        models.if_scheduler,
        models.if_noising_scheduler,
        prompt,
        recorded()["interpolated"][:, :, 0],
        size=params.sr1_size,
        num_inference_steps=params.steps.sr1_image,
        guidance_scale=params.guidance.sr1_image,
        noise_level=params.noise_level_sr1_image,
        seed=params.seed,
    )


def test_first_frame_sr_matches_reference(models: CascadeModels, prompt: PromptEmbeddings) -> None:
    diff = max_diff(_first_frame_sr(models, prompt), recorded()["first_frame_sr"])
    assert diff <= FIRST_FRAME_TOLERANCE, f"first_frame_sr max |diff| {diff}"


def test_first_frame_sr_equals_diffusers_if_pipeline(models: CascadeModels, prompt: PromptEmbeddings) -> None:
    params = case_params()
    pipeline = IFSuperResolutionPipeline(
        tokenizer=None,
        text_encoder=None,
        unet=models.if_unet,
        scheduler=models.if_scheduler,
        image_noising_scheduler=models.if_noising_scheduler,
        safety_checker=None,
        feature_extractor=None,
        watermarker=None,
        requires_safety_checker=False,
    )
    pipeline.set_progress_bar_config(disable=True)
    expected = pipeline(
        image=recorded()["interpolated"][:, :, 0],
        prompt_embeds=prompt.positive,
        negative_prompt_embeds=prompt.negative,
        height=params.sr1_size[0],
        width=params.sr1_size[1],
        num_inference_steps=params.steps.sr1_image,
        guidance_scale=params.guidance.sr1_image,
        noise_level=params.noise_level_sr1_image,
        generator=torch.manual_seed(params.seed),
        output_type="pt",
    ).images
    actual = _first_frame_sr(models, prompt)
    assert torch.equal(actual, expected), f"max |diff| {max_diff(actual, expected)}"


def _sr1_settings() -> dict:
    params = case_params()
    return {
        "size": params.sr1_size,
        "num_inference_steps": params.steps.sr1,
        "guidance_scale": params.guidance.sr1,
        "noise_level": params.noise_level_sr1,
        "seed": params.seed,
    }


def _super_resolve(models: CascadeModels, prompt: PromptEmbeddings, video: torch.Tensor) -> torch.Tensor:
    params = case_params()
    return super_resolve_video(
        models.sr1_unet,
        models.sr1_scheduler,
        models.sr1_noising_scheduler,
        prompt,
        video,
        recorded()["first_frame_sr"],
        window=params.window,
        stride=params.stride,
        **_sr1_settings(),
    )


def test_pixel_sr_first_window_matches_reference(models: CascadeModels, prompt: PromptEmbeddings) -> None:
    params = case_params()
    golden = recorded()
    video = _super_resolve(models, prompt, golden["interpolated"])
    kept = params.stride  # the window's last frame is regenerated by the next window
    diff = max_diff(video[:, :, :kept], golden["sr1"][:, :, :kept])
    later = {start: max_diff(video[:, :, start:], golden["sr1"][:, :, start:]) for start in (7, 14, 21)}
    assert diff <= SR1_FIRST_WINDOW_TOLERANCE, f"sr1 window 0 max |diff| {diff}; frames 7/14/21 on: {later}"


def test_pixel_sr_windows_chain_on_upscaled_frames(models: CascadeModels, prompt: PromptEmbeddings) -> None:
    """13 frames: window 0 conditioned on IF-II, then a last window 5..12 on frame 5 as window 0 made it."""
    golden = recorded()
    clip = golden["interpolated"][:, :, :13]
    video = _super_resolve(models, prompt, clip)
    sr1 = (models.sr1_unet, models.sr1_scheduler, models.sr1_noising_scheduler, prompt)
    first_frame = golden["first_frame_sr"].unsqueeze(2)
    first = super_resolve_window(*sr1, clip[:, :, :8], first_frame, **_sr1_settings())
    last = super_resolve_window(*sr1, clip[:, :, 5:], first[:, :, 5:6], **_sr1_settings())
    assert torch.equal(video[:, :, :5], first[:, :, :5])
    assert torch.equal(video[:, :, 5:], last)


def test_latent_stage_input_matches_reference() -> None:
    golden = recorded()
    frames = resize_frames(to_uint8_frames(golden["sr1"]), case_params().output_size)
    np.testing.assert_array_equal(frames, golden["sr2_input_uint8"].numpy())


def _latent_prompt(models: CascadeModels) -> PromptEmbeddings:
    params = case_params()
    with torch.inference_mode():
        return encode_clip(
            models.clip_tokenizer,
            models.clip_encoder,
            params.prompt,
            params.latent_negative_prompt,
            CPU,
            torch.float32,
        )


def _latent_sr(models: CascadeModels) -> torch.Tensor:
    params = case_params()
    return latent_super_resolve(
        models.sr2_unet,
        models.vae,
        models.sr2_scheduler,
        _latent_prompt(models),
        recorded()["sr2_input_uint8"].numpy(),
        num_inference_steps=params.steps.sr2,
        strength=params.sr2_strength,
        guidance_scale=params.guidance.sr2,
        seed=params.seed,
    )


def test_latent_sr_matches_reference(models: CascadeModels) -> None:
    golden = recorded()
    final = _latent_sr(models)
    diff = max_diff(unit_range(final), unit_range(golden["final"]))
    assert diff <= LATENT_TOLERANCE, f"final max |diff| on [0, 1] frames {diff}"
    levels = np.abs(to_uint8_frames(final).astype(int) - golden["final_uint8"].numpy().astype(int)).max()
    assert levels <= 2, f"final_uint8 off by {levels} levels"


def test_latent_sr_equals_diffusers_video_to_video(models: CascadeModels) -> None:
    params = case_params()
    pipeline = VideoToVideoSDPipeline(
        vae=models.vae,
        text_encoder=models.clip_encoder,
        tokenizer=models.clip_tokenizer,
        unet=models.sr2_unet,
        scheduler=models.sr2_scheduler,
    )
    pipeline.set_progress_bar_config(disable=True)
    expected = pipeline(
        params.prompt,
        negative_prompt=params.latent_negative_prompt,
        video=[Image.fromarray(frame) for frame in recorded()["sr2_input_uint8"].numpy()],
        strength=params.sr2_strength,
        num_inference_steps=params.steps.sr2,
        generator=torch.manual_seed(params.seed),
        output_type="pt",
    ).frames
    actual = unit_range(_latent_sr(models))[0].transpose(0, 1)
    assert torch.equal(actual, expected[0]), f"max |diff| {max_diff(actual, expected[0])}"
