"""Stage 4: pixel super-resolution of the whole video in overlapping windows (show-1-sr1).

Each window's condition is the bilinear 4x upscale of its low-resolution frames, noised to the
noise level the UNet is told as its class label, except the first frame: that one is given clean
and already super-resolved (by IF-II for the first window, by the previous window after that), which
carries appearance from window to window.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from models.noise import RGB_CHANNELS, draw_noise
from models.params import sr_window_starts
from models.pipelines.pixel_diffusion import PixelDenoiser, StepCallback, denoise
from models.schedulers import PixelScheduler
from models.text import PromptEmbeddings

# Called with a window's index and its output (1, 3, n, H, W) as each window ends.
WindowCallback = Callable[[int, torch.Tensor], None]


@torch.inference_mode()
def super_resolve_video(
    unet: torch.nn.Module,
    scheduler: PixelScheduler,
    noising_scheduler: PixelScheduler,
    prompt: PromptEmbeddings,
    video: torch.Tensor,
    first_frame: torch.Tensor | None,
    *,
    size: tuple[int, int],
    window: int,
    stride: int,
    num_inference_steps: int,
    guidance_scale: float,
    noise_level: int,
    seed: int,
    on_step: StepCallback | None = None,
    windows_done: Sequence[torch.Tensor] = (),
    on_window: WindowCallback | None = None,
) -> torch.Tensor:
    """(1, 3, F, h, w) video and its super-resolved frame 0 (1, 3, H, W) -> (1, 3, F, H, W).

    `windows_done`: the outputs of the first windows, from an earlier run; every window re-seeds, so
    the run goes on from the next one with the same result (frame 0 is then not needed)."""
    _, channels, num_frames, _, _ = video.shape
    upscaled = video.new_empty((1, channels, num_frames, *size))
    starts = sr_window_starts(num_frames, window, stride)
    for start, output in zip(starts, windows_done, strict=False):
        upscaled[:, :, start : min(start + window, num_frames)] = output
    for index, start in enumerate(starts[len(windows_done) :], start=len(windows_done)):
        end = min(start + window, num_frames)
        if start == 0 and first_frame is None:
            raise ValueError("the first pixel-SR window needs the super-resolved first frame")
        first = first_frame.unsqueeze(2) if start == 0 else upscaled[:, :, start : start + 1]
        upscaled[:, :, start:end] = super_resolve_window(
            unet,
            scheduler,
            noising_scheduler,
            prompt,
            video[:, :, start:end],
            first,
            size=size,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            noise_level=noise_level,
            seed=seed,
            on_step=on_step,
        )
        if on_window is not None:
            on_window(index, upscaled[:, :, start:end])
    return upscaled


@torch.inference_mode()
def super_resolve_window(
    unet: torch.nn.Module,
    scheduler: PixelScheduler,
    noising_scheduler: PixelScheduler,
    prompt: PromptEmbeddings,
    clip: torch.Tensor,
    first_frame: torch.Tensor,
    *,
    size: tuple[int, int],
    num_inference_steps: int,
    guidance_scale: float,
    noise_level: int,
    seed: int,
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """One window: (1, 3, n, h, w) clip and its clean first frame (1, 3, 1, H, W) -> (1, 3, n, H, W)."""
    generator = torch.Generator("cpu").manual_seed(seed)
    frames = clip.shape[2]
    sample = draw_noise((1, RGB_CHANNELS, frames, *size), generator, clip.device, clip.dtype)
    condition = noised_upscale(clip, size, noising_scheduler, noise_level, generator)
    condition[:, :, :1] = first_frame
    denoiser = PixelDenoiser(unet, prompt, guidance_scale, condition=condition, noise_level=noise_level)
    sampler = scheduler.sampler(num_inference_steps, clip.device)
    return denoise(denoiser, sampler, sample, generator, on_step)


def noised_upscale(
    video: torch.Tensor,
    size: tuple[int, int],
    noising_scheduler: PixelScheduler,
    noise_level: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Bilinear upscale of every frame of (B, 3, F, h, w), forward-diffused to `noise_level`."""
    batch, channels, frames, height, width = video.shape
    as_images = video.transpose(1, 2).reshape(batch * frames, channels, height, width)
    upscaled = F.interpolate(as_images, size, mode="bilinear", align_corners=True)
    upscaled = upscaled.reshape(batch, frames, channels, *size).transpose(1, 2)
    noise = draw_noise(tuple(upscaled.shape), generator, upscaled.device, upscaled.dtype)
    levels = torch.full((batch,), noise_level, dtype=torch.long, device=upscaled.device)
    return noising_scheduler.add_noise(upscaled, noise, levels)
