"""What a generation costs, per stage, from its parameters alone (no torch, no models).

A stage's UNet work grows with the pixels it denoises, the frames, the steps and the model; the unit
here is the PFLOP the full-size models spend (both guidance branches), calibrated on what
`python bench/bench.py --preset full --flops-only` counts at the reference defaults with the published
UNet configs (keyframes 0.785, interpolation 3.438, first-frame SR 0.262, pixel SR 13.086 with the
IF-II-M-sized show-1-sr1, latent SR 2.069 PFLOP; 19.640 in all), plus the VAE's encode and decode
of the output video in the latent stage (0.074 PFLOP, FlopCounterMode on bench/configs/show-1-sr2.vae.json
at 29 frames of 320x576). Each UNet scales linearly from there in denoised pixel-frames x steps: close
for the convolutions that dominate, a little low for large sizes where attention's quadratic share
grows; the VAE in output pixel-frames. The same numbers weigh progress,
predict a job's seconds from a worker's measured throughput, and cap what one request may ask for.
"""

from __future__ import annotations

from models.params import (
    FRAMES_BETWEEN_KEYFRAMES,
    LATENT_SCALE,
    STAGES,
    GenerationParams,
    latent_sr_steps,
    sr_window_starts,
)

# PFLOP at the reference defaults, per stage.
REFERENCE_PFLOP = {
    "keyframes": 0.785,
    "interpolation": 3.438,
    "first_frame_sr": 0.262,
    "pixel_sr": 13.086,
    "latent_sr": 2.069,
}
# The VAE's encode and decode of the output video, counted in the latent stage.
REFERENCE_VAE_PFLOP = 0.074


def _work(params: GenerationParams) -> dict[str, float]:
    """Denoised pixel-frames x steps per stage: what the UNet FLOPs scale with."""
    key_h, key_w = params.keyframe_size
    sr_h, sr_w = params.sr1_size
    out_h, out_w = params.output_size
    clip = FRAMES_BETWEEN_KEYFRAMES + 2  # each interpolation pass denoises a 5-frame clip
    windows = sr_window_starts(params.num_frames, params.window, params.stride)
    window_frames = min(params.window, params.num_frames)
    latent_pixels = (out_h // LATENT_SCALE) * (out_w // LATENT_SCALE)
    latent_steps = latent_sr_steps(params.steps.sr2, params.sr2_strength)
    return {
        "keyframes": params.num_keyframes * key_h * key_w * params.steps.base,
        "interpolation": (params.num_keyframes - 1) * clip * key_h * key_w * params.steps.interp,
        "first_frame_sr": sr_h * sr_w * params.steps.sr1_image,
        "pixel_sr": len(windows) * window_frames * sr_h * sr_w * params.steps.sr1,
        "latent_sr": params.num_frames * latent_pixels * latent_steps,
    }


def _vae_work(params: GenerationParams) -> float:
    out_h, out_w = params.output_size
    return params.num_frames * out_h * out_w


_REFERENCE_PARAMS = GenerationParams(prompt="reference", seed=0)
_REFERENCE_WORK = _work(_REFERENCE_PARAMS)


def stage_costs(params: GenerationParams) -> dict[str, float]:
    """PFLOP per stage (full-size models) that `params` ask for, in cascade order."""
    work = _work(params)
    costs = {stage: REFERENCE_PFLOP[stage] * work[stage] / _REFERENCE_WORK[stage] for stage in STAGES}
    costs["latent_sr"] += REFERENCE_VAE_PFLOP * _vae_work(params) / _vae_work(_REFERENCE_PARAMS)
    return costs


def total_cost(params: GenerationParams) -> float:
    return sum(stage_costs(params).values())


REFERENCE_COST = total_cost(_REFERENCE_PARAMS)
