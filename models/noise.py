"""Random draws in the reference's order and layout.

The reference seeds every stage with `torch.manual_seed(seed)`, a CPU generator, so every draw is
made on the CPU and moved to the device: the same numbers on any device.
"""

from __future__ import annotations

import torch

RGB_CHANNELS = 3


def draw_noise(
    shape: tuple[int, ...], generator: torch.Generator, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """A draw from the CPU generator, moved to `device`: the reference's seeding is CPU-only."""
    pinned = device.type == "cuda"
    noise = torch.randn(shape, generator=generator, dtype=dtype, pin_memory=pinned)
    return noise.to(device, non_blocking=pinned)


def draw_frame_noise(
    frames: int, height: int, width: int, generator: torch.Generator, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """Step noise in the reference's layout, drawn as (F, 3, H, W) frames, returned as (1, 3, F, H, W)."""
    noise = draw_noise((frames, RGB_CHANNELS, height, width), generator, device, dtype)
    return noise.unsqueeze(0).transpose(1, 2)
