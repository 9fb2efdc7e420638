"""Parameters of one Show-1 generation, with the reference implementation's defaults.

Every number the cascade uses is here, so a stored `to_dict()` reproduces a video exactly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

STAGES = ("keyframes", "interpolation", "first_frame_sr", "pixel_sr", "latent_sr")

# diffusers' VideoToVideoSDPipeline default, which the reference's sr2 call leaves in place.
VIDEO_TO_VIDEO_DEFAULT_GUIDANCE = 15.0
# Frames the interpolation model adds between two keyframes (it denoises 5-frame clips).
FRAMES_BETWEEN_KEYFRAMES = 3
SR1_SCALE = 4
# The sr2 VAE downsamples by 8; other output sizes would be silently resized by the video processor.
LATENT_SCALE = 8
# The published pixel UNets halve keyframes three times (four blocks), and IF-II and sr1 see them 4x
# larger through five blocks: keyframe sides that are not multiples of 8 break a skip connection.
KEYFRAME_MULTIPLE = 8
# How the keyframe stage treats the base UNet's dropout. "reference": as run_inference.py runs it, in
# training mode (its pipeline's enable_model_cpu_offload() calls unet.train()), so the temporal
# convolutions drop activations with p=0.1; the published samples were made that way. "off": eval mode,
# deterministic, what diffusers' own IF pipeline would do (and what the recorded golden cascades used).
KeyframeDropout = Literal["reference", "off"]
KEYFRAME_DROPOUT_MODES: tuple[str, ...] = get_args(KeyframeDropout)


@dataclass(frozen=True)
class StageSteps:
    base: int = 75
    interp: int = 75
    sr1_image: int = 70
    sr1: int = 125
    sr2: int = 50


@dataclass(frozen=True)
class StageGuidance:
    base: float = 9.0
    interp: float = 4.0
    sr1_image: float = 4.0
    sr1: float = 7.0
    sr2: float = VIDEO_TO_VIDEO_DEFAULT_GUIDANCE


@dataclass(frozen=True)
class GenerationParams:
    prompt: str
    seed: int
    negative_prompt: str = ""
    latent_negative_prompt: str = "low resolution, blur"
    num_keyframes: int = 8
    keyframe_size: tuple[int, int] = (40, 64)
    output_size: tuple[int, int] = (320, 576)
    steps: StageSteps = field(default_factory=StageSteps)
    guidance: StageGuidance = field(default_factory=StageGuidance)
    noise_level_sr1_image: int = 150
    noise_level_sr1: int = 250
    sr2_strength: float = 0.8
    window: int = 8
    stride: int = 7
    fps: int = 8
    keyframe_dropout: KeyframeDropout = "reference"
    # An upscale's clip length: the latent stage runs on these frames instead of 4k-3 interpolated ones.
    clip_frames: int | None = None

    def __post_init__(self) -> None:
        # JSON gives lists; the dataclass is frozen, so normalise through object.__setattr__.
        object.__setattr__(self, "keyframe_size", _size_pair("keyframe_size", self.keyframe_size))
        object.__setattr__(self, "output_size", _size_pair("output_size", self.output_size))
        self._validate()

    def _validate(self) -> None:
        if not 0 <= self.seed < 2**64:
            raise ValueError(f"seed must be in [0, 2**64), got {self.seed}")
        if self.fps < 1:
            raise ValueError(f"fps must be at least 1, got {self.fps}")
        if self.keyframe_dropout not in KEYFRAME_DROPOUT_MODES:
            raise ValueError(
                f"keyframe_dropout must be one of {', '.join(KEYFRAME_DROPOUT_MODES)}, "
                f"got {self.keyframe_dropout!r}"
            )
        if self.clip_frames is not None and self.clip_frames < 1:
            raise ValueError(f"clip_frames must be at least 1, got {self.clip_frames}")
        if self.num_keyframes < 2:
            raise ValueError(
                f"num_keyframes must be at least 2 (interpolation needs a pair), got {self.num_keyframes}"
            )
        if any(side % LATENT_SCALE for side in self.output_size):
            raise ValueError(f"output_size sides must be multiples of {LATENT_SCALE}, got {self.output_size}")
        for name, value in dataclasses.asdict(self.steps).items():
            if value < 1:
                raise ValueError(f"steps.{name} must be at least 1, got {value}")
        if not 0.0 < self.sr2_strength <= 1.0:
            raise ValueError(f"sr2_strength must be in (0, 1], got {self.sr2_strength}")
        if latent_sr_steps(self.steps.sr2, self.sr2_strength) < 1:
            raise ValueError(
                f"sr2_strength {self.sr2_strength} with {self.steps.sr2} steps leaves no denoising step"
            )
        for name in ("noise_level_sr1_image", "noise_level_sr1"):
            if not 0 <= getattr(self, name) < 1000:
                raise ValueError(f"{name} must be in [0, 1000), got {getattr(self, name)}")
        # Each later window is conditioned on its first frame as an earlier window upscaled it.
        if self.window < 2 or not 1 <= self.stride < self.window:
            raise ValueError(
                f"need window >= 2 and 1 <= stride < window; got window {self.window}, stride {self.stride}"
            )

    @property
    def num_frames(self) -> int:
        if self.clip_frames is not None:
            return self.clip_frames
        return (FRAMES_BETWEEN_KEYFRAMES + 1) * (self.num_keyframes - 1) + 1

    @property
    def sr1_size(self) -> tuple[int, int]:
        height, width = self.keyframe_size
        return height * SR1_SCALE, width * SR1_SCALE

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form: tuples become lists, nested stage settings become dicts."""
        data = dataclasses.asdict(self)
        data["keyframe_size"] = list(self.keyframe_size)
        data["output_size"] = list(self.output_size)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationParams:
        """Inverse of `to_dict`; missing keys take the defaults, unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown generation parameter(s): {', '.join(unknown)}")
        values = dict(data)
        if "steps" in values:
            values["steps"] = _nested(StageSteps, "steps", values["steps"])
        if "guidance" in values:
            values["guidance"] = _nested(StageGuidance, "guidance", values["guidance"])
        return cls(**values)


# Where a request does not say otherwise, a service whose workers serve the tiny random-weights preset
# (its videos are noise whatever the size) uses these: a whole video in a few seconds on 2 CPU cores.
DEMO_KEYFRAME_SIZE = (16, 24)
DEMO_OUTPUT_SIZE = (64, 112)
DEMO_STEPS = StageSteps(base=2, interp=2, sr1_image=2, sr1=2, sr2=2)


def _size_pair(name: str, value: Any) -> tuple[int, int]:
    pair = tuple(int(side) for side in value)
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"{name} must be two positive sides (height, width), got {value!r}")
    return pair  # type: ignore[return-value]


def _nested(cls: type, name: str, value: Any) -> Any:
    if isinstance(value, cls):
        return value
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ValueError(f"unknown {name} field(s): {', '.join(unknown)}")
    return cls(**value)


def latent_sr_steps(num_inference_steps: int, strength: float) -> int:
    """Steps SDEdit runs: the last `strength` fraction of the schedule, as diffusers computes it."""
    init_timestep = min(int(num_inference_steps * strength), num_inference_steps)
    start = max(num_inference_steps - init_timestep, 0)
    return num_inference_steps - start


def sr_window_starts(num_frames: int, window: int, stride: int) -> list[int]:
    """First frame of every pixel-SR window.

    The reference's windows are range(0, F - window + 1, stride); they cover 29 frames exactly but leave
    the tail unprocessed for other counts, so a last window ending on the final frame is added then.
    A clip shorter than the window is one window of the whole clip.
    """
    if num_frames <= window:
        return [0]
    starts = list(range(0, num_frames - window + 1, stride))
    if starts[-1] + window < num_frames:
        starts.append(num_frames - window)
    return starts


# The latent stage also ticks once after the VAE encodes the video and once after it decodes it: at
# full size those take as long as several denoising steps, and progress must not stand still meanwhile.
LATENT_VAE_PASSES = 2


def steps_per_stage(params: GenerationParams) -> dict[str, int]:
    """Progress ticks each stage reports after its start (step 0): one per denoising step (one UNet
    batch), and for the latent stage one per VAE pass."""
    windows = sr_window_starts(params.num_frames, params.window, params.stride)
    return {
        "keyframes": params.steps.base,
        "interpolation": params.steps.interp,
        "first_frame_sr": params.steps.sr1_image,
        "pixel_sr": len(windows) * params.steps.sr1,
        "latent_sr": latent_sr_steps(params.steps.sr2, params.sr2_strength) + LATENT_VAE_PASSES,
    }
