"""The video UNet class of Show-1: the reference's UNet3DConditionModel, for every block type it uses.

One class serves all four showlab UNets, as in the reference:
- the pixel stages (show-1-base, show-1-interpolation, show-1-sr1) are DeepFloyd-IF UNets (ResNet
  down/upsampling, attention with the text as added keys and values, text projected by
  `encoder_hid_proj`, attention-pooled text added to the time embedding), models/blocks_pixel.py;
- the latent stage (show-1-sr2) is a zeroscope-like Stable-Diffusion UNet (strided convolutions,
  spatial transformers with cross-attention to the text), models/blocks_latent.py.
The spatial layers see a video as a batch of frames; a temporal convolution follows every ResNet
block and a temporal transformer every spatial attention (models/temporal.py).

The constructor takes exactly the options of the reference class (showlab/Show-1's
UNet3DConditionModel, typo `transfromer_in_opt` included) with its meanings, so that the published
config.json files load unchanged. Two of them read differently by block family, as in the reference:
`attention_head_dim` is the width of a head in the IF blocks and the number of heads of a level in the
SD blocks (diffusers' own UNet3DConditionModel reads it as a width everywhere), and the temporal
transformer after `conv_in` (`transfromer_in_opt`) always has 8 heads of 64.

The rule for options (docs/design.md, "Checkpoint configs"), per block family:
- an option that changes the architecture or the numbers and that this class does not implement is
  refused with a ValueError naming it;
- an option the reference itself never reads for the block and embedding kinds a config uses is
  accepted, has no effect there or here, and is logged once as ignored;
- a key neither class knows is ignored with diffusers' own warning naming it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.activations import get_activation
from diffusers.models.embeddings import TextTimeEmbedding, TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from models.blocks_latent import LatentDownBlock, LatentMidBlock, LatentUpBlock, TransformerSettings
from models.blocks_pixel import (
    AttentionSettings,
    PixelDownBlock,
    PixelMidBlock,
    PixelUpBlock,
    ResnetSettings,
)
from models.chunking import FrameChunkedLayers, WorkingMemory
from models.errors import CheckpointError
from models.temporal import TemporalTransformer
from models.weights import choose_weights, loading_problems

IF, SD = "IF", "SD"


@dataclass(frozen=True)
class BlockKind:
    family: str  # IF (pixel) or SD (latent)
    has_attention: bool


DOWN_BLOCKS = {
    "ResnetDownsampleBlock3D": BlockKind(IF, False),
    "SimpleCrossAttnDownBlock3D": BlockKind(IF, True),
    "DownBlock3D": BlockKind(SD, False),
    "CrossAttnDownBlock3D": BlockKind(SD, True),
}
UP_BLOCKS = {
    "ResnetUpsampleBlock3D": BlockKind(IF, False),
    "SimpleCrossAttnUpBlock3D": BlockKind(IF, True),
    "UpBlock3D": BlockKind(SD, False),
    "CrossAttnUpBlock3D": BlockKind(SD, True),
}
MID_BLOCKS = {
    "UNetMidBlock3DSimpleCrossAttn": BlockKind(IF, True),
    "UNetMidBlock3DCrossAttn": BlockKind(SD, True),
}
# The reference's temporal transformer after conv_in, whatever the config says of heads.
TRANSFORMER_IN_HEADS, TRANSFORMER_IN_HEAD_DIM = 8, 64

log = logging.getLogger("show1.models")

# Options that would change the architecture or the numbers (the reference raises on
# num_attention_heads itself): only the default is supported.
_FIXED_OPTIONS: dict[str, Any] = {
    "num_attention_heads": None,
    "time_embedding_type": "positional",
    "time_cond_proj_dim": None,
}
# Options only one block family reads (the reference's get_down_block and get_up_block hand them to
# that family's kinds alone; its mid blocks take the same subset). When no block of that family is
# used, any value is accepted and, when not the default, logged as ignored.
_READ_BY: dict[str, tuple[str, Any]] = {
    "use_linear_projection": (SD, False),
    "upcast_attention": (SD, False),
    "downsample_padding": (SD, 1),
    "transformer_layers_per_block": (SD, 1),
    "resnet_out_scale_factor": (IF, 1.0),
    "resnet_skip_time_act": (IF, False),
    "cross_attention_norm": (IF, None),
}
# Options the reference accepts and never reads for any kind built here: the blocks take
# dual_cross_attention without using it, and its embeddings read the last two only for the
# "projection" class and "text_time" addition embeddings (not implemented, so refused below).
_IGNORED_OPTIONS: dict[str, Any] = {
    "dual_cross_attention": False,
    "addition_time_embed_dim": None,
    "projection_class_embeddings_input_dim": None,
}
_already_logged: set[str] = set()
_CHOICES: dict[str, tuple[Any, ...]] = {
    "mid_block_type": (*MID_BLOCKS, None),
    "class_embed_type": (None, "timestep"),
    "addition_embed_type": (None, "text"),
    "encoder_hid_dim_type": (None, "text_proj"),
    "resnet_time_scale_shift": ("default", "scale_shift"),
    "cross_attention_norm": (None, "group_norm", "layer_norm"),
}


@dataclass
class UNet3DConditionOutput(BaseOutput):
    """`sample`: (batch, out_channels, frames, height, width)."""

    sample: torch.Tensor


def _per_block(name: str, value: Any, num_blocks: int) -> list[Any]:
    """A per-block option given either once for all blocks or as one value per block."""
    if isinstance(value, (list, tuple)):
        if len(value) != num_blocks:
            raise ValueError(f"{name} has {len(value)} entries but there are {num_blocks} down blocks")
        return list(value)
    return [value] * num_blocks


def _unsupported(name: str, value: Any, why: str) -> ValueError:
    return ValueError(f"Show1UNet3DConditionModel does not support {name}={value!r}: {why}")


def _log_once(message: str) -> None:
    if message not in _already_logged:
        _already_logged.add(message)
        log.info(message)


def _families(options: dict[str, Any]) -> set[str]:
    """The block families a config uses; unknown block types are refused."""
    used = []
    for name, allowed in (("down_block_types", DOWN_BLOCKS), ("up_block_types", UP_BLOCKS)):
        unknown = [block for block in options[name] if block not in allowed]
        if unknown:
            raise _unsupported(name, unknown, f"supported block types are {sorted(allowed)}")
        used += [allowed[block].family for block in options[name]]
    if options["mid_block_type"] in MID_BLOCKS:
        used.append(MID_BLOCKS[options["mid_block_type"]].family)
    return set(used)


def _check_options(options: dict[str, Any]) -> None:
    for name, choices in _CHOICES.items():
        if options[name] not in choices:
            raise _unsupported(name, options[name], f"expected one of {choices}")
    families = _families(options)
    for name, (family, default) in _READ_BY.items():
        if family not in families and options[name] != default:
            _log_once(
                f"Show1UNet3DConditionModel ignores {name}={options[name]!r} without {family}-style blocks, "
                "as the reference does"
            )
    for name, default in _IGNORED_OPTIONS.items():
        if options[name] != default:
            _log_once(f"Show1UNet3DConditionModel ignores {name}={options[name]!r}, as the reference does")
    if options["num_class_embeds"] is not None:
        if options["class_embed_type"] != "timestep":
            # The reference would build an nn.Embedding class embedding: not implemented here.
            raise _unsupported(
                "num_class_embeds", options["num_class_embeds"], 'only with class_embed_type "timestep"'
            )
        _log_once(
            f"Show1UNet3DConditionModel ignores num_class_embeds={options['num_class_embeds']!r} beside a "
            "timestep class embedding, as the reference does"
        )
    for name, default in _FIXED_OPTIONS.items():
        if options[name] != default:
            raise _unsupported(name, options[name], f"only {default!r} is supported")
    if options["norm_num_groups"] is None:
        raise _unsupported("norm_num_groups", None, "the ResNet blocks need group normalisation")
    if not isinstance(options["cross_attention_dim"], int):
        raise _unsupported("cross_attention_dim", options["cross_attention_dim"], "it must be one int")
    for name in ("attention_head_dim", "transformer_layers_per_block"):
        value = options[name]
        if not all(isinstance(v, int) for v in (value if isinstance(value, (list, tuple)) else [value])):
            raise _unsupported(name, value, "it must be an int or one int per block")
    if options["class_embeddings_concat"] and options["addition_embed_type"] is not None:
        # The reference adds the text embedding (time_embed_dim wide) to the concatenation (twice as wide).
        raise _unsupported(
            "class_embeddings_concat", True, "with addition_embed_type set the embedding widths do not match"
        )
    if options["encoder_hid_dim_type"] is not None and options["encoder_hid_dim"] is None:
        raise _unsupported(
            "encoder_hid_dim_type", options["encoder_hid_dim_type"], "encoder_hid_dim is not set"
        )
    if len(options["down_block_types"]) != len(options["up_block_types"]):
        raise ValueError("down_block_types and up_block_types must have the same length")
    if len(options["block_out_channels"]) != len(options["down_block_types"]):
        raise ValueError("block_out_channels and down_block_types must have the same length")


class Show1UNet3DConditionModel(ModelMixin, ConfigMixin):
    """Show-1 video UNet: (B, C, F, H, W) noisy video -> (B, out_channels, F, H, W) prediction.

    Load a published checkpoint folder with `from_pretrained(folder)`: it picks the fp16 weight
    variant when the folder has one and fails on missing or unexpected weights.
    """

    @register_to_config
    def __init__(
        self,
        sample_size: int | None = None,
        in_channels: int = 4,
        out_channels: int = 4,
        center_input_sample: bool = False,
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
        # The reference class's defaults, which a config that leaves a key out gets.
        down_block_types: Sequence[str] = (
            "CrossAttnDownBlock3D",
            "CrossAttnDownBlock3D",
            "CrossAttnDownBlock3D",
            "DownBlock3D",
        ),
        mid_block_type: str | None = "UNetMidBlock3DCrossAttn",
        up_block_types: Sequence[str] = (
            "UpBlock3D",
            "CrossAttnUpBlock3D",
            "CrossAttnUpBlock3D",
            "CrossAttnUpBlock3D",
        ),
        only_cross_attention: bool | Sequence[bool] = False,
        block_out_channels: Sequence[int] = (320, 640, 1280, 1280),
        layers_per_block: int | Sequence[int] = 2,
        downsample_padding: int = 1,
        mid_block_scale_factor: float = 1,
        act_fn: str = "silu",
        norm_num_groups: int | None = 32,
        norm_eps: float = 1e-5,
        cross_attention_dim: int = 1280,
        transformer_layers_per_block: int | Sequence[int] = 1,
        encoder_hid_dim: int | None = None,
        encoder_hid_dim_type: str | None = None,
        attention_head_dim: int | Sequence[int] = 8,
        num_attention_heads: int | Sequence[int] | None = None,
        dual_cross_attention: bool = False,
        use_linear_projection: bool = False,
        class_embed_type: str | None = None,
        addition_embed_type: str | None = None,
        addition_time_embed_dim: int | None = None,
        num_class_embeds: int | None = None,
        upcast_attention: bool = False,
        resnet_time_scale_shift: str = "default",
        resnet_skip_time_act: bool = False,
        resnet_out_scale_factor: float = 1.0,
        time_embedding_type: str = "positional",
        time_embedding_dim: int | None = None,
        time_embedding_act_fn: str | None = None,
        timestep_post_act: str | None = None,
        time_cond_proj_dim: int | None = None,
        conv_in_kernel: int = 3,
        conv_out_kernel: int = 3,
        projection_class_embeddings_input_dim: int | None = None,
        class_embeddings_concat: bool = False,
        mid_block_only_cross_attention: bool | None = None,
        cross_attention_norm: str | None = None,
        addition_embed_type_num_heads: int = 64,
        transfromer_in_opt: bool = False,
    ) -> None:
        super().__init__()
        # register_to_config has already recorded every argument, defaults included.
        _check_options(dict(self.config))
        if encoder_hid_dim is not None and encoder_hid_dim_type is None:
            # As in the reference: a text width alone means a linear text projection.
            encoder_hid_dim_type = "text_proj"
            self.register_to_config(encoder_hid_dim_type=encoder_hid_dim_type)

        num_blocks = len(down_block_types)
        layers = _per_block("layers_per_block", layers_per_block, num_blocks)
        # IF blocks read this as a head width, SD blocks as a number of heads (see the module docstring).
        head_option = _per_block("attention_head_dim", attention_head_dim, num_blocks)
        cross_only = _per_block("only_cross_attention", only_cross_attention, num_blocks)
        transformer_layers = _per_block(
            "transformer_layers_per_block", transformer_layers_per_block, num_blocks
        )
        if mid_block_only_cross_attention is None:
            mid_block_only_cross_attention = isinstance(only_cross_attention, bool) and only_cross_attention

        first_channels = block_out_channels[0]
        self.conv_in = nn.Conv2d(
            in_channels, first_channels, kernel_size=conv_in_kernel, padding=(conv_in_kernel - 1) // 2
        )
        self.transformer_in = (
            TemporalTransformer(first_channels, TRANSFORMER_IN_HEADS, TRANSFORMER_IN_HEAD_DIM)
            if transfromer_in_opt
            else None
        )

        # Embeddings of the timestep, the optional noise level (class label) and the pooled text.
        time_embed_dim = time_embedding_dim or first_channels * 4
        self.time_proj = Timesteps(first_channels, flip_sin_to_cos, freq_shift)
        self.time_embedding = TimestepEmbedding(
            first_channels, time_embed_dim, act_fn=act_fn, post_act_fn=timestep_post_act
        )
        self.encoder_hid_proj = (
            nn.Linear(encoder_hid_dim, cross_attention_dim) if encoder_hid_dim_type == "text_proj" else None
        )
        self.class_embedding = (
            TimestepEmbedding(first_channels, time_embed_dim, act_fn=act_fn)
            if class_embed_type == "timestep"
            else None
        )
        self.add_embedding = (
            TextTimeEmbedding(
                encoder_hid_dim or cross_attention_dim,
                time_embed_dim,
                num_heads=addition_embed_type_num_heads,
            )
            if addition_embed_type == "text"
            else None
        )
        self.time_embed_act = get_activation(time_embedding_act_fn) if time_embedding_act_fn else None

        block_temb = time_embed_dim * 2 if class_embeddings_concat else time_embed_dim
        resnet = ResnetSettings(
            temb_channels=block_temb,
            groups=norm_num_groups,
            eps=norm_eps,
            act_fn=act_fn,
            time_scale_shift=resnet_time_scale_shift,
            skip_time_act=resnet_skip_time_act,
            output_scale_factor=resnet_out_scale_factor,
        )

        def attention(kind: BlockKind, level: int, head_level: int, cross_attention_only: bool) -> Any:
            """The attention settings of an attention block, or None; `head_level` indexes
            attention_head_dim (the reference reverses it on the way up for SD blocks only)."""
            if not kind.has_attention:
                return None
            if kind.family == IF:
                return AttentionSettings(
                    cross_attention_dim=cross_attention_dim,
                    head_dim=head_option[head_level],
                    only_cross_attention=cross_attention_only,
                    cross_attention_norm=cross_attention_norm,
                    groups=norm_num_groups,
                )
            return TransformerSettings(
                heads=head_option[head_level],
                cross_attention_dim=cross_attention_dim,
                layers=transformer_layers[level],
                groups=norm_num_groups,
                use_linear_projection=use_linear_projection,
                only_cross_attention=cross_attention_only,
                upcast_attention=upcast_attention,
            )

        # Channels of every state the down path hands to the up path, in the order produced.
        skip_channels = [first_channels]
        self.down_blocks = nn.ModuleList()
        for i, block_type in enumerate(down_block_types):
            kind, out_channels_i, is_last = (
                DOWN_BLOCKS[block_type],
                block_out_channels[i],
                i == num_blocks - 1,
            )
            common = {
                "in_channels": block_out_channels[max(i - 1, 0)],
                "out_channels": out_channels_i,
                "num_layers": layers[i],
                "resnet": resnet,
                "add_downsample": not is_last,
            }
            block_attention = attention(kind, i, i, cross_only[i])
            self.down_blocks.append(
                PixelDownBlock(**common, attention=block_attention)
                if kind.family == IF
                else LatentDownBlock(
                    **common, transformer=block_attention, downsample_padding=downsample_padding
                )
            )
            skip_channels += [out_channels_i] * (layers[i] + (0 if is_last else 1))

        self.mid_block: PixelMidBlock | LatentMidBlock | None = None
        mid_resnet = dataclasses.replace(resnet, output_scale_factor=mid_block_scale_factor)
        if mid_block_type == "UNetMidBlock3DSimpleCrossAttn":
            mid_attention = attention(MID_BLOCKS[mid_block_type], -1, -1, mid_block_only_cross_attention)
            self.mid_block = PixelMidBlock(block_out_channels[-1], resnet=mid_resnet, attention=mid_attention)
        elif mid_block_type == "UNetMidBlock3DCrossAttn":
            # The reference's SD mid block takes no only_cross_attention.
            mid_transformer = attention(MID_BLOCKS[mid_block_type], -1, -1, False)
            self.mid_block = LatentMidBlock(
                block_out_channels[-1], resnet=mid_resnet, transformer=mid_transformer
            )

        self.up_blocks = nn.ModuleList()
        prev_channels = block_out_channels[-1]
        for i, block_type in enumerate(up_block_types):
            kind, level = UP_BLOCKS[block_type], num_blocks - 1 - i
            num_layers = layers[level] + 1
            used, skip_channels = skip_channels[-num_layers:], skip_channels[:-num_layers]
            # The reference indexes attention_head_dim unreversed on the way up for the IF blocks (it
            # reverses only_cross_attention); its SD blocks take the reversed number of heads.
            block_attention = attention(kind, level, i if kind.family == IF else level, cross_only[level])
            common = {
                "skip_channels": used[::-1],
                "prev_output_channels": prev_channels,
                "out_channels": block_out_channels[level],
                "resnet": resnet,
                "add_upsample": i != num_blocks - 1,
            }
            self.up_blocks.append(
                PixelUpBlock(**common, attention=block_attention)
                if kind.family == IF
                else LatentUpBlock(**common, transformer=block_attention)
            )
            prev_channels = block_out_channels[level]

        self.conv_norm_out = nn.GroupNorm(norm_num_groups, first_channels, eps=norm_eps)
        self.conv_act = get_activation(act_fn)
        self.conv_out = nn.Conv2d(
            first_channels, out_channels, kernel_size=conv_out_kernel, padding=(conv_out_kernel - 1) // 2
        )

    def set_working_memory(self, memory: WorkingMemory) -> None:
        """The budget of every chunked layer (models/chunking.py): one setting for the whole UNet."""
        for module in self.modules():
            if isinstance(module, FrameChunkedLayers | TemporalTransformer):
                module.working_memory = memory

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        return_dict: bool = True,
        cross_attention_kwargs: dict[str, Any] | None = None,
    ) -> UNet3DConditionOutput | tuple[torch.Tensor]:
        """Predict for `sample` (B, C, F, H, W) at `timestep` (B,) or scalar.

        `encoder_hidden_states` (B, L, D) is the text encoding; `class_labels` (B,) or scalar is the
        noise level of the super-resolution model's condition, required when `class_embed_type` is set.
        `cross_attention_kwargs` is taken as diffusers' pipelines pass it; no attention-processor
        option is implemented, so anything but None or {} is refused.
        """
        if cross_attention_kwargs:
            raise ValueError(
                f"cross_attention_kwargs are not supported, got {sorted(cross_attention_kwargs)}"
            )
        batch, _, num_frames, height, width = sample.shape
        if self.config.center_input_sample:
            sample = 2 * sample - 1.0

        emb = self._embedding(timestep, class_labels, encoder_hidden_states, batch, sample)
        if self.encoder_hid_proj is not None:
            encoder_hidden_states = self.encoder_hid_proj(encoder_hidden_states)
        # The spatial layers treat the frames as a batch; each frame gets its video's conditioning.
        emb = emb.repeat_interleave(num_frames, dim=0)
        encoder_hidden_states = encoder_hidden_states.repeat_interleave(num_frames, dim=0)

        hidden = sample.permute(0, 2, 1, 3, 4).reshape(batch * num_frames, -1, height, width)
        hidden = self.conv_in(hidden)
        if self.transformer_in is not None:
            hidden = self.transformer_in(hidden, num_frames)

        skips: tuple[torch.Tensor, ...] = (hidden,)
        for block in self.down_blocks:
            hidden, block_skips = block(hidden, emb, encoder_hidden_states, num_frames)
            skips += block_skips
        if self.mid_block is not None:
            hidden = self.mid_block(hidden, emb, encoder_hidden_states, num_frames)
        # Sides that the down path did not halve evenly: each upsampler is told the size to restore.
        up_factor = 2 ** (len(self.up_blocks) - 1)
        forward_sizes = any(side % up_factor for side in (height, width))
        for index, block in enumerate(self.up_blocks):
            count = len(block.resnets)
            block_skips, skips = skips[-count:], skips[:-count]
            is_last = index == len(self.up_blocks) - 1
            upsample_size = tuple(skips[-1].shape[2:]) if forward_sizes and not is_last else None
            hidden = block(hidden, block_skips, emb, encoder_hidden_states, num_frames, upsample_size)

        hidden = self.conv_out(self.conv_act(self.conv_norm_out(hidden)))
        out = hidden.reshape(batch, num_frames, -1, height, width).permute(0, 2, 1, 3, 4)
        return UNet3DConditionOutput(sample=out) if return_dict else (out,)

    def _embedding(
        self,
        timestep: torch.Tensor | float | int,
        class_labels: torch.Tensor | None,
        encoder_hidden_states: torch.Tensor,
        batch: int,
        sample: torch.Tensor,
    ) -> torch.Tensor:
        """The per-video embedding every ResNet block receives, (B, temb_channels)."""
        timesteps = torch.as_tensor(timestep, device=sample.device).reshape(-1).expand(batch)
        # Timesteps computes in float32; the embedding layers run in the model's dtype.
        emb = self.time_embedding(self.time_proj(timesteps).to(sample.dtype))
        if self.class_embedding is not None:
            if class_labels is None:
                raise ValueError("class_labels (the noise level) is required when class_embed_type is set")
            labels = torch.as_tensor(class_labels, device=sample.device).reshape(-1).expand(batch)
            class_emb = self.class_embedding(self.time_proj(labels).to(sample.dtype)).to(sample.dtype)
            concat = self.config.class_embeddings_concat
            emb = torch.cat([emb, class_emb], dim=-1) if concat else emb + class_emb
        if self.add_embedding is not None:
            # Pooled from the text encoder's output, before encoder_hid_proj.
            emb = emb + self.add_embedding(encoder_hidden_states)
        if self.time_embed_act is not None:
            emb = self.time_embed_act(emb)
        return emb

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any
    ) -> Show1UNet3DConditionModel | tuple[Show1UNet3DConditionModel, dict[str, Any]]:
        """diffusers' from_pretrained, strict: missing, unexpected or mis-shaped weights raise.

        Without an explicit `variant`, a local folder's weights are chosen by models.weights (fp16
        safetensors first, as the reference loads the base and interpolation checkpoints).
        """
        folder = os.path.join(pretrained_model_name_or_path, kwargs.get("subfolder") or "")
        if "variant" not in kwargs and os.path.isdir(folder):
            chosen = choose_weights(os.listdir(folder), prefer_fp16=True, where=folder)
            kwargs |= {"variant": chosen.variant, "use_safetensors": chosen.use_safetensors}
        want_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(
            pretrained_model_name_or_path, output_loading_info=True, **kwargs
        )
        problems = loading_problems(info)
        if problems:
            raise CheckpointError(f"{folder}: weights do not fit {cls.__name__} ({problems})")
        return (model, info) if want_info else model
