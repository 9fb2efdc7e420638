"""The tiny preset: the published layout, loadable by the real loading code, runs the whole cascade."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch

from models import GenerationParams, Show1Cascade, StageSteps
from models.tiny import LAYOUT_VERSION, make_tiny_preset
from tests.models.golden_case import PUBLISHED_CASE, models_dir, requires_golden

# tiny-d: built as the published folders are (../shared/published/README.md).
GOLDEN = models_dir(PUBLISHED_CASE)
# How many shards a sharded weight file is cut into depends on the widths; the names otherwise agree.
_SHARD = re.compile(r"-\d{5}-of-\d{5}\.")
# Written by the libraries' versions, not part of the layout.
_VERSION_KEYS = {"_diffusers_version", "_name_or_path"}


def relative_files(root: Path) -> set[str]:
    return {_SHARD.sub("-SHARD.", str(path.relative_to(root))) for path in root.rglob("*") if path.is_file()}


def read(path: Path) -> dict:
    return {key: value for key, value in json.loads(path.read_text()).items() if key not in _VERSION_KEYS}


def golden_folders() -> list[Path]:
    return sorted(path for path in GOLDEN.iterdir() if path.is_dir())


@requires_golden
def test_same_folders_and_file_names_as_the_published_checkpoints(tiny_preset: Path):
    assert {path.name for path in golden_folders()} == {
        path.name for path in tiny_preset.iterdir() if path.is_dir()
    }
    for folder in golden_folders():
        assert relative_files(tiny_preset / folder.name) == relative_files(folder), folder.name
    # Every shard an index names is there, and no other.
    for index in tiny_preset.rglob("*.index.json"):
        named = set(json.loads(index.read_text())["weight_map"].values())
        assert named == {path.name for path in index.parent.glob("pytorch_model-*.bin")}, index
        assert len(named) == 2, index


@requires_golden
def test_same_model_index_and_schedulers_as_the_published_checkpoints(tiny_preset: Path):
    for folder in golden_folders():
        ours = tiny_preset / folder.name
        assert read(ours / "model_index.json") == read(folder / "model_index.json"), folder.name
        # Scheduler configs are the published values (tiny-d copies them from the Hub).
        for config in folder.glob("*/scheduler_config.json"):
            relative = config.relative_to(folder)
            assert read(ours / relative) == read(config), (folder.name, relative)


@requires_golden
def test_same_model_config_keys_as_the_published_checkpoints(tiny_preset: Path):
    for config in [*GOLDEN.glob("*/unet/config.json"), *GOLDEN.glob("*/vae/config.json")]:
        relative = config.relative_to(GOLDEN)
        ours, theirs = read(tiny_preset / relative), read(config)
        assert ours["_class_name"] == theirs["_class_name"], relative
        if theirs["_class_name"] == "UNet3DConditionModel":
            # The reference's class, whose options Show1UNet3DConditionModel takes exactly.
            assert set(ours) == set(theirs), (relative, set(ours) ^ set(theirs))
        else:
            # diffusers' own classes: newer versions write more keys.
            assert set(theirs) <= set(ours), (relative, set(theirs) - set(ours))
        for key in ("in_channels", "out_channels", "mid_block_type"):
            assert ours.get(key) == theirs.get(key), (relative, key)
        for key in ("down_block_types", "up_block_types"):
            # Fewer or more levels, the same kinds.
            assert set(ours[key]) == set(theirs[key]), (relative, key)
        for key in ("attention_head_dim", "layers_per_block"):
            if key in theirs:
                assert type(ours[key]) is type(theirs[key]), (relative, key)
    # The options that pick the code path, as published.
    sr1 = read(tiny_preset / "show-1-sr1" / "unet" / "config.json")
    assert sr1["class_embed_type"] == "timestep" and sr1["only_cross_attention"] is False
    assert sr1["resnet_skip_time_act"] is True and sr1["time_embedding_act_fn"] == "gelu"
    assert sr1["time_embedding_dim"] == sr1["block_out_channels"][-1]
    assert sr1["cross_attention_dim"] != sr1["encoder_hid_dim"]
    sr2 = read(tiny_preset / "show-1-sr2" / "unet" / "config.json")
    assert sr2["transfromer_in_opt"] is True and sr2["use_linear_projection"] is True


@requires_golden
def test_weight_dtypes_as_the_published_checkpoints(tiny_preset: Path):
    def dtypes(folder: Path) -> set[torch.dtype]:
        found: set[torch.dtype] = set()
        for path in folder.glob("*.bin"):
            found |= {tensor.dtype for tensor in torch.load(path, weights_only=True).values()}
        return found

    for folder in GOLDEN.glob("*/*"):
        if any(folder.glob("*.bin")):
            relative = folder.relative_to(GOLDEN)
            assert dtypes(tiny_preset / relative) == dtypes(folder), relative


def test_preset_is_deterministic_and_idempotent(tmp_path: Path, tiny_preset: Path):
    again = make_tiny_preset(tmp_path / "again")
    for weights in (
        "show-1-sr1/unet/diffusion_pytorch_model.bin",
        "show-1-base/text_encoder/pytorch_model-00001-of-00002.bin",
    ):
        assert (again / weights).read_bytes() == (tiny_preset / weights).read_bytes(), weights
    stamp = (again / "tiny-preset.complete").stat().st_mtime_ns
    make_tiny_preset(tmp_path / "again")
    assert (again / "tiny-preset.complete").stat().st_mtime_ns == stamp
    # A preset cached by a version with another layout is made again.
    (again / "tiny-preset.complete").write_text(json.dumps({"seed": 0}))
    (again / "show-1-base" / "unet" / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"old")
    make_tiny_preset(tmp_path / "again")
    assert json.loads((again / "tiny-preset.complete").read_text())["layout"] == LAYOUT_VERSION
    assert not (again / "show-1-base" / "unet" / "diffusion_pytorch_model.fp16.safetensors").exists()


def test_whole_cascade_runs_on_it(tiny_preset: Path):
    cascade = Show1Cascade.from_pretrained(tiny_preset)
    models = cascade.models
    assert [
        models.base_scheduler.class_name,
        models.sr1_scheduler.class_name,
        models.if_scheduler.class_name,
    ] == [
        "DPMSolverMultistepScheduler",
        "DPMSolverMultistepScheduler",
        "DDPMScheduler",
    ]
    assert models.sr1_scheduler.prediction_type == "v_prediction"
    assert type(models.sr2_unet).__name__ == "Show1UNet3DConditionModel"
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
