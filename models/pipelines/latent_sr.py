"""Stage 5: latent expert super-resolution (show-1-sr2), SDEdit with a zeroscope-like video UNet.

The pixel video becomes uint8 frames resized with Pillow (as the reference hands PIL images to
diffusers' video-to-video pipeline), is encoded by the VAE, noised to the `strength` point of the
DPM-Solver++ schedule and denoised from there; only the last `strength` fraction of the steps runs,
which is where the sr2 UNet was trained (timesteps 0-900, "expert adaption").
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, UNet3DConditionModel
from PIL import Image

from models.noise import draw_noise
from models.params import latent_sr_steps
from models.pipelines.pixel_diffusion import StepCallback
from models.text import PromptEmbeddings


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """(1, 3, F, H, W) model space -> (F, H, W, 3) uint8: x*0.5+0.5, clamp, *255, truncate.

    Computed in the video's own dtype, on its device, as the reference does, so half-precision runs
    round the same way.
    """
    frames = (video[0] * 0.5 + 0.5).clamp(0, 1) * 255
    return frames.to(torch.uint8).permute(1, 2, 3, 0).cpu().numpy()


def from_uint8_frames(frames: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(F, H, W, 3) uint8 -> (1, 3, F, H, W) model space: full range, u -> u / 127.5 - 1 (0 -> -1, 255 -> 1).

    Each level goes to the value of `dtype` nearest u / 127.5 - 1 that `to_uint8_frames` (which
    truncates) maps back to u: u / 127.5 - 1 itself, rounded, can fall a hair below and come back as
    u - 1. So the frames of a run, made uint8 and brought back, are what `to_uint8_frames` made them.
    """
    levels = _uint8_levels(dtype)
    return levels[torch.from_numpy(np.ascontiguousarray(frames)).long()].permute(3, 0, 1, 2).unsqueeze(0)


def _uint8_levels(dtype: torch.dtype) -> torch.Tensor:
    levels = (torch.arange(256, dtype=torch.float64) / 127.5 - 1).to(dtype)
    target = torch.arange(256, dtype=torch.uint8)
    for _ in range(8):  # a level is at most a few ulps off
        back = torch.from_numpy(to_uint8_frames(levels.view(1, 1, 256, 1, 1)).reshape(256).copy())
        low = back < target
        if not low.any():
            return levels
        levels = torch.where(low, torch.nextafter(levels, torch.ones_like(levels)), levels)
    raise AssertionError(f"no {dtype} value maps back to every uint8 level")


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize (F, h, w, 3) uint8 frames to `size` (H, W) with Pillow's default filter."""
    height, width = size
    return np.stack([np.asarray(Image.fromarray(frame).resize((width, height))) for frame in frames])


@torch.inference_mode()
def latent_super_resolve(
    unet: UNet3DConditionModel,
    vae: AutoencoderKL,
    scheduler: DPMSolverMultistepScheduler,
    prompt: PromptEmbeddings,
    frames: np.ndarray,
    *,
    num_inference_steps: int,
    strength: float,
    guidance_scale: float,
    seed: int,
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """(F, H, W, 3) uint8 frames -> (1, 3, F, H, W) float32 decoder output (model space, unclamped)."""
    device, dtype = prompt.positive.device, prompt.positive.dtype
    generator = torch.Generator("cpu").manual_seed(seed)
    timesteps = _sdedit_timesteps(scheduler, num_inference_steps, strength, device)
    latents = _encode(vae, _frames_to_model_space(frames, device, dtype), generator)
    if on_step is not None:
        on_step()  # the VAE encode: a progress tick of its own (models/params.py LATENT_VAE_PASSES)
    noise = draw_noise(tuple(latents.shape), generator, device, dtype)
    latents = scheduler.add_noise(latents, noise, timesteps[:1])
    latents = _frames_to_video(latents)

    guided = guidance_scale > 1.0
    embeddings = prompt.for_guidance() if guided else prompt.positive
    for timestep in timesteps:
        model_input = torch.cat([latents, latents]) if guided else latents
        noise_pred = unet(model_input, timestep, encoder_hidden_states=embeddings).sample
        if guided:
            unconditional, conditional = noise_pred.chunk(2)
            noise_pred = unconditional + guidance_scale * (conditional - unconditional)
        latents = scheduler.step(noise_pred, timestep, latents).prev_sample
        if on_step is not None:
            on_step()
    decoded = _decode(vae, latents)
    if on_step is not None:
        on_step()
    return decoded


def _sdedit_timesteps(
    scheduler: DPMSolverMultistepScheduler, num_inference_steps: int, strength: float, device: torch.device
) -> torch.Tensor:
    scheduler.set_timesteps(num_inference_steps, device=device)
    start = (num_inference_steps - latent_sr_steps(num_inference_steps, strength)) * scheduler.order
    # Tells the multistep solver where it starts, so it never searches the schedule on the device.
    scheduler.set_begin_index(start)
    return scheduler.timesteps[start:]


def _frames_to_model_space(frames: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(F, H, W, 3) uint8 -> (F, 3, H, W) in [-1, 1], as diffusers' video processor normalises."""
    images = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
    return (2.0 * images - 1.0).to(device=device, dtype=dtype)


def _encode(vae: AutoencoderKL, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    # A posterior sample, not its mean: it consumes the generator before the SDEdit noise does.
    latents = vae.encode(images).latent_dist.sample(generator)
    return vae.config.scaling_factor * latents


def _frames_to_video(latents: torch.Tensor) -> torch.Tensor:
    """(F, C, h, w) -> (1, C, F, h, w)."""
    return latents.unsqueeze(0).transpose(1, 2)


def _decode(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    latents = 1 / vae.config.scaling_factor * latents
    frames = latents[0].transpose(0, 1)
    decoded = vae.decode(frames).sample
    return decoded.unsqueeze(0).transpose(1, 2).float()
