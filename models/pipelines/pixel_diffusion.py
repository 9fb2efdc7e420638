"""The denoising loop shared by every IF-style pixel stage of the cascade, whatever its scheduler.

Each stage denoises an RGB video (B, 3, F, H, W) with a UNet that predicts 6 channels: the scheduler's
prediction (epsilon or v) and a variance fraction. Guidance mixes the prediction halves of an
unconditional and a conditional branch run as one UNet batch; the variance comes from the conditional
branch. The stage's sampler (models/schedulers.py: DDPM or DPM-Solver++, as the folder names it)
turns that into the next sample.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from models.schedulers import PixelSampler
from models.text import PromptEmbeddings

StepCallback = Callable[[], None]


class PixelDenoiser:
    """A UNet with everything it sees besides the noisy sample and the timestep.

    `condition` (B, C', F, H, W) is appended to the sample's channels (interpolation and super-resolution
    inputs); `noise_level` is the class label of the super-resolution UNets.
    """

    def __init__(
        self,
        unet: Callable[..., Any],
        prompt: PromptEmbeddings,
        guidance_scale: float,
        *,
        batch: int = 1,
        condition: torch.Tensor | None = None,
        noise_level: int | None = None,
    ) -> None:
        self.unet = unet
        self.guidance_scale = guidance_scale
        # The reference runs a single branch when guidance would be a no-op.
        self.guided = guidance_scale > 1.0
        self.embeddings = prompt.for_guidance(batch) if self.guided else prompt.positive.expand(batch, -1, -1)
        self.condition = condition
        self.class_labels = None
        if noise_level is not None:
            labels = batch * (2 if self.guided else 1)
            self.class_labels = torch.full(
                (labels,), noise_level, dtype=torch.long, device=prompt.positive.device
            )

    def predict(self, sample: torch.Tensor, timestep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The guided prediction and the conditional branch's variance fraction, each shaped like `sample`."""
        model_input = sample if self.condition is None else torch.cat([sample, self.condition], dim=1)
        if self.guided:
            model_input = torch.cat([model_input, model_input])
        output = self.unet(
            model_input, timestep, encoder_hidden_states=self.embeddings, class_labels=self.class_labels
        ).sample
        channels = sample.shape[1]
        if not self.guided:
            return output[:, :channels], output[:, channels:]
        unconditional, conditional = output.chunk(2)
        prediction_uncond = unconditional[:, :channels]
        prediction_cond, variance = conditional[:, :channels], conditional[:, channels:]
        return prediction_uncond + self.guidance_scale * (prediction_cond - prediction_uncond), variance


def denoise(
    denoiser: PixelDenoiser,
    sampler: PixelSampler,
    sample: torch.Tensor,
    generator: torch.Generator,
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """Run every step of `sampler` from the initial noise `sample` (B, 3, F, H, W).

    Batch members share each step's noise (where the algorithm draws any), as B separate reference
    runs from one seed would.
    """
    for index, timestep in enumerate(sampler.timesteps):
        prediction, variance = denoiser.predict(sample, timestep)
        sample = sampler.step(index, prediction, variance, sample, generator)
        if on_step is not None:
            on_step()
    return sample
