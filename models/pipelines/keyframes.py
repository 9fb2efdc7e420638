"""Stage 1: keyframes from text with the base pixel model (show-1-base)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from models.noise import RGB_CHANNELS, draw_noise
from models.pipelines.pixel_diffusion import PixelDenoiser, StepCallback, denoise
from models.schedulers import PixelScheduler
from models.text import PromptEmbeddings


@torch.inference_mode()
def generate_keyframes(
    unet: torch.nn.Module,
    scheduler: PixelScheduler,
    prompt: PromptEmbeddings,
    *,
    num_frames: int,
    size: tuple[int, int],
    num_inference_steps: int,
    guidance_scale: float,
    seed: int,
    dropout: bool = False,
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """Denoise pure noise into (1, 3, num_frames, H, W) keyframes in model space.

    `dropout=True` samples as the reference's run_inference.py does: the UNet in training mode, its
    dropout masks drawn from the default generators that `torch.manual_seed(seed)` seeds. On the CPU
    the initial noise, every step's masks and every step's noise then come from one generator in the
    reference's order (DPM-Solver++ draws no step noise: initial noise and masks only); on CUDA the
    masks come from the CUDA default generator, also seeded.
    """
    device, dtype = prompt.positive.device, prompt.positive.dtype
    generator = torch.manual_seed(seed) if dropout else torch.Generator("cpu").manual_seed(seed)
    height, width = size
    sample = draw_noise((1, RGB_CHANNELS, num_frames, height, width), generator, device, dtype)
    denoiser = PixelDenoiser(unet, prompt, guidance_scale)
    sampler = scheduler.sampler(num_inference_steps, device)
    with _training_mode(unet, dropout):
        return denoise(denoiser, sampler, sample, generator, on_step)


@contextmanager
def _training_mode(module: torch.nn.Module, enabled: bool) -> Iterator[None]:
    """Training mode for the stage only: the model is shared with every other job of the worker."""
    if not enabled:
        yield
        return
    was_training = module.training
    module.train()
    try:
        yield
    finally:
        module.train(was_training)
