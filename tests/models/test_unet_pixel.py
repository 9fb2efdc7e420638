"""The pixel video UNet against the reference's recorded forward passes, and its config/loading rules."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest
import torch
from diffusers.models.embeddings import TimestepEmbedding
from safetensors import safe_open
from safetensors.torch import load_file

from models.errors import CheckpointError
from models.unet_pixel import PixelUNet3DConditionModel
from tests.models.golden_case import GOLDEN_ROOT, requires_golden

pytestmark = requires_golden
GOLDEN = GOLDEN_ROOT / "tiny-a"
FOLDERS = {
    "base": GOLDEN / "models" / "show-1-base" / "unet",
    "interp": GOLDEN / "models" / "show-1-interpolation" / "unet",
    "sr1": GOLDEN / "models" / "show-1-sr1" / "unet",
    "transformer_in": GOLDEN / "extra" / "unet-transformer-in",
}
RECORDINGS = {
    "base": GOLDEN / "unet_base.safetensors",
    "interp": GOLDEN / "unet_interp.safetensors",
    "sr1": GOLDEN / "unet_sr1.safetensors",
    "transformer_in": GOLDEN / "unet_transformer_in.safetensors",
}
TOLERANCE = 1e-4


@cache
def load(name: str) -> PixelUNet3DConditionModel:
    return PixelUNet3DConditionModel.from_pretrained(FOLDERS[name], torch_dtype=torch.float32)


def run(model: PixelUNet3DConditionModel, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(
            inputs["sample"],
            inputs["timestep"],
            inputs["encoder_hidden_states"],
            class_labels=inputs.get("class_labels"),
        ).sample


def weight_file(folder: Path) -> Path:
    return next(folder.glob("diffusion_pytorch_model*.safetensors"))


def small_inputs(model: PixelUNet3DConditionModel, frames: int = 3) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    config = model.config
    return {
        "sample": torch.randn(2, config.in_channels, frames, 16, 16, generator=generator),
        "timestep": torch.tensor([10.0, 500.0]),
        "encoder_hidden_states": torch.randn(2, 7, config.encoder_hid_dim, generator=generator),
    }


@pytest.mark.parametrize("name", list(FOLDERS))
def test_forward_matches_reference(name: str, record_property: Callable[[str, object], None]) -> None:
    recorded = load_file(RECORDINGS[name])
    output = run(load(name), recorded)
    assert output.shape == recorded["output"].shape
    diff = (output.double() - recorded["output"].double()).abs().max().item()
    print(f"{name}: max |diff| = {diff:.3e}")
    record_property("max_abs_diff", diff)
    assert diff <= TOLERANCE


@pytest.mark.parametrize("name", list(FOLDERS))
def test_checkpoint_keys_match_exactly(name: str) -> None:
    _, info = PixelUNet3DConditionModel.from_pretrained(FOLDERS[name], output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    with safe_open(weight_file(FOLDERS[name]), "pt") as weights:
        assert set(load(name).state_dict()) == set(weights.keys())


def test_picks_fp16_variant_and_plain_file(tmp_path: Path) -> None:
    assert weight_file(FOLDERS["base"]).name == "diffusion_pytorch_model.fp16.safetensors"
    assert weight_file(FOLDERS["sr1"]).name == "diffusion_pytorch_model.safetensors"
    # The plain file here holds weights of another model, so loading it would fail the strict key check.
    shutil.copytree(FOLDERS["base"], tmp_path / "unet")
    shutil.copy(
        weight_file(FOLDERS["transformer_in"]), tmp_path / "unet" / "diffusion_pytorch_model.safetensors"
    )
    PixelUNet3DConditionModel.from_pretrained(tmp_path / "unet")


def test_missing_weights_fail_loudly(tmp_path: Path) -> None:
    shutil.copy(FOLDERS["transformer_in"] / "config.json", tmp_path / "config.json")
    shutil.copy(weight_file(FOLDERS["base"]), tmp_path / "diffusion_pytorch_model.safetensors")
    with pytest.raises(CheckpointError, match=r"missing: .*transformer_in\.proj_in\.weight"):
        PixelUNet3DConditionModel.from_pretrained(tmp_path)


def test_unexpected_weights_fail_loudly(tmp_path: Path) -> None:
    shutil.copy(FOLDERS["base"] / "config.json", tmp_path / "config.json")
    shutil.copy(weight_file(FOLDERS["transformer_in"]), tmp_path / "diffusion_pytorch_model.safetensors")
    with pytest.raises(CheckpointError, match=r"unexpected: .*transformer_in\.proj_in\.weight"):
        PixelUNet3DConditionModel.from_pretrained(tmp_path)


def base_config() -> dict:
    return json.loads((FOLDERS["base"] / "config.json").read_text())


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("num_attention_heads", 8),
        ("time_embedding_type", "fourier"),
        ("time_cond_proj_dim", 16),
        ("class_embed_type", "projection"),
        ("num_class_embeds", 10),
        ("addition_embed_type", "text_time"),
        ("encoder_hid_dim_type", "image_proj"),
        ("resnet_time_scale_shift", "ada_group"),
        ("mid_block_type", "UNetMidBlock3DCrossAttn"),
        ("down_block_types", ["DownBlock3D", "SimpleCrossAttnDownBlock3D"]),
        ("up_block_types", ["SimpleCrossAttnUpBlock3D", "CrossAttnUpBlock3D"]),
        ("norm_num_groups", None),
        ("cross_attention_dim", [64, 64]),
        ("class_embeddings_concat", True),
    ],
)
def test_unsupported_option_is_rejected_by_name(option: str, value: object) -> None:
    config = {**base_config(), option: value}
    with pytest.raises(ValueError, match=option):
        PixelUNet3DConditionModel.from_config(config)
    with pytest.raises(ValueError, match=option):
        PixelUNet3DConditionModel(**{k: v for k, v in config.items() if not k.startswith("_")})


# Options the reference accepts and never reads for these block and embedding kinds.
IGNORED_BY_THE_REFERENCE = {
    "dual_cross_attention": True,
    "use_linear_projection": True,
    "upcast_attention": True,
    "downsample_padding": 0,
    "transformer_layers_per_block": 2,
    "projection_class_embeddings_input_dim": 16,
    "addition_time_embed_dim": 16,
}


def test_options_the_reference_ignores_are_accepted_ignored_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    recorded = load_file(RECORDINGS["base"])
    expected = run(load("base"), recorded)
    shutil.copytree(FOLDERS["base"], tmp_path / "unet")
    config = {**base_config(), **IGNORED_BY_THE_REFERENCE, "some_new_option": 1}
    (tmp_path / "unet" / "config.json").write_text(json.dumps(config))
    with caplog.at_level(logging.INFO):
        first = PixelUNet3DConditionModel.from_pretrained(tmp_path / "unet").eval()
        PixelUNet3DConditionModel.from_pretrained(tmp_path / "unet")
    assert torch.equal(run(first, recorded), expected)
    for option, value in IGNORED_BY_THE_REFERENCE.items():
        said = [r.getMessage() for r in caplog.records if f"ignores {option}={value!r}" in r.getMessage()]
        assert len(said) == 1, (option, [r.getMessage() for r in caplog.records])
    assert any("some_new_option" in r.getMessage() for r in caplog.records)


def test_num_class_embeds_beside_a_timestep_class_embedding_is_ignored() -> None:
    """The reference builds an nn.Embedding only when class_embed_type is unset; sr1's is "timestep"."""
    config = json.loads((FOLDERS["sr1"] / "config.json").read_text())
    assert config["class_embed_type"] == "timestep"
    model = PixelUNet3DConditionModel.from_config({**config, "num_class_embeds": 1000})
    assert isinstance(model.class_embedding, TimestepEmbedding)


