"""The recorded reference runs (the golden sets), as parameters and tensors.

The sets are too large for the tracked tree (the device tool carries at most 64 MiB), so they stay
where the workplace keeps them: `../shared/golden` beside the checkout. This module is the one place
that names it; `SHOW1_GOLDEN_DIR` overrides it, and tests that need a set skip, saying where to put
it, when none is found.

tiny-d is built as the published folders are (DPM-Solver++ pixel stages, v-prediction sr1, sr2
written by the reference's own UNet class) and carries the strict tests; tiny-a (full-scale random
UNets, chaotic past interpolation on another CPU) serves per-forward and per-stage checks; tiny-c
(UNet outputs scaled down, tame, DDPM-configured) keeps the DDPM path exact end to end. The sets'
README.md has the figures.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from models.params import GenerationParams, StageGuidance, StageSteps

_REPO = Path(__file__).resolve().parents[2]
# Beside the checkout, where every developer's and CI's machine has it; a clone elsewhere (CI clones
# into a temporary folder) finds the workplace's copy.
_GOLDEN_PLACES = (_REPO.parent / "shared" / "golden", Path("/work/shared/golden"))


def _find_golden_root() -> Path | None:
    if configured := os.environ.get("SHOW1_GOLDEN_DIR"):
        return Path(configured)
    return next((place for place in _GOLDEN_PLACES if (place / "tiny-d").is_dir()), None)


_FOUND = _find_golden_root()
GOLDEN_ROOT = _FOUND or _GOLDEN_PLACES[0]
requires_golden = pytest.mark.skipif(
    _FOUND is None or not (GOLDEN_ROOT / "tiny-d").is_dir(),
    reason=f"golden sets not found: put them at {_GOLDEN_PLACES[0]} or set SHOW1_GOLDEN_DIR to their folder",
)
GOLDEN_DIR = GOLDEN_ROOT / "tiny-a"
MODELS_DIR = GOLDEN_DIR / "models"
TAME_CASE = "tiny-c"
PUBLISHED_CASE = "tiny-d"
# End to end from the prompt, per tame case and stage (the golden README's limits); frames as uint8
# within UINT8_LEVELS.
END_TO_END_LIMITS = {
    TAME_CASE: {
        "prompt_embeds": 1e-4,
        "negative_prompt_embeds": 1e-4,
        "keyframes": 1e-4,
        "interpolated": 1e-4,
        "first_frame_sr": 1e-4,
        "sr1": 1e-4,
        "final": 1e-3,
    },
    PUBLISHED_CASE: {
        "prompt_embeds": 1e-4,
        "negative_prompt_embeds": 1e-4,
        "keyframes": 1e-4,
        "interpolated": 1e-4,
        "first_frame_sr": 1e-4,
        "sr1": 5e-4,
        "final": 5e-4,
    },
}
UINT8_LEVELS = 2
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


def models_dir(name: str = "tiny-a") -> Path:
    return GOLDEN_ROOT / name / "models"


@cache
def case(name: str = "tiny-a") -> dict:
    return json.loads((GOLDEN_ROOT / name / "case.json").read_text())


@cache
def recorded(name: str = "tiny-a", file: str = "cascade.safetensors") -> dict[str, torch.Tensor]:
    return load_file(GOLDEN_ROOT / name / file)


def case_params(name: str = "tiny-a", **overrides: object) -> GenerationParams:
    """The recorded run's parameters (the sr2 guidance is the pipeline default both sides use).

    The recorded cascades ran the keyframe stage in eval mode, hence keyframe_dropout "off" unless
    overridden; keyframes_train_mode.safetensors holds the reference's training-mode keyframes.
    """
    c = case(name)
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
        "keyframe_dropout": "off",
    }
    values.update(overrides)
    return GenerationParams(**values)


def max_diff(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return (actual.double() - expected.double()).abs().max().item()


def unit_range(video: torch.Tensor) -> torch.Tensor:
    """Model space to displayed [0, 1] frames."""
    return (video * 0.5 + 0.5).clamp(0, 1)
