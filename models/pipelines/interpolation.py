"""Stage 2: three new frames between every pair of keyframes (show-1-interpolation).

Pair i is a 5-frame clip whose condition is the trilinear blend of keyframes i and i+1, marked by a
mask channel on its end frames. The reference denoises the pairs one after another, each from the
same initial noise and a generator re-seeded per pair, so every pair sees the same noise at every
step: the pairs are independent runs that can share one UNet batch and one noise draw.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models.noise import RGB_CHANNELS, draw_noise
from models.params import FRAMES_BETWEEN_KEYFRAMES
from models.pipelines.pixel_diffusion import PixelDenoiser, StepCallback, denoise
from models.schedulers import PixelScheduler
from models.text import PromptEmbeddings

CLIP_FRAMES = FRAMES_BETWEEN_KEYFRAMES + 2


@torch.inference_mode()
def interpolate_keyframes(
    unet: torch.nn.Module,
    scheduler: PixelScheduler,
    prompt: PromptEmbeddings,
    keyframes: torch.Tensor,
    *,
    num_inference_steps: int,
    guidance_scale: float,
    seed: int,
    max_pairs_per_batch: int | None = None,
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """(1, 3, K, H, W) keyframes -> (1, 3, 4(K-1)+1, H, W) video in model space.

    `max_pairs_per_batch` bounds how many pairs share a UNet batch (default: all); the output does not
    depend on it. `on_step` ticks `num_inference_steps` times, evenly over the work.
    """
    _, _, num_keyframes, height, width = keyframes.shape
    init_noise = draw_noise(
        (1, RGB_CHANNELS, CLIP_FRAMES, height, width),
        torch.Generator("cpu").manual_seed(seed),
        keyframes.device,
        keyframes.dtype,
    )
    conditions = pair_conditions(keyframes)
    batches = conditions.split(max_pairs_per_batch or conditions.shape[0])
    # The stage has `num_inference_steps` steps of progress whatever the batching: with several batches,
    # one step of progress is a step of every batch.
    tick = _every(len(batches), on_step) if on_step is not None else None
    clips = [
        _denoise_pairs(
            unet, scheduler, prompt, init_noise, batch, num_inference_steps, guidance_scale, seed, tick
        )
        for batch in batches
    ]
    return assemble_clips(torch.cat(clips))


def _every(count: int, on_step: StepCallback) -> StepCallback:
    """`on_step` once every `count` calls."""
    calls = 0

    def tick() -> None:
        nonlocal calls
        calls += 1
        if calls % count == 0:
            on_step()

    return tick


def pair_conditions(keyframes: torch.Tensor) -> torch.Tensor:
    """(1, 3, K, H, W) -> (K-1, 4, 5, H, W): blended RGB plus the known-frame mask, per pair."""
    _, _, _, height, width = keyframes.shape
    ends = torch.stack([keyframes[0, :, :-1], keyframes[0, :, 1:]], dim=2).transpose(0, 1)
    blended = F.interpolate(ends, (CLIP_FRAMES, height, width), mode="trilinear", align_corners=True)
    mask = torch.zeros_like(blended[:, :1])
    mask[:, :, [0, -1]] = 1
    return torch.cat([blended, mask], dim=1)


def assemble_clips(clips: torch.Tensor) -> torch.Tensor:
    """Write clip i to frames 4i..4i+4 in pair order, so each shared end frame is the later clip's."""
    pairs, channels, _, height, width = clips.shape
    step = CLIP_FRAMES - 1
    video = clips.new_empty((1, channels, pairs * step + 1, height, width))
    for index, clip in enumerate(clips):
        video[0, :, index * step : index * step + CLIP_FRAMES] = clip
    return video


def _denoise_pairs(
    unet: torch.nn.Module,
    scheduler: PixelScheduler,
    prompt: PromptEmbeddings,
    init_noise: torch.Tensor,
    conditions: torch.Tensor,
    num_inference_steps: int,
    guidance_scale: float,
    seed: int,
    on_step: StepCallback | None,
) -> torch.Tensor:
    pairs = conditions.shape[0]
    denoiser = PixelDenoiser(unet, prompt, guidance_scale, batch=pairs, condition=conditions)
    sampler = scheduler.sampler(num_inference_steps, init_noise.device)
    sample = init_noise.expand(pairs, -1, -1, -1, -1)
    # Re-seeded exactly as the reference re-seeds for each pair.
    generator = torch.Generator("cpu").manual_seed(seed)
    return denoise(denoiser, sampler, sample, generator, on_step)
