"""How much memory a generation needs, per stage, computed from the models' configs and the request's
sizes, without running anything (no torch at import: the API process estimates with it).

A stage's peak is the weights it keeps on the device plus its activations. The activations of a UNet
forward, with the separable layers chunked (models/chunking.py), are:
- the skip connections of the down path, all held until the up path takes them;
- a workspace at the full-resolution level of the up path (the hidden state, its concatenation with a
  skip, the temporal convolution's intermediates, the temporal transformer's normalised copy);
- the largest chunked transient, capped by the working memory (one row or frame at the least).
Around the UNet come the sampler's copies of the sample and the stage's own inputs and outputs; the
latent stage also holds its video in pixel space around the VAE, which runs a frame at a time. The
constants below are fitted to peak RSS measured on the CPU with the tiny preset
(`python bench/memory.py`, bench/results/*-memory-cpu.md, tests/models/test_memory.py).

Which weights are on the device depends on the memory mode (MEMORY_MODES): `resident` all of them;
`offload_text_encoder` all but the text encoders, which live and run on the CPU; in `model_offload`
the models of the running stage only; in `sequential_offload` one submodule at a time.
On a CPU every mode keeps every weight in host memory, which is what a CPU worker's peak counts.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from models.params import FRAMES_BETWEEN_KEYFRAMES, LATENT_SCALE, STAGES, GenerationParams

TEXT = "text"
MemoryMode = Literal["resident", "offload_text_encoder", "model_offload", "sequential_offload"]
MEMORY_MODES: tuple[str, ...] = get_args(MemoryMode)
TEXT_ENCODERS = ("t5_encoder", "clip_encoder")
# The UNet each stage runs (models/loading.py CascadeModels names).
STAGE_UNETS = {
    "keyframes": "base_unet",
    "interpolation": "interp_unet",
    "first_frame_sr": "if_unet",
    "pixel_sr": "sr1_unet",
    "latent_sr": "sr2_unet",
}
# The default working memory of the chunked layers (models/chunking.py, SHOW1_WORKING_MEMORY_MB). Large
# enough that the pieces stay big matrix products (the speed of the unchunked run), small beside the
# activations it bounds: at 1280x720 and 33 frames, one float16 GEGLU projection of sr2's first
# temporal transformer alone is 7.8 GB.
DEFAULT_WORKING_BYTES = 512 * 2**20

# Fitted constants (see the module docstring), in tensors of a level's feature-map size.
UP_PATH_WORKSPACE_MAPS = 7  # hidden, concatenation (2), temporal convolution (4)
RESNET_TRANSIENT_MAPS = 5  # a ResNet's input at twice the width, then three at its output width
# A spatial transformer's intermediates: normalisation, projections, queries, keys and values, and the
# GEGLU feed-forward (8x, then 4x twice). The chunked layers size their pieces with the same numbers.
ATTENTION_TRANSIENT_MAPS = 20
# A temporal transformer's intermediates per token, in tensors of its inner width (the same, at the
# inner width); beside one tensor at the input width.
TEMPORAL_INNER_FACTOR = 20
# A chunked piece's real intermediates beside what its sizing counts (the permuted input copy, the
# residual stream): measured one sr2 forward of the tiny preset at 320x576, 8 and 29 frames.
CHUNK_OVERSHOOT = 1.2
SAMPLER_COPIES = 10  # model input (x2 guidance), output (x2), guided prediction, solver history, sample
# One frame through the VAE, in maps of its full-resolution width: torch's MemTracker on fake tensors
# counts 6 for the published VAE's decoder at 1280x720 (2.7 GB in float32), 5 for its encoder.
VAE_FRAME_MAPS = 6
PIXEL_VIDEO_COPIES = 3  # the decoded video and two float copies while it becomes uint8


@dataclass(frozen=True)
class UNetShape:
    """What a UNet's activations grow with, read from its config, and its weights."""

    channels: tuple[int, ...]  # block_out_channels
    layers: tuple[int, ...]  # ResNets per down block
    attention: tuple[bool, ...]  # spatial and temporal attention per level
    temporal_inner: tuple[int, ...]  # inner width of each level's temporal transformer (0: none)
    transformer_in_inner: int  # inner width of the temporal transformer after conv_in (0: none)
    weight_bytes: int
    largest_module_bytes: int


@dataclass(frozen=True)
class ModelProfile:
    """Everything an estimate needs to know of a worker's models: JSON-ready, so a worker can publish
    it with its heartbeat and the API can estimate for it."""

    unets: dict[str, UNetShape]  # by stage
    vae_channels: int  # the width of the VAE's full-resolution blocks
    vae_weight_bytes: int
    text_weight_bytes: int
    text_largest_module_bytes: int
    vae_largest_module_bytes: int
    element_size: int  # bytes per activation (2 for float16, 4 for float32)
    device_type: str  # "cuda" or "cpu"
    working_bytes: int
    interpolation_pairs_per_batch: int | None = None  # None: all pairs in one batch

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelProfile:
        unets = {
            stage: UNetShape(**{k: _tuple(v) for k, v in shape.items()})
            for stage, shape in data["unets"].items()
        }
        return cls(**{**data, "unets": unets})