def test_published_option_values_are_accepted() -> None:
    """Values the reference accepts beyond the golden configs: per-block lists, concat without text."""
    config = {
        **base_config(),
        "layers_per_block": [1, 2],
        "attention_head_dim": [16, 32],
        "only_cross_attention": [False, True],
        "mid_block_only_cross_attention": True,
        "transformer_layers_per_block": [1, 1],
        "time_embedding_act_fn": "silu",
        "timestep_post_act": "silu",
        "center_input_sample": True,
        "class_embed_type": "timestep",
        "class_embeddings_concat": True,
        "addition_embed_type": None,
    }
    model = PixelUNet3DConditionModel.from_config(config).eval()
    inputs = small_inputs(model)
    with torch.no_grad():
        out = model(**inputs, class_labels=torch.tensor([250, 250])).sample
    assert out.shape == (2, 6, 3, 16, 16)
    assert model.mid_block.attentions[0].to_k is None
    # As in the reference, up blocks take attention_head_dim in down-block order: 64 channels / 16.
    assert model.up_blocks[0].attentions[0].heads == 4
    assert model.up_blocks[0].resnets[0].time_emb_proj.in_features == 2 * 128


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    recorded = load_file(RECORDINGS["sr1"])
    expected = run(load("sr1"), recorded)
    PixelUNet3DConditionModel.from_pretrained(FOLDERS["sr1"], torch_dtype=torch.float16).save_pretrained(
        tmp_path / "fp16", variant="fp16"
    )
    load("sr1").save_pretrained(tmp_path / "fp32")
    for folder in ("fp16", "fp32"):
        reloaded = PixelUNet3DConditionModel.from_pretrained(tmp_path / folder, torch_dtype=torch.float32)
        saved = json.loads((tmp_path / folder / "config.json").read_text())
        assert saved["_class_name"] == "PixelUNet3DConditionModel"
        assert {k: v for k, v in reloaded.config.items() if not k.startswith("_")} == {
            k: v for k, v in load("sr1").config.items() if not k.startswith("_")
        }
        # The golden weights are exact in float16, so both copies compute identically.
        assert torch.equal(run(reloaded, recorded), expected)


def test_timestep_forms_agree() -> None:
    model = load("base")
    inputs = small_inputs(model)
    with torch.no_grad():
        batched = model(inputs["sample"], torch.tensor([7, 7]), inputs["encoder_hidden_states"]).sample
        scalar = model(inputs["sample"], torch.tensor(7), inputs["encoder_hidden_states"]).sample
        python_int = model(inputs["sample"], 7, inputs["encoder_hidden_states"], return_dict=False)[0]
    assert torch.equal(batched, scalar) and torch.equal(batched, python_int)


def test_frames_interact_and_videos_do_not() -> None:
    """The temporal layers carry a change in one frame to the others; videos in a batch stay separate."""
    model = load("base")
    inputs = small_inputs(model)
    edited = inputs["sample"].clone()
    edited[0, :, 0] += 1.0
    with torch.no_grad():
        before = model(**inputs).sample
        after = model(**{**inputs, "sample": edited}).sample
    assert not torch.allclose(before[0, :, 2], after[0, :, 2])
    torch.testing.assert_close(before[1], after[1], rtol=0, atol=1e-5)


def test_sr1_requires_noise_level() -> None:
    model = load("sr1")
    recorded = load_file(RECORDINGS["sr1"])
    with pytest.raises(ValueError, match="class_labels"):
        model(recorded["sample"], recorded["timestep"], recorded["encoder_hidden_states"])
