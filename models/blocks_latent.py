"""The Stable-Diffusion style blocks of the Show-1 UNet class (the latent sr2 model), with temporal layers.

The reference's CrossAttnDownBlock3D, DownBlock3D, UNetMidBlock3DCrossAttn, CrossAttnUpBlock3D and
UpBlock3D: every ResNet block is followed by a temporal convolution and, in the attention kinds, by a
spatial transformer (self-attention and cross-attention to the text) and a temporal transformer.
Unlike the IF blocks, the number of attention heads of a level is what the config calls
`attention_head_dim` (each head is `channels // heads` wide), and `use_linear_projection`,
`upcast_attention`, `only_cross_attention`, `transformer_layers_per_block` and `downsample_padding`
take effect. Attribute names equal the published checkpoint keys.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers.models.resnet import Downsample2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from diffusers.models.upsampling import Upsample2D
from torch import nn

from models.blocks_pixel import ResnetSettings
from models.chunking import FrameChunkedLayers
from models.temporal import TemporalTransformer, temporal_conv


@dataclass(frozen=True)
class TransformerSettings:
    """The spatial and temporal transformers of one SD-style block."""

    heads: int
    cross_attention_dim: int
    layers: int
    groups: int
    use_linear_projection: bool
    only_cross_attention: bool
    upcast_attention: bool

    def make_spatial(self, channels: int) -> Transformer2DModel:
        return Transformer2DModel(
            num_attention_heads=self.heads,
            attention_head_dim=channels // self.heads,
            in_channels=channels,
            num_layers=self.layers,
            cross_attention_dim=self.cross_attention_dim,
            norm_num_groups=self.groups,
            use_linear_projection=self.use_linear_projection,
            only_cross_attention=self.only_cross_attention,
            upcast_attention=self.upcast_attention,
        )

    def make_temporal(self, channels: int) -> TemporalTransformer:
        return TemporalTransformer(channels, self.heads, channels // self.heads, norm_groups=self.groups)


def _spatial_transformer(
    transformer: Transformer2DModel,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    return lambda hidden, text: transformer(hidden, encoder_hidden_states=text, return_dict=False)[0]


def sd_resnet_settings(resnet: ResnetSettings) -> ResnetSettings:
    """What the reference's SD-style blocks take of the UNet's ResNet options: no output scale factor
    and no skipped time activation (its get_down_block and get_up_block pass neither to them)."""
    return dataclasses.replace(resnet, output_scale_factor=1.0, skip_time_act=False)


class _LatentBlock(FrameChunkedLayers, nn.Module):
    """(resnet, temporal conv[, transformer, temporal transformer]) x n, shared by all SD-style kinds."""

    def __init__(
        self,
        resnet_in_channels: list[int],
        out_channels: int,
        resnet: ResnetSettings,
        transformer: TransformerSettings | None,
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(resnet.make(c, out_channels) for c in resnet_in_channels)
        self.temp_convs = nn.ModuleList(temporal_conv(out_channels) for _ in resnet_in_channels)
        if transformer is not None:
            self.attentions = nn.ModuleList(
                transformer.make_spatial(out_channels) for _ in resnet_in_channels
            )
            self.temp_attentions = nn.ModuleList(
                transformer.make_temporal(out_channels) for _ in resnet_in_channels
            )
        self.has_attention = transformer is not None

    def _layer(
        self,
        index: int,
        hidden_states: torch.Tensor,
        temb: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        num_frames: int,
    ) -> torch.Tensor:
        hidden_states = self.frames_through_resnet(self.resnets[index], hidden_states, temb)
        hidden_states = self.temp_convs[index](hidden_states, num_frames=num_frames)
        if self.has_attention:
            hidden_states = self.frames_through_attention(
                _spatial_transformer(self.attentions[index]), hidden_states, encoder_hidden_states
            )
            hidden_states = self.temp_attentions[index](hidden_states, num_frames)
        return hidden_states


class LatentDownBlock(_LatentBlock):
    """CrossAttnDownBlock3D (with a transformer) or DownBlock3D; downsamples with a strided convolution."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_layers: int,
        resnet: ResnetSettings,
        transformer: TransformerSettings | None,
        add_downsample: bool,
        downsample_padding: int,
    ) -> None:
        super().__init__(
            [in_channels] + [out_channels] * (num_layers - 1),
            out_channels,
            sd_resnet_settings(resnet),
            transformer,
        )
        self.downsamplers = (
            nn.ModuleList(
                [
                    Downsample2D(
                        out_channels,
                        use_conv=True,
                        out_channels=out_channels,
                        padding=downsample_padding,
                        name="op",
                    )
                ]
            )
            if add_downsample
            else None
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        temb: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        num_frames: int,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        skips: tuple[torch.Tensor, ...] = ()
        for index in range(len(self.resnets)):
            hidden_states = self._layer(index, hidden_states, temb, encoder_hidden_states, num_frames)
            skips += (hidden_states,)
        if self.downsamplers is not None:
            hidden_states = self.downsamplers[0](hidden_states)
            skips += (hidden_states,)
        return hidden_states, skips


class LatentMidBlock(FrameChunkedLayers, nn.Module):
    """UNetMidBlock3DCrossAttn: resnet, temporal conv, then (transformer, temporal transformer, resnet,
    temporal conv)."""

    def __init__(self, channels: int, resnet: ResnetSettings, transformer: TransformerSettings) -> None:
        super().__init__()
        # The mid block keeps the UNet's mid_block_scale_factor (already in `resnet`).
        resnet = dataclasses.replace(resnet, skip_time_act=False)
        self.resnets = nn.ModuleList([resnet.make(channels, channels), resnet.make(channels, channels)])
        self.temp_convs = nn.ModuleList([temporal_conv(channels), temporal_conv(channels)])
        self.attentions = nn.ModuleList([transformer.make_spatial(channels)])
        self.temp_attentions = nn.ModuleList([transformer.make_temporal(channels)])

    def forward(
        self,
        hidden_states: torch.Tensor,
        temb: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        num_frames: int,
    ) -> torch.Tensor:
        hidden_states = self.frames_through_resnet(self.resnets[0], hidden_states, temb)
        hidden_states = self.temp_convs[0](hidden_states, num_frames=num_frames)
        hidden_states = self.frames_through_attention(
            _spatial_transformer(self.attentions[0]), hidden_states, encoder_hidden_states
        )
        hidden_states = self.temp_attentions[0](hidden_states, num_frames)
        hidden_states = self.frames_through_resnet(self.resnets[1], hidden_states, temb)
        return self.temp_convs[1](hidden_states, num_frames=num_frames)


class LatentUpBlock(_LatentBlock):
    """CrossAttnUpBlock3D (with a transformer) or UpBlock3D; upsamples by interpolation and a convolution.

    Each resnet takes the previous output concatenated with one skip connection from the down path;
    `skip_channels` lists those connections' channels in the order the resnets use them.
    """

    def __init__(
        self,
        skip_channels: list[int],
        prev_output_channels: int,
        out_channels: int,
        resnet: ResnetSettings,
        transformer: TransformerSettings | None,
        add_upsample: bool,
    ) -> None:
        inputs = [prev_output_channels] + [out_channels] * (len(skip_channels) - 1)
        super().__init__(
            [i + s for i, s in zip(inputs, skip_channels, strict=True)],
            out_channels,
            sd_resnet_settings(resnet),
            transformer,
        )
        self.upsamplers = (
            nn.ModuleList([Upsample2D(out_channels, use_conv=True, out_channels=out_channels)])
            if add_upsample
            else None
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        skips: tuple[torch.Tensor, ...],
        temb: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        num_frames: int,
        upsample_size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """`skips` holds this block's skip connections in down-path order; they are used last first.
        `upsample_size` forces the upsampled size when the input's sides are not multiples of the
        UNet's total downsampling."""
        for index in range(len(self.resnets)):
            hidden_states = torch.cat([hidden_states, skips[-1 - index]], dim=1)
            hidden_states = self._layer(index, hidden_states, temb, encoder_hidden_states, num_frames)
        if self.upsamplers is not None:
            hidden_states = self.upsamplers[0](hidden_states, upsample_size)
        return hidden_states