def _tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak bytes while each stage runs (weights on the device plus activations), and the largest."""

    stages: dict[str, int] = field(default_factory=dict)

    @property
    def peak(self) -> int:
        return max(self.stages.values(), default=0)

    @property
    def peak_stage(self) -> str | None:
        return max(self.stages, key=self.stages.__getitem__) if self.stages else None


def estimate_memory(
    params: GenerationParams,
    profile: ModelProfile,
    memory_mode: str = "resident",
    stages: Iterable[str] = STAGES,
) -> MemoryEstimate:
    """The peak of each of `stages` (with the text encoding before them) for `params` on `profile`'s
    models in `memory_mode`: device memory on a GPU, host memory on a CPU, beyond what the loaded,
    idle process already holds (on a CPU that includes every weight)."""
    if memory_mode not in MEMORY_MODES:
        raise ValueError(f"memory_mode must be one of {', '.join(MEMORY_MODES)}; got {memory_mode!r}")
    activations = _activations(params, profile)
    run = [TEXT, *(stage for stage in STAGES if stage in set(stages))]
    return MemoryEstimate(
        {stage: _weights(profile, memory_mode, stage) + activations[stage] for stage in run}
    )


def _weights(profile: ModelProfile, mode: str, stage: str) -> int:
    if profile.device_type == "cpu":
        return 0  # every weight is in the process already, whatever the mode
    latent = profile.unets["latent_sr"].weight_bytes + profile.vae_weight_bytes
    own = {
        TEXT: profile.text_weight_bytes,
        **{name: unet.weight_bytes for name, unet in profile.unets.items()},
        "latent_sr": latent,
    }
    if mode == "resident":
        return sum(own.values())
    if mode == "offload_text_encoder":  # the text encoders live and run on the CPU
        return sum(own.values()) - own[TEXT]
    if mode == "model_offload":
        return own[stage]
    # sequential_offload: one submodule's weights streamed in at a time.
    if stage == TEXT:
        return profile.text_largest_module_bytes
    largest = profile.unets[stage].largest_module_bytes
    return max(largest, profile.vae_largest_module_bytes) if stage == "latent_sr" else largest


def _activations(params: GenerationParams, p: ModelProfile) -> dict[str, int]:
    es = p.element_size
    key_h, key_w = params.keyframe_size
    sr_h, sr_w = params.sr1_size
    out_h, out_w = params.output_size
    frames = params.num_frames
    pairs = params.num_keyframes - 1
    pairs_per_batch = min(pairs, p.interpolation_pairs_per_batch or pairs)
    clip = FRAMES_BETWEEN_KEYFRAMES + 2
    window = min(params.window, frames)
    guidance = {
        stage: 2 if scale > 1.0 else 1 for stage, scale in dataclasses.asdict(params.guidance).items()
    }

    def stage(name: str, batch: int, frames_: int, height: int, width: int) -> int:
        unet = unet_activation(p.unets[name], batch, frames_, height, width, es, p.working_bytes)
        return unet + SAMPLER_COPIES * batch * frames_ * 3 * height * width * es

    low_res_video = 3 * frames * key_h * key_w * es
    sr_video = 3 * frames * sr_h * sr_w * es
    latent_h, latent_w = out_h // LATENT_SCALE, out_w // LATENT_SCALE
    pixel_video = 3 * frames * out_h * out_w
    latent_unet = (
        unet_activation(
            p.unets["latent_sr"], guidance["sr2"], frames, latent_h, latent_w, es, p.working_bytes
        )
        + SAMPLER_COPIES * 4 * frames * latent_h * latent_w * es
    )
    vae_frame = VAE_FRAME_MAPS * p.vae_channels * out_h * out_w * es
    # Around the VAE: the uint8 input and its model-space copy, then the decoded video and its copies.
    vae_phase = vae_frame + pixel_video * (1 + es) + PIXEL_VIDEO_COPIES * pixel_video * 4
    return {
        TEXT: 0,
        "keyframes": stage("keyframes", guidance["base"], params.num_keyframes, key_h, key_w),
        "interpolation": stage("interpolation", guidance["interp"] * pairs_per_batch, clip, key_h, key_w)
        + low_res_video,
        "first_frame_sr": unet_activation(
            p.unets["first_frame_sr"], guidance["sr1_image"], 1, sr_h, sr_w, es, p.working_bytes
        )
        + low_res_video,
        "pixel_sr": stage("pixel_sr", guidance["sr1"], window, sr_h, sr_w) + low_res_video + 2 * sr_video,
        "latent_sr": sr_video + max(latent_unet, vae_phase),
    }


def unet_activation(
    shape: UNetShape, batch: int, frames: int, height: int, width: int, element_size: int, working_bytes: int
) -> int:
    """Peak activation bytes of one forward of a UNet at (batch, frames, height, width)."""

    def feature_map(level: int, channels: int) -> int:
        scale = 2**level
        return batch * frames * channels * math.ceil(height / scale) * math.ceil(width / scale) * element_size

    channels, levels = shape.channels, len(shape.channels)
    skips = feature_map(0, channels[0])
    for level in range(levels):
        skips += shape.layers[level] * feature_map(level, channels[level])
        if level < levels - 1:
            skips += feature_map(level + 1, channels[level])
    workspace = UP_PATH_WORKSPACE_MAPS * feature_map(0, channels[0])

    def capped(total: int, piece: int) -> int:
        return min(total, max(working_bytes, piece))

    per_frame_resnet = feature_map(0, channels[0]) // (batch * frames) * RESNET_TRANSIENT_MAPS
    transients = [capped(RESNET_TRANSIENT_MAPS * feature_map(0, channels[0]), per_frame_resnet)]
    temporal = [(0, shape.transformer_in_inner, channels[0])] if shape.transformer_in_inner else []
    temporal += [
        (level, shape.temporal_inner[level], channels[level])
        for level in range(levels)
        if shape.attention[level] and shape.temporal_inner[level]
    ]
    for level, inner, width_ in temporal:
        factor = (width_ + TEMPORAL_INNER_FACTOR * inner) / width_
        total = int(factor * feature_map(level, width_))
        line = total // max(1, math.ceil(height / 2**level) * batch)
        transients.append(capped(total, line))
    for level in range(levels):
        if shape.attention[level]:
            total = ATTENTION_TRANSIENT_MAPS * feature_map(level, channels[level])
            transients.append(capped(total, total // (batch * frames)))
    return skips + workspace + int(CHUNK_OVERSHOOT * max(transients))


def default_pairs_per_batch(device_type: str, memory_mode: str) -> int | None:
    """Keyframe pairs per interpolation batch (the output does not depend on it): all of them (None),
    which fills a GPU better at 40x64, unless a GPU memory mode asks for the least memory (one pair)."""
    return 1 if device_type == "cuda" and memory_mode in ("model_offload", "sequential_offload") else None


def profile_of(
    models: Any,
    *,
    element_size: int,
    device_type: str,
    working_bytes: int,
    interpolation_pairs_per_batch: int | None,
) -> ModelProfile:
    """The profile of a loaded `CascadeModels` (models/loading.py)."""
    text = [getattr(models, name) for name in TEXT_ENCODERS]
    return ModelProfile(
        unets={stage: unet_shape(getattr(models, name)) for stage, name in STAGE_UNETS.items()},
        vae_channels=models.vae.config.block_out_channels[0],
        vae_weight_bytes=weight_bytes(models.vae),
        text_weight_bytes=sum(weight_bytes(encoder) for encoder in text),
        text_largest_module_bytes=max(largest_module_bytes(encoder) for encoder in text),
        vae_largest_module_bytes=largest_module_bytes(models.vae),
        element_size=element_size,
        device_type=device_type,
        working_bytes=working_bytes,
        interpolation_pairs_per_batch=interpolation_pairs_per_batch,
    )


def unet_shape(unet: Any) -> UNetShape:
    """A UNet's shape from its config and modules: this project's class, diffusers' UNet3D or UNet2D."""
    config = unet.config
    channels = tuple(config.block_out_channels)
    layers = config.layers_per_block
    layers = tuple(layers) if isinstance(layers, list | tuple) else (layers,) * len(channels)
    attention, inner = [], []
    for block in unet.down_blocks:
        temporal = getattr(block, "temp_attentions", None)
        attention.append(hasattr(block, "attentions") and block.attentions is not None)
        inner.append(temporal[0].proj_in.out_features if temporal else 0)
    transformer_in = getattr(unet, "transformer_in", None)
    transformer_in_inner = 0
    if transformer_in is not None:
        transformer_in_inner = transformer_in.proj_in.out_features
    return UNetShape(
        channels=channels,
        layers=layers,
        attention=tuple(attention),
        temporal_inner=tuple(inner),
        transformer_in_inner=transformer_in_inner,
        weight_bytes=weight_bytes(unet),
        largest_module_bytes=largest_module_bytes(unet),
    )


def weight_bytes(module: Any) -> int:
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def largest_module_bytes(module: Any) -> int:
    """The largest set of weights one submodule holds directly (what sequential offload streams)."""
    return max(
        (
            sum(
                t.numel() * t.element_size()
                for t in (*m.parameters(recurse=False), *m.buffers(recurse=False))
            )
            for m in module.modules()
        ),
        default=0,
    )
