"""Stage 1: keyframes from text with the base pixel model (show-1-base)."""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler

from models.pipelines.pixel_diffusion import (
    RGB_CHANNELS,
    LearnedRangeDDPM,
    PixelDenoiser,
    StepCallback,
    draw_noise,
    sample_ddpm,
)
from models.text import PromptEmbeddings


@torch.inference_mode()
def generate_keyframes(
    unet: torch.nn.Module,
    scheduler: DDPMScheduler,
    prompt: PromptEmbeddings,
    *,
    num_frames: int,
    size: tuple[int, int],
    num_inference_steps: int,
    guidance_scale: float,
    seed: int,
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """Denoise pure noise into (1, 3, num_frames, H, W) keyframes in model space."""
    device, dtype = prompt.positive.device, prompt.positive.dtype
    generator = torch.Generator("cpu").manual_seed(seed)
    height, width = size
    sample = draw_noise((1, RGB_CHANNELS, num_frames, height, width), generator, device, dtype)
    denoiser = PixelDenoiser(unet, prompt, guidance_scale)
    sampler = LearnedRangeDDPM(scheduler, num_inference_steps, device)
    return sample_ddpm(denoiser, sampler, sample, generator, on_step)
