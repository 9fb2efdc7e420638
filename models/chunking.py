"""Working memory: how large one piece of separable work in a UNet forward may be.

The activations that grow with frames x pixels are separable where the algorithm is per token or per
frame (docs/design.md, "Memory"): the temporal transformers treat every pixel's frames as an
independent sequence, and the spatial layers (ResNets, attention) treat every frame as an independent
image. Such work runs in pieces whose intermediates stay within one budget, `WorkingMemory.bytes`,
set once per cascade (`Show1UNet3DConditionModel.set_working_memory`); the GroupNorms that span all
frames or all pixels of a video stay whole. Each piece computes exactly what the whole would, so the
results differ from an unchunked run by float rounding only (tests/models/test_chunking.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from models.memory import ATTENTION_TRANSIENT_MAPS, DEFAULT_WORKING_BYTES


@dataclass(frozen=True)
class WorkingMemory:
    """The most the intermediates of one chunked operation may take, in bytes."""

    bytes: int = DEFAULT_WORKING_BYTES

    def rows(self, total: int, bytes_per_row: int) -> int:
        """How many of `total` independent rows (sequences, frames) fit the budget at once; at least 1."""
        return max(1, min(total, self.bytes // max(bytes_per_row, 1)))


def map_rows(work: Callable[[slice], torch.Tensor], total: int, rows_per_piece: int) -> torch.Tensor:
    """`work(rows)` for consecutive pieces of `total` rows along dim 0, put together.

    The output is allocated once, after the first piece, so the pieces are never held twice.
    """
    if rows_per_piece >= total:
        return work(slice(0, total))
    first = work(slice(0, rows_per_piece))
    out = first.new_empty((total, *first.shape[1:]))
    out[:rows_per_piece] = first
    del first
    for start in range(rows_per_piece, total, rows_per_piece):
        piece = slice(start, min(start + rows_per_piece, total))
        out[piece] = work(piece)
    return out


def over_frames(
    work: Callable[[slice], torch.Tensor], frames: int, bytes_per_frame: int, memory: WorkingMemory
) -> torch.Tensor:
    """A spatial layer over a batch of frames, as many frames at a time as `memory` allows."""
    return map_rows(work, frames, memory.rows(frames, bytes_per_frame))


def resnet_bytes_per_frame(hidden: torch.Tensor, out_channels: int, scale: float = 1.0) -> int:
    """A ResNet block's intermediates for one frame: the normalised input, then three tensors at the
    output width (convolution, normalisation, second convolution), `scale` times the input's pixels."""
    _, channels, height, width = hidden.shape
    return int(height * width * (channels + 3 * out_channels * scale)) * hidden.element_size()


def attention_bytes_per_frame(hidden: torch.Tensor) -> int:
    """A spatial transformer's intermediates for one frame (models/memory.py ATTENTION_TRANSIENT_MAPS
    tensors of the input's size). The attention kernels do not materialise the score matrix."""
    _, channels, height, width = hidden.shape
    return height * width * channels * ATTENTION_TRANSIENT_MAPS * hidden.element_size()


class FrameChunkedLayers:
    """For blocks whose spatial layers (ResNets, attention) see a video as a batch of frames: runs
    them a piece of the frames at a time, within the block's `working_memory`."""

    working_memory = WorkingMemory()

    def frames_through_resnet(
        self, resnet: torch.nn.Module, hidden: torch.Tensor, temb: torch.Tensor, scale: float = 1.0
    ) -> torch.Tensor:
        """`resnet(hidden, temb)`; `scale` is the ratio of its output's pixels to its input's."""
        per_frame = resnet_bytes_per_frame(hidden, resnet.out_channels, scale)
        return over_frames(
            lambda frames: resnet(hidden[frames], temb[frames]),
            hidden.shape[0],
            per_frame,
            self.working_memory,
        )

    def frames_through_attention(
        self,
        attend: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        hidden: torch.Tensor,
        text: torch.Tensor,
    ) -> torch.Tensor:
        """`attend(hidden, text)` with each frame's own row of the text states."""
        return over_frames(
            lambda frames: attend(hidden[frames], text[frames]),
            hidden.shape[0],
            attention_bytes_per_frame(hidden),
            self.working_memory,
        )
