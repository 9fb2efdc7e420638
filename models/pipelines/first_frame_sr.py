"""Stage 3: DeepFloyd IF-II super-resolves the first frame; it conditions the first pixel-SR window.

The same learned-range DDPM as the video stages, run on a single image: the 2D UNet sees it as a
one-frame video, so the image is kept as (1, 3, 1, H, W) throughout.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch
from diffusers import UNet2DConditionModel

from models.noise import RGB_CHANNELS, draw_noise
from models.pipelines.pixel_diffusion import PixelDenoiser, StepCallback, denoise
from models.pipelines.pixel_sr import noised_upscale
from models.schedulers import PixelScheduler
from models.text import PromptEmbeddings


class ImageUNetOnFrames:
    """Calls a 2D UNet on single-frame videos (B, C, 1, H, W)."""

    def __init__(self, unet: UNet2DConditionModel) -> None:
        self.unet = unet

    def __call__(self, sample: torch.Tensor, timestep: torch.Tensor, **kwargs: Any) -> SimpleNamespace:
        output = self.unet(sample.squeeze(2), timestep, **kwargs).sample
        return SimpleNamespace(sample=output.unsqueeze(2))


@torch.inference_mode()
def upscale_first_frame(
    unet: UNet2DConditionModel,
    scheduler: PixelScheduler,
    noising_scheduler: PixelScheduler,
    prompt: PromptEmbeddings,
    image: torch.Tensor,
    *,
    size: tuple[int, int],
    num_inference_steps: int,
    guidance_scale: float,
    noise_level: int,
    seed: int,
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """(1, 3, h, w) low-resolution frame -> (1, 3, H, W) at `size`, in model space."""
    generator = torch.Generator("cpu").manual_seed(seed)
    height, width = size
    sample = draw_noise((1, RGB_CHANNELS, 1, height, width), generator, image.device, image.dtype)
    condition = noised_upscale(image.unsqueeze(2), size, noising_scheduler, noise_level, generator)
    denoiser = PixelDenoiser(
        ImageUNetOnFrames(unet), prompt, guidance_scale, condition=condition, noise_level=noise_level
    )
    sampler = scheduler.sampler(num_inference_steps, image.device)
    return denoise(denoiser, sampler, sample, generator, on_step).squeeze(2)
