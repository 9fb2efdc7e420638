"""The schedulers the cascade samples with, each as its checkpoint folder names it.

run_inference.py loads every stage with `from_pretrained` and replaces no scheduler, so each stage
samples with the class its folder's `scheduler_config.json` names (`_class_name`), configured as that
file says. The published showlab folders name DPM-Solver++ (sr1 with v-prediction); DeepFloyd's IF-II-L
and the older golden sets name DDPM with learned-range variance.

Every scheduler is checked when the cascade loads, before a worker takes a job: a class or an option
that the project does not implement raises CheckpointError naming the folder, the option and what is
supported. The reference ran diffusers 0.19.3; what differs in the diffusers pinned here is set back:
configs written by 0.19 lack `final_sigmas_type`, which current diffusers then takes as "zero", while
0.19's last DPM-Solver++ step used the schedule's smallest sigma ("sigma_min").

Pixel stages step frames as a batch (the reference reshapes a video to (B*F, C, H, W) before each
scheduler step), so dynamic thresholding finds one limit per frame.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler

from models.errors import CheckpointError
from models.noise import draw_frame_noise

DDPM = "DDPMScheduler"
DPM_SOLVER = "DPMSolverMultistepScheduler"


class PixelSampler(Protocol):
    """One run's schedule: the timesteps and the update x_t -> x_{t-1} at each of them."""

    timesteps: torch.Tensor

    def step(
        self,
        index: int,
        prediction: torch.Tensor,
        variance: torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """`prediction` and `variance` (B, 3, F, H, W) are the guided UNet halves; `generator` gives
        step noise for the algorithms that draw it, in the reference's order."""
        ...


@dataclass(frozen=True)
class PixelScheduler:
    """A pixel stage's scheduler class and options, checked; `sampler()` starts one run."""

    class_name: str
    config: Mapping[str, Any]
    make_sampler: Callable[[Mapping[str, Any], int, torch.device], PixelSampler]

    def sampler(self, num_inference_steps: int, device: torch.device) -> PixelSampler:
        return self.make_sampler(self.config, num_inference_steps, device)

    @property
    def prediction_type(self) -> str:
        return self.config["prediction_type"]

    @property
    def draws_step_noise(self) -> bool:
        return self.class_name == DDPM


# Options each implemented class accepts, with the values implemented; any other option is the
# library's own and implemented by it.
_DDPM_OPTIONS: dict[str, tuple[Any, ...]] = {
    "prediction_type": ("epsilon", "v_prediction", "sample"),
    "variance_type": ("learned_range", "fixed_small"),
    # The sampler steps back by a fixed stride, as diffusers 0.19 did; that equals stepping to the next
    # listed timestep only for the "leading" spacing.
    "timestep_spacing": ("leading",),
    "rescale_betas_zero_snr": (False,),
}
_DPM_SOLVER_OPTIONS: dict[str, tuple[Any, ...]] = {
    "prediction_type": ("epsilon", "v_prediction", "sample"),
    # The SDE variants draw step noise, in an order nobody has recorded against the reference.
    "algorithm_type": ("dpmsolver++", "dpmsolver"),
    "solver_type": ("midpoint", "heun"),
    "solver_order": (1, 2, 3),
    "variance_type": (None, "fixed_small", "learned_range", "learned"),
    "timestep_spacing": ("linspace", "leading", "trailing"),
    # Sigma spacings and final-step rules that diffusers 0.19.3 did not have, or computed otherwise.
    "use_karras_sigmas": (False,),
    "use_exponential_sigmas": (False,),
    "use_beta_sigmas": (False,),
    "use_lu_lambdas": (False,),
    "use_flow_sigmas": (False,),
    "euler_at_final": (False,),
    "rescale_betas_zero_snr": (False,),
}
# What the reference's diffusers did, where the pinned one defaults otherwise.
_DPM_SOLVER_AS_0_19 = {"final_sigmas_type": "sigma_min"}


def load_pixel_scheduler(folder: Path) -> PixelScheduler:
    """The scheduler of a pixel stage (base, interpolation, IF-II, sr1) from its folder."""
    config = read_scheduler_config(folder)
    name = config["_class_name"]
    if name == DDPM:
        return PixelScheduler(name, _checked(folder, DDPMScheduler, config, _DDPM_OPTIONS), DDPMSampler)
    if name == DPM_SOLVER:
        options = _checked(folder, DPMSolverMultistepScheduler, config, _DPM_SOLVER_OPTIONS)
        return PixelScheduler(name, options, DPMSolverSampler)
    raise _unsupported_class(folder, name, (DDPM, DPM_SOLVER))


def load_noising_scheduler(folder: Path) -> DDPMScheduler:
    """The scheduler that forward-diffuses a super-resolution stage's condition (`add_noise` only)."""
    config = read_scheduler_config(folder)
    if config["_class_name"] != DDPM:
        raise _unsupported_class(folder, config["_class_name"], (DDPM,))
    return DDPMScheduler.from_config(_checked(folder, DDPMScheduler, config, {}))


def load_latent_scheduler(folder: Path) -> DPMSolverMultistepScheduler:
    """The latent stage's scheduler (sr2), as diffusers 0.19.3's VideoToVideoSDPipeline ran it."""
    config = read_scheduler_config(folder)
    if config["_class_name"] != DPM_SOLVER:
        raise _unsupported_class(folder, config["_class_name"], (DPM_SOLVER,))
    options = _checked(folder, DPMSolverMultistepScheduler, config, _DPM_SOLVER_OPTIONS)
    return DPMSolverMultistepScheduler.from_config(options)


def read_scheduler_config(folder: Path) -> dict[str, Any]:
    path = Path(folder) / "scheduler_config.json"
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise CheckpointError(f"{folder}: folder or scheduler_config.json missing") from error
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path}: unreadable scheduler config: {error}") from error
    if not isinstance(config, dict) or not isinstance(config.get("_class_name"), str):
        raise CheckpointError(f"{path}: no _class_name naming the scheduler class")
    return config


