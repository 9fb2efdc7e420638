"""The recorded reference run in tests/fixtures/golden/tiny-a, as parameters and tensors."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import torch
from safetensors.torch import load_file

from models.params import GenerationParams, StageGuidance, StageSteps

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "golden" / "tiny-a"
MODELS_DIR = GOLDEN_DIR / "models"
# The stage tensors of the recording; `show1 generate --save-stages` writes the same keys.
GOLDEN_KEYS = (
    "prompt_embeds",
    "negative_prompt_embeds",
    "keyframes",
    "interpolated",
    "first_frame_sr",
    "sr1",
    "sr2_input_uint8",
    "final",
    "final_uint8",
)


@cache
def case() -> dict:
    return json.loads((GOLDEN_DIR / "case.json").read_text())


@cache
def recorded() -> dict[str, torch.Tensor]:
    return load_file(GOLDEN_DIR / "cascade.safetensors")


def case_params(**overrides: object) -> GenerationParams:
    """The recorded run's parameters (the sr2 guidance is the pipeline default both sides use)."""
    c = case()
    values = {
        "prompt": c["prompt"],
        "seed": c["seed"],
        "latent_negative_prompt": c["negative_prompt_sr2"],
        "num_keyframes": c["keyframes"],
        "keyframe_size": tuple(c["size"]["base"]),
        "output_size": tuple(c["size"]["sr2"]),
        "steps": StageSteps(**c["steps"]),
        "guidance": StageGuidance(**c["guidance"]),
        "noise_level_sr1_image": c["noise_level"]["sr1_image"],
        "noise_level_sr1": c["noise_level"]["sr1"],
        "sr2_strength": c["sr2_strength"],
        "window": c["window"],
        "stride": c["stride"],
    }
    values.update(overrides)
    return GenerationParams(**values)


def max_diff(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return (actual.double() - expected.double()).abs().max().item()


def unit_range(video: torch.Tensor) -> torch.Tensor:
    """Model space to displayed [0, 1] frames."""
    return (video * 0.5 + 0.5).clamp(0, 1)
