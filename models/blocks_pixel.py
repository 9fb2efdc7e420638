"""The DeepFloyd-IF style blocks of the Show-1 pixel UNets, with temporal layers added.

Every ResNet block is followed by a temporal convolution layer and every spatial attention by a
temporal transformer. Spatial layers see (B*F, C, H, W); the temporal ones regroup by `num_frames`.
Attribute names (`resnets`, `temp_convs`, `attentions`, `temp_attentions`, `downsamplers`,
`upsamplers`) equal the published checkpoint keys.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers.models.attention_processor import Attention, AttnAddedKVProcessor2_0
from diffusers.models.resnet import ResnetBlock2D
from torch import nn

from models.chunking import FrameChunkedLayers
from models.temporal import TemporalTransformer, temporal_conv


@dataclass(frozen=True)
class ResnetSettings:
    """What every ResNet block of one UNet shares."""

    temb_channels: int
    groups: int
    eps: float
    act_fn: str
    time_scale_shift: str
    skip_time_act: bool
    output_scale_factor: float

    def make(
        self, in_channels: int, out_channels: int, *, up: bool = False, down: bool = False
    ) -> ResnetBlock2D:
        return ResnetBlock2D(
            in_channels=in_channels,
            out_channels=out_channels,
            temb_channels=self.temb_channels,
            groups=self.groups,
            eps=self.eps,
            non_linearity=self.act_fn,
            time_embedding_norm=self.time_scale_shift,
            skip_time_act=self.skip_time_act,
            output_scale_factor=self.output_scale_factor,
            up=up,
            down=down,
        )


@dataclass(frozen=True)
class AttentionSettings:
    """The spatial attention of one block: self-attention over the pixels with the text as added keys."""

    cross_attention_dim: int
    head_dim: int
    only_cross_attention: bool
    cross_attention_norm: str | None
    groups: int

    def make_spatial(self, channels: int) -> Attention:
        return Attention(
            query_dim=channels,
            cross_attention_dim=channels,
            heads=channels // self.head_dim,
            dim_head=self.head_dim,
            added_kv_proj_dim=self.cross_attention_dim,
            norm_num_groups=self.groups,
            bias=True,
            upcast_softmax=True,
            only_cross_attention=self.only_cross_attention,
            cross_attention_norm=self.cross_attention_norm,
            processor=AttnAddedKVProcessor2_0(),
        )

    def make_temporal(self, channels: int) -> TemporalTransformer:
        # The reference swaps the roles here: `head_dim` heads of channels // head_dim features each.
        return TemporalTransformer(
            channels, num_heads=self.head_dim, head_dim=channels // self.head_dim, norm_groups=self.groups
        )


class _PixelBlock(FrameChunkedLayers, nn.Module):
    """Layers shared by all block kinds: (resnet, temporal conv[, attention, temporal attention]) x n."""

    def __init__(
        self,
        resnet_in_channels: list[int],
        out_channels: int,
        resnet: ResnetSettings,
        attention: AttentionSettings | None,
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(resnet.make(c, out_channels) for c in resnet_in_channels)
        self.temp_convs = nn.ModuleList(temporal_conv(out_channels) for _ in resnet_in_channels)
        if attention is not None:
            self.attentions = nn.ModuleList(attention.make_spatial(out_channels) for _ in resnet_in_channels)
            self.temp_attentions = nn.ModuleList(
                attention.make_temporal(out_channels) for _ in resnet_in_channels
            )
        self.has_attention = attention is not None

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
                self._attend(index), hidden_states, encoder_hidden_states
            )
            hidden_states = self.temp_attentions[index](hidden_states, num_frames)
        return hidden_states

    def _attend(self, index: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        return lambda hidden, text: self.attentions[index](hidden, encoder_hidden_states=text)


class PixelDownBlock(_PixelBlock):
    """ResnetDownsampleBlock3D (attention=None) or SimpleCrossAttnDownBlock3D; downsamples with a ResNet."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_layers: int,
        resnet: ResnetSettings,
        attention: AttentionSettings | None,
        add_downsample: bool,
    ) -> None:
        super().__init__([in_channels] + [out_channels] * (num_layers - 1), out_channels, resnet, attention)
        self.downsamplers = (
            nn.ModuleList([resnet.make(out_channels, out_channels, down=True)]) if add_downsample else None
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        temb: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        num_frames: int,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Returns the output and every intermediate state the up path takes as a skip connection."""
        skips: tuple[torch.Tensor, ...] = ()
        for index in range(len(self.resnets)):
            hidden_states = self._layer(index, hidden_states, temb, encoder_hidden_states, num_frames)
            skips += (hidden_states,)
        if self.downsamplers is not None:
            hidden_states = self.frames_through_resnet(self.downsamplers[0], hidden_states, temb, 0.25)
            skips += (hidden_states,)
        return hidden_states, skips


class PixelMidBlock(FrameChunkedLayers, nn.Module):
    """UNetMidBlock3DSimpleCrossAttn: resnet, temporal conv, attention, temporal attention, resnet,
    temporal conv."""

    def __init__(self, channels: int, resnet: ResnetSettings, attention: AttentionSettings) -> None:
        super().__init__()
        self.resnets = nn.ModuleList([resnet.make(channels, channels), resnet.make(channels, channels)])
        self.temp_convs = nn.ModuleList([temporal_conv(channels), temporal_conv(channels)])
        self.attentions = nn.ModuleList([attention.make_spatial(channels)])
        self.temp_attentions = nn.ModuleList([attention.make_temporal(channels)])

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
            lambda hidden, text: self.attentions[0](hidden, encoder_hidden_states=text),
            hidden_states,
            encoder_hidden_states,
        )
        hidden_states = self.temp_attentions[0](hidden_states, num_frames)
        hidden_states = self.frames_through_resnet(self.resnets[1], hidden_states, temb)
        return self.temp_convs[1](hidden_states, num_frames=num_frames)


class PixelUpBlock(_PixelBlock):
    """ResnetUpsampleBlock3D (attention=None) or SimpleCrossAttnUpBlock3D; upsamples with a ResNet.

    Each resnet takes the previous output concatenated with one skip connection from the down path;
    `skip_channels` lists those connections' channels in the order the resnets use them.
    """

    def __init__(
        self,
        skip_channels: list[int],
        prev_output_channels: int,
        out_channels: int,
        resnet: ResnetSettings,
        attention: AttentionSettings | None,
        add_upsample: bool,
    ) -> None:
        inputs = [prev_output_channels] + [out_channels] * (len(skip_channels) - 1)
        super().__init__(
            [i + s for i, s in zip(inputs, skip_channels, strict=True)], out_channels, resnet, attention
        )
        self.upsamplers = (
            nn.ModuleList([resnet.make(out_channels, out_channels, up=True)]) if add_upsample else None
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

        `upsample_size` is accepted for a uniform interface and, as in the reference, not used: the
        upsampling ResNet always doubles the sides."""
        for index in range(len(self.resnets)):
            hidden_states = torch.cat([hidden_states, skips[-1 - index]], dim=1)
            hidden_states = self._layer(index, hidden_states, temb, encoder_hidden_states, num_frames)
        if self.upsamplers is not None:
            hidden_states = self.frames_through_resnet(self.upsamplers[0], hidden_states, temb, 4.0)
        return hidden_states