def _checked(
    folder: Path, cls: type, config: Mapping[str, Any], implemented: Mapping[str, tuple[Any, ...]]
) -> dict[str, Any]:
    """The class's full configuration (its defaults filled in), every option's value implemented."""
    # The file's own values first, so that a value the library cannot take is named as the option it is.
    _refuse_unimplemented(folder, cls, config, implemented)
    try:
        configured = cls.from_config(config).config
    except (TypeError, ValueError, NotImplementedError) as error:
        raise CheckpointError(
            f"{folder}: {cls.__name__} cannot be configured as its file says: {error}"
        ) from error
    # Without the bookkeeping keys: `_use_default_values` would make from_config reset what is set here.
    full = {key: value for key, value in configured.items() if not key.startswith("_")}
    if cls is DPMSolverMultistepScheduler:
        full |= _DPM_SOLVER_AS_0_19
    _refuse_unimplemented(folder, cls, full, implemented)
    return full


def _refuse_unimplemented(
    folder: Path, cls: type, config: Mapping[str, Any], implemented: Mapping[str, tuple[Any, ...]]
) -> None:
    for option, values in implemented.items():
        if option in config and config[option] not in values:
            raise CheckpointError(
                f"{folder}: {cls.__name__} with {option}={config[option]!r} is not implemented "
                f"(implemented: {', '.join(repr(value) for value in values)})"
            )


def _unsupported_class(folder: Path, name: str, implemented: tuple[str, ...]) -> CheckpointError:
    return CheckpointError(
        f"{folder}: scheduler class {name!r} is not implemented (implemented: {', '.join(implemented)})"
    )


class DPMSolverSampler:
    """diffusers' DPM-Solver++, a fresh instance per run (it keeps the last model outputs)."""

    def __init__(self, config: Mapping[str, Any], num_inference_steps: int, device: torch.device) -> None:
        self.scheduler = DPMSolverMultistepScheduler.from_config(config)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        # Where the run starts, so the solver never searches its schedule for a device tensor.
        self.scheduler.set_begin_index(0)
        self.timesteps = self.scheduler.timesteps
        self.drop_variance = config.get("variance_type") not in ("learned", "learned_range")

    def step(
        self,
        index: int,
        prediction: torch.Tensor,
        variance: torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator,
    ) -> torch.Tensor:
        model_output = prediction if self.drop_variance else torch.cat([prediction, variance], dim=1)
        previous = self.scheduler.step(
            _frames_as_batch(model_output), self.timesteps[index], _frames_as_batch(sample)
        ).prev_sample
        return _batch_as_frames(previous, sample.shape)


def _frames_as_batch(video: torch.Tensor) -> torch.Tensor:
    """(B, C, F, H, W) -> (B*F, C, H, W), the layout the reference steps in."""
    batch, channels, frames, height, width = video.shape
    return video.permute(0, 2, 1, 3, 4).reshape(batch * frames, channels, height, width)


