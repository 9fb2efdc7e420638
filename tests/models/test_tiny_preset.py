"""The tiny preset: the published layout, loadable by the real loading code, runs the whole cascade."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from models import GenerationParams, Show1Cascade, StageSteps
from models.tiny import make_tiny_preset
from tests.models.golden_case import GOLDEN_ROOT, requires_golden

GOLDEN = GOLDEN_ROOT / "tiny-a" / "models"


def relative_files(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()}


@requires_golden
def test_same_layout_and_config_keys_as_the_published_checkpoints(tiny_preset: Path):
    for folder in GOLDEN.iterdir():
        assert relative_files(tiny_preset / folder.name) == relative_files(folder), folder.name
        # Model and scheduler configs; tokenizer and transformers configs vary with library versions.
        configs = [
            *folder.glob("*/scheduler_config.json"),
            *folder.glob("unet/config.json"),
            *folder.glob("vae/*.json"),
        ]
        for config in configs:
            ours = json.loads((tiny_preset / folder.name / config.relative_to(folder)).read_text())
            theirs = json.loads(config.read_text())
            assert set(theirs) - {"_diffusers_version"} <= set(ours), (config, set(theirs) - set(ours))


def test_preset_is_deterministic_and_idempotent(tmp_path: Path, tiny_preset: Path):
    again = make_tiny_preset(tmp_path / "again")
    first = (tiny_preset / "show-1-sr1" / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    assert (again / "show-1-sr1" / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == first
    stamp = (again / "tiny-preset.complete").stat().st_mtime_ns
    make_tiny_preset(tmp_path / "again")
    assert (again / "tiny-preset.complete").stat().st_mtime_ns == stamp


def test_whole_cascade_runs_on_it(tiny_preset: Path):
    cascade = Show1Cascade.from_pretrained(tiny_preset)
    params = GenerationParams(
        prompt="a panda taking a selfie",
        seed=3,
        keyframe_size=(16, 24),
        output_size=(64, 112),
        steps=StageSteps(base=2, interp=2, sr1_image=2, sr1=2, sr2=2),
    )
    result = cascade.generate(params)
    assert result.frames.shape == (29, 64, 112, 3) and result.frames.dtype == np.uint8
    assert result.frames.std() > 0
