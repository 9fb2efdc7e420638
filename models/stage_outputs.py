"""Stage outputs a generation can be resumed from.

Every stage of the cascade re-seeds its own generator from the job's seed, and every pixel-SR window
re-seeds too, so given the parameters a stage's output is a pure function of the outputs before it.
A stored output is therefore as good as recomputing it: a run that finds the interpolated video (or
some pixel-SR windows) stored goes on from there and ends with exactly the frames of an uninterrupted
run on the same device and dtype. The cascade names what it stores; where it is kept (the service's
storage, scoped to the job and its attempt) is the caller's business.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Protocol

import torch

from models.params import STAGES

KEYFRAMES, INTERPOLATION, FIRST_FRAME_SR, PIXEL_SR, LATENT_SR = STAGES
# The uint8 frames of the finished video (the latent stage's output, as the MP4 encoder takes it).
FINAL_FRAMES = "frames"
# Stages stored whole as they end; pixel SR is stored per window (window_output), the latent stage as
# FINAL_FRAMES.
STORED_STAGES = (KEYFRAMES, INTERPOLATION, FIRST_FRAME_SR)
# A draft runs the stages up to this one; finishing it runs the rest.
DRAFT_LAST_STAGE = INTERPOLATION


def stages_through(last_stage: str) -> tuple[str, ...]:
    """The cascade's stages up to and including `last_stage`: what a run with that last stage runs."""
    return STAGES[: STAGES.index(last_stage) + 1]


DRAFT_STAGES = stages_through(DRAFT_LAST_STAGE)
FINISH_STAGES = STAGES[len(DRAFT_STAGES) :]

# Where a job enters the cascade, by what it starts from, and the first stage it runs: a prompt makes
# the keyframes; a storyboard's images are the keyframes (interpolation is first); finishing a draft
# starts from its stored interpolation; an upscale is the latent expert stage alone, on the user's clip.
ENTRY_POINTS = {
    "prompt": KEYFRAMES,
    "keyframe_images": INTERPOLATION,
    "draft_id": FIRST_FRAME_SR,
    "input_video": LATENT_SR,
}


def job_stages(entry_point: str = "prompt", *, draft: bool = False) -> tuple[str, ...]:
    """The stages a job runs, in cascade order: from its entry point's first stage to the last one
    (interpolation for a draft, the latent stage otherwise). Admission (cost, and the memory a job
    needs), ETAs and progress all count these stages and no others."""
    first = STAGES.index(ENTRY_POINTS[entry_point])
    last = STAGES.index(DRAFT_LAST_STAGE if draft else LATENT_SR)
    if last < first:
        raise ValueError(f"a draft stops at {DRAFT_LAST_STAGE}; a job entering at {entry_point} runs past it")
    return STAGES[first : last + 1]


def window_output(index: int) -> str:
    """The name of pixel-SR window `index`'s output (its frames, super-resolved)."""
    return f"{PIXEL_SR}.{index}"


class StageOutputs(Protocol):
    """Where a run finds and keeps stage outputs, by name (a stage, a window or FINAL_FRAMES)."""

    def load(self, name: str) -> torch.Tensor | None:
        """The stored output, or None when there is none (or it cannot be read)."""
        ...

    def save(self, name: str, output: torch.Tensor) -> None: ...


@dataclass(frozen=True)
class ResumePoint:
    """Where a run starts: the first stage it computes and, for pixel SR, the first window."""

    stage: str
    window: int = 0

    def to_dict(self) -> dict[str, object]:
        return (
            {"stage": self.stage, "window": self.window} if self.stage == PIXEL_SR else {"stage": self.stage}
        )


def to_bytes(output: torch.Tensor) -> bytes:
    """A stage output as stored: the tensor exactly (dtype and values), on the CPU."""
    buffer = io.BytesIO()
    torch.save(output.detach().to("cpu").contiguous(), buffer)
    return buffer.getvalue()


def from_bytes(data: bytes) -> torch.Tensor:
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
