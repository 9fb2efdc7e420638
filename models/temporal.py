"""The temporal layers of the Show-1 UNets: convolution and attention over the frame axis.

The spatial layers of the UNets see a video as a batch of frames, (B*F, C, H, W); the layers here
regroup that batch so that each pixel's F feature vectors form one sequence.
"""

from __future__ import annotations

import torch
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.resnet import TemporalConvLayer
from torch import nn

from models.chunking import WorkingMemory
from models.memory import TEMPORAL_INNER_FACTOR

# The reference builds its temporal convolutions with dropout 0.1 (active when the reference samples
# keyframes in training mode) and, as diffusers 0.19 did, with 32 normalisation groups.
_TEMPORAL_CONV_DROPOUT = 0.1
_TEMPORAL_CONV_GROUPS = 32


def temporal_conv(channels: int) -> TemporalConvLayer:
    """Four 1-D convolutions over the frames at every pixel, with a residual."""
    return TemporalConvLayer(
        channels, channels, dropout=_TEMPORAL_CONV_DROPOUT, norm_num_groups=_TEMPORAL_CONV_GROUPS
    )


class TemporalTransformer(nn.Module):
    """GroupNorm, a linear projection, one transformer block over the frames, and a residual.

    The block has two self-attention layers (no text cross-attention) and a GEGLU feed-forward, like the
    temporal transformers of the reference. Module names equal the published checkpoint keys
    (`norm`, `proj_in`, `transformer_blocks.0.*`, `proj_out`).
    """

    def __init__(self, channels: int, num_heads: int, head_dim: int, norm_groups: int = 32) -> None:
        super().__init__()
        inner_dim = num_heads * head_dim
        self.norm = nn.GroupNorm(norm_groups, channels, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(channels, inner_dim)
        self.transformer_blocks = nn.ModuleList(
            [
                BasicTransformerBlock(
                    inner_dim,
                    num_heads,
                    head_dim,
                    activation_fn="geglu",
                    attention_bias=False,
                    double_self_attention=True,
                )
            ]
        )
        self.proj_out = nn.Linear(inner_dim, channels)
        self.working_memory = WorkingMemory()

    def forward(self, hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:
        """(B*F, C, H, W) -> (B*F, C, H, W)."""
        batch_frames, channels, height, width = hidden_states.shape
        batch = batch_frames // num_frames

        # GroupNorm statistics span all frames of a video, so normalise in (B, C, F, H, W) layout.
        video = hidden_states.reshape(batch, num_frames, channels, height, width).permute(0, 2, 1, 3, 4)
        video = self.norm(video)
        out = hidden_states.new_empty((batch, num_frames, channels, height, width))
        # Every pixel's frames are one independent sequence: image lines of sequences at a time.
        lines = self.working_memory.rows(height, width * self.bytes_per_sequence(num_frames, video))
        for index in range(batch):
            for top in range(0, height, lines):
                rows = slice(top, min(top + lines, height))
                out[index, :, :, rows] = self._sequences(video[index, :, :, rows], num_frames)
        return out.reshape(batch_frames, channels, height, width).add_(hidden_states)

    def _sequences(self, video_rows: torch.Tensor, num_frames: int) -> torch.Tensor:
        """(C, F, h, W) normalised -> (F, C, h, W): the transformer over each pixel's frames."""
        channels, _, lines, width = video_rows.shape
        tokens = video_rows.permute(2, 3, 1, 0).reshape(lines * width, num_frames, channels)
        tokens = self.proj_in(tokens)
        for block in self.transformer_blocks:
            tokens = block(tokens)
        tokens = self.proj_out(tokens)
        return tokens.reshape(lines, width, num_frames, channels).permute(2, 3, 0, 1)

    def bytes_per_sequence(self, num_frames: int, like: torch.Tensor) -> int:
        """The intermediates of one pixel's sequence: its tokens at the input width, then at the inner
        width the projections, attention and the GEGLU feed-forward (models/memory.py
        TEMPORAL_INNER_FACTOR), and the attention scores."""
        inner = self.proj_in.out_features
        heads = self.transformer_blocks[0].attn1.heads
        elements = (
            num_frames * (self.proj_in.in_features + TEMPORAL_INNER_FACTOR * inner) + heads * num_frames**2
        )
        return elements * like.element_size()