def _batch_as_frames(frames: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    batch, channels, num_frames, height, width = shape
    return frames.reshape(batch, num_frames, channels, height, width).permute(0, 2, 1, 3, 4)


@dataclass(frozen=True)
class _DDPMCoefficients:
    """Per-timestep scalars, as 0-d float32 tensors exactly as DDPMScheduler computes them."""

    timestep: int
    sqrt_one_minus_alpha_prod: torch.Tensor
    sqrt_alpha_prod: torch.Tensor
    x0_coeff: torch.Tensor
    xt_coeff: torch.Tensor
    posterior_variance: torch.Tensor
    min_log_variance: torch.Tensor
    max_log_variance: torch.Tensor


class DDPMSampler:
    """DDPM posterior sampling, written out so that one step-noise draw serves a whole batch.

    The arithmetic follows diffusers' DDPMScheduler.step expression by expression (same dtypes, same
    scalar tensors), but the step noise is drawn here, in the reference's layout: batch members that
    the reference ran as separate calls re-seeding one generator share one draw.
    """

    def __init__(self, config: Mapping[str, Any], num_inference_steps: int, device: torch.device) -> None:
        self.config = config
        scheduler = DDPMScheduler.from_config(config)
        scheduler.set_timesteps(num_inference_steps)
        timesteps = scheduler.timesteps.tolist()
        alphas_cumprod = scheduler.alphas_cumprod.to("cpu", torch.float32)
        # The reference's diffusers (0.19) steps back by a fixed stride rather than to the next listed
        # timestep; the two agree for the "leading" spacing (the only one accepted).
        stride = config["num_train_timesteps"] // num_inference_steps
        self.steps = [_ddpm_coefficients(alphas_cumprod, t, t - stride) for t in timesteps]
        # One upload; the UNet then takes a 0-d slice per step, never a host value.
        self.timesteps = torch.tensor(timesteps, dtype=torch.long, device=device)

    def step(
        self,
        index: int,
        prediction: torch.Tensor,
        variance: torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator,
    ) -> torch.Tensor:
        c = self.steps[index]
        pred_x0 = self._threshold(self._predicted_x0(c, prediction, sample))
        mean = c.x0_coeff * pred_x0 + c.xt_coeff * sample
        if c.timestep == 0:
            return mean
        _, _, frames, height, width = sample.shape
        noise = draw_frame_noise(frames, height, width, generator, sample.device, prediction.dtype)
        if self.config["variance_type"] == "learned_range":
            fraction = (variance + 1) / 2
            log_variance = fraction * c.max_log_variance + (1 - fraction) * c.min_log_variance
            return mean + torch.exp(0.5 * log_variance) * noise
        return mean + c.posterior_variance**0.5 * noise

    def _predicted_x0(
        self, c: _DDPMCoefficients, prediction: torch.Tensor, sample: torch.Tensor
    ) -> torch.Tensor:
        kind = self.config["prediction_type"]
        if kind == "epsilon":
            return (sample - c.sqrt_one_minus_alpha_prod * prediction) / c.sqrt_alpha_prod
        if kind == "v_prediction":
            return c.sqrt_alpha_prod * sample - c.sqrt_one_minus_alpha_prod * prediction
        return prediction

    def _threshold(self, pred_x0: torch.Tensor) -> torch.Tensor:
        if not self.config["thresholding"]:
            limit = self.config["clip_sample_range"]
            return pred_x0.clamp(-limit, limit) if self.config["clip_sample"] else pred_x0
        return dynamic_threshold(
            pred_x0, self.config["dynamic_thresholding_ratio"], self.config["sample_max_value"]
        )


def dynamic_threshold(pred_x0: torch.Tensor, ratio: float, max_value: float) -> torch.Tensor:
    """Imagen's dynamic thresholding with one percentile per frame, in float32 as diffusers upcasts."""
    batch, channels, frames, height, width = pred_x0.shape
    per_frame = pred_x0.transpose(1, 2).reshape(batch * frames, channels * height * width).float()
    limit = torch.quantile(per_frame.abs(), ratio, dim=1).clamp(min=1, max=max_value)
    limit = limit.reshape(batch, 1, frames, 1, 1)
    return (torch.clamp(pred_x0.float(), -limit, limit) / limit).to(pred_x0.dtype)


def _ddpm_coefficients(alphas_cumprod: torch.Tensor, t: int, prev_t: int) -> _DDPMCoefficients:
    alpha_prod_t = alphas_cumprod[t]
    alpha_prod_t_prev = alphas_cumprod[prev_t] if prev_t >= 0 else torch.tensor(1.0)
    beta_prod_t = 1 - alpha_prod_t
    beta_prod_t_prev = 1 - alpha_prod_t_prev
    current_alpha_t = alpha_prod_t / alpha_prod_t_prev
    current_beta_t = 1 - current_alpha_t
    posterior_variance = torch.clamp(beta_prod_t_prev / beta_prod_t * current_beta_t, min=1e-20)
    return _DDPMCoefficients(
        timestep=t,
        sqrt_one_minus_alpha_prod=beta_prod_t**0.5,
        sqrt_alpha_prod=alpha_prod_t**0.5,
        x0_coeff=(alpha_prod_t_prev**0.5 * current_beta_t) / beta_prod_t,
        xt_coeff=current_alpha_t**0.5 * beta_prod_t_prev / beta_prod_t,
        posterior_variance=posterior_variance,
        min_log_variance=torch.log(posterior_variance),
        max_log_variance=torch.log(current_beta_t),
    )
