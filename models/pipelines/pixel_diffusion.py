"""The pixel-space DDPM sampler shared by every IF-style stage of the cascade.

Each stage denoises an RGB video (B, 3, F, H, W) with a UNet that predicts 6 channels: epsilon and a
learned interpolation between the DDPM posterior's smallest and largest log-variance. Guidance mixes
the epsilon halves of an unconditional and a conditional branch run as one UNet batch; the variance
comes from the conditional branch. The predicted x0 is dynamically thresholded per frame.

The arithmetic follows diffusers' DDPMScheduler.step expression by expression (same dtypes, same
scalar tensors), so results match the reference, but the step noise is an argument: batch members
that the reference ran as separate calls re-seeding one generator share one noise draw here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import DDPMScheduler

from models.text import PromptEmbeddings

RGB_CHANNELS = 3

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

    def predict_noise(
        self, sample: torch.Tensor, timestep: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Guided epsilon and the learned variance fraction, each shaped like `sample`."""
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
        epsilon_uncond = unconditional[:, :channels]
        epsilon_cond, variance = conditional[:, :channels], conditional[:, channels:]
        return epsilon_uncond + self.guidance_scale * (epsilon_cond - epsilon_uncond), variance


@dataclass(frozen=True)
class _StepCoefficients:
    """Per-timestep scalars, as 0-d float32 tensors exactly as DDPMScheduler computes them."""

    timestep: int
    sqrt_one_minus_alpha_prod: torch.Tensor
    sqrt_alpha_prod: torch.Tensor
    x0_coeff: torch.Tensor
    xt_coeff: torch.Tensor
    min_log_variance: torch.Tensor
    max_log_variance: torch.Tensor


class LearnedRangeDDPM:
    """DDPM posterior sampling for one schedule of a DDPMScheduler configured as IF's are."""

    def __init__(self, scheduler: DDPMScheduler, num_inference_steps: int, device: torch.device) -> None:
        config = scheduler.config
        _require(config.prediction_type == "epsilon", "prediction_type", config.prediction_type)
        _require(config.variance_type == "learned_range", "variance_type", config.variance_type)
        self.config = config
        scheduler.set_timesteps(num_inference_steps)
        timesteps = scheduler.timesteps.tolist()
        alphas_cumprod = scheduler.alphas_cumprod.to("cpu", torch.float32)
        # The reference's diffusers (0.19) steps back by a fixed stride rather than to the next listed
        # timestep; the two agree for the "leading" spacing every Show-1 and IF config uses.
        stride = config.num_train_timesteps // num_inference_steps
        self.steps = [_coefficients(alphas_cumprod, t, t - stride) for t in timesteps]
        # One upload; the UNet then takes a 0-d slice per step, never a host value.
        self.timestep_tensor = torch.tensor(timesteps, dtype=torch.long, device=device)

    def step(
        self,
        index: int,
        epsilon: torch.Tensor,
        variance: torch.Tensor,
        sample: torch.Tensor,
        noise: torch.Tensor,
    ) -> torch.Tensor:
        """x_t -> x_{t-1}; `noise` broadcasts against `sample` and is ignored at t = 0."""
        c = self.steps[index]
        pred_x0 = (sample - c.sqrt_one_minus_alpha_prod * epsilon) / c.sqrt_alpha_prod
        pred_x0 = self._threshold(pred_x0)
        mean = c.x0_coeff * pred_x0 + c.xt_coeff * sample
        if c.timestep == 0:
            return mean
        fraction = (variance + 1) / 2
        log_variance = fraction * c.max_log_variance + (1 - fraction) * c.min_log_variance
        return mean + torch.exp(0.5 * log_variance) * noise

    def _threshold(self, pred_x0: torch.Tensor) -> torch.Tensor:
        if not self.config.thresholding:
            limit = self.config.clip_sample_range
            return pred_x0.clamp(-limit, limit) if self.config.clip_sample else pred_x0
        return dynamic_threshold(
            pred_x0, self.config.dynamic_thresholding_ratio, self.config.sample_max_value
        )

    def needs_noise(self, index: int) -> bool:
        return self.steps[index].timestep > 0


def dynamic_threshold(pred_x0: torch.Tensor, ratio: float, max_value: float) -> torch.Tensor:
    """Imagen's dynamic thresholding with one percentile per frame.

    The reference steps the video as a batch of frames (B*F, C, H, W), so every frame gets its own
    threshold; the quantile runs in float32 as diffusers upcasts it.
    """
    batch, channels, frames, height, width = pred_x0.shape
    per_frame = pred_x0.transpose(1, 2).reshape(batch * frames, channels * height * width).float()
    limit = torch.quantile(per_frame.abs(), ratio, dim=1).clamp(min=1, max=max_value)
    limit = limit.reshape(batch, 1, frames, 1, 1)
    return (torch.clamp(pred_x0.float(), -limit, limit) / limit).to(pred_x0.dtype)


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


def sample_ddpm(
    denoiser: PixelDenoiser,
    sampler: LearnedRangeDDPM,
    sample: torch.Tensor,
    generator: torch.Generator,
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """Run every step of `sampler` from the initial noise `sample` (B, 3, F, H, W).

    All B members use the same step noise, as B separate reference runs from one seed would.
    """
    _, _, frames, height, width = sample.shape
    for index in range(len(sampler.steps)):
        epsilon, variance = denoiser.predict_noise(sample, sampler.timestep_tensor[index])
        noise = None
        if sampler.needs_noise(index):
            noise = draw_frame_noise(frames, height, width, generator, sample.device, epsilon.dtype)
        sample = sampler.step(index, epsilon, variance, sample, noise)
        if on_step is not None:
            on_step()
    return sample


def _coefficients(alphas_cumprod: torch.Tensor, t: int, prev_t: int) -> _StepCoefficients:
    alpha_prod_t = alphas_cumprod[t]
    alpha_prod_t_prev = alphas_cumprod[prev_t] if prev_t >= 0 else torch.tensor(1.0)
    beta_prod_t = 1 - alpha_prod_t
    beta_prod_t_prev = 1 - alpha_prod_t_prev
    current_alpha_t = alpha_prod_t / alpha_prod_t_prev
    current_beta_t = 1 - current_alpha_t
    posterior_variance = torch.clamp(beta_prod_t_prev / beta_prod_t * current_beta_t, min=1e-20)
    return _StepCoefficients(
        timestep=t,
        sqrt_one_minus_alpha_prod=beta_prod_t**0.5,
        sqrt_alpha_prod=alpha_prod_t**0.5,
        x0_coeff=(alpha_prod_t_prev**0.5 * current_beta_t) / beta_prod_t,
        xt_coeff=current_alpha_t**0.5 * beta_prod_t_prev / beta_prod_t,
        min_log_variance=torch.log(posterior_variance),
        max_log_variance=torch.log(current_beta_t),
    )


def _require(condition: bool, option: str, value: object) -> None:
    if not condition:
        raise ValueError(f"pixel stages support only the IF scheduler setup; unsupported {option}={value!r}")
