"""The Show-1 cascade as a library.

Parameters, stage names and the cancellation exception import without torch, so the API process can
use them; the cascade itself (torch, diffusers, transformers) loads on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from models.errors import GenerationCancelled
from models.params import STAGES, GenerationParams, StageGuidance, StageSteps, steps_per_stage

if TYPE_CHECKING:
    from models.cascade import GenerationResult, Show1Cascade

__all__ = [
    "STAGES",
    "GenerationCancelled",
    "GenerationParams",
    "GenerationResult",
    "Show1Cascade",
    "StageGuidance",
    "StageSteps",
    "steps_per_stage",
]

_TORCH_EXPORTS = {"Show1Cascade", "GenerationResult"}


def __getattr__(name: str) -> Any:
    if name in _TORCH_EXPORTS:
        from models import cascade

        return getattr(cascade, name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")
