"""The Show-1 video UNet class against the reference's recorded forward passes, its config and loading rules,
and the reference class's semantics for the SD-style blocks of sr2."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest
import torch
from diffusers import UNet3DConditionModel
from diffusers.models.embeddings import TimestepEmbedding
from safetensors import safe_open
from safetensors.torch import load_file

from models.errors import CheckpointError
from models.unet_3d import Show1UNet3DConditionModel
from tests.models.golden_case import GOLDEN_ROOT, PUBLISHED_CASE, requires_golden

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
def load(name: str) -> Show1UNet3DConditionModel:
    return Show1UNet3DConditionModel.from_pretrained(FOLDERS[name], torch_dtype=torch.float32)


def run(model: Show1UNet3DConditionModel, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(
            inputs["sample"],
            inputs["timestep"],
            inputs["encoder_hidden_states"],
            class_labels=inputs.get("class_labels"),
        ).sample


def weight_file(folder: Path) -> Path:
    return next(folder.glob("diffusion_pytorch_model*.safetensors"))


def small_inputs(model: Show1UNet3DConditionModel, frames: int = 3) -> dict[str, torch.Tensor]:
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
    _, info = Show1UNet3DConditionModel.from_pretrained(FOLDERS[name], output_loading_info=True)
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
    Show1UNet3DConditionModel.from_pretrained(tmp_path / "unet")


def test_missing_weights_fail_loudly(tmp_path: Path) -> None:
    shutil.copy(FOLDERS["transformer_in"] / "config.json", tmp_path / "config.json")
    shutil.copy(weight_file(FOLDERS["base"]), tmp_path / "diffusion_pytorch_model.safetensors")
    with pytest.raises(CheckpointError, match=r"missing: .*transformer_in\.proj_in\.weight"):
        Show1UNet3DConditionModel.from_pretrained(tmp_path)


def test_unexpected_weights_fail_loudly(tmp_path: Path) -> None:
    shutil.copy(FOLDERS["base"] / "config.json", tmp_path / "config.json")
    shutil.copy(weight_file(FOLDERS["transformer_in"]), tmp_path / "diffusion_pytorch_model.safetensors")
    with pytest.raises(CheckpointError, match=r"unexpected: .*transformer_in\.proj_in\.weight"):
        Show1UNet3DConditionModel.from_pretrained(tmp_path)


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
        ("mid_block_type", "UNetMidBlock2DCrossAttn"),
        ("down_block_types", ["DownBlock2D", "SimpleCrossAttnDownBlock3D"]),
        ("up_block_types", ["SimpleCrossAttnUpBlock3D", "KCrossAttnUpBlock2D"]),
        ("transformer_layers_per_block", [1, 1.5]),
        ("norm_num_groups", None),
        ("cross_attention_dim", [64, 64]),
        ("class_embeddings_concat", True),
    ],
)
def test_unsupported_option_is_rejected_by_name(option: str, value: object) -> None:
    config = {**base_config(), option: value}
    with pytest.raises(ValueError, match=option):
        Show1UNet3DConditionModel.from_config(config)
    with pytest.raises(ValueError, match=option):
        Show1UNet3DConditionModel(**{k: v for k, v in config.items() if not k.startswith("_")})


# Options the reference accepts and never reads for the IF block and embedding kinds (the SD-style
# blocks of sr2 read the middle four).
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
        first = Show1UNet3DConditionModel.from_pretrained(tmp_path / "unet").eval()
        Show1UNet3DConditionModel.from_pretrained(tmp_path / "unet")
    assert torch.equal(run(first, recorded), expected)
    for option, value in IGNORED_BY_THE_REFERENCE.items():
        said = [r.getMessage() for r in caplog.records if f"ignores {option}={value!r}" in r.getMessage()]
        assert len(said) == 1, (option, [r.getMessage() for r in caplog.records])
    assert any("some_new_option" in r.getMessage() for r in caplog.records)


def test_num_class_embeds_beside_a_timestep_class_embedding_is_ignored() -> None:
    """The reference builds an nn.Embedding only when class_embed_type is unset; sr1's is "timestep"."""
    config = json.loads((FOLDERS["sr1"] / "config.json").read_text())
    assert config["class_embed_type"] == "timestep"
    model = Show1UNet3DConditionModel.from_config({**config, "num_class_embeds": 1000})
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
    model = Show1UNet3DConditionModel.from_config(config).eval()
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
    Show1UNet3DConditionModel.from_pretrained(FOLDERS["sr1"], torch_dtype=torch.float16).save_pretrained(
        tmp_path / "fp16", variant="fp16"
    )
    load("sr1").save_pretrained(tmp_path / "fp32")
    for folder in ("fp16", "fp32"):
        reloaded = Show1UNet3DConditionModel.from_pretrained(tmp_path / folder, torch_dtype=torch.float32)
        saved = json.loads((tmp_path / folder / "config.json").read_text())
        assert saved["_class_name"] == "Show1UNet3DConditionModel"
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


# The reference class's semantics for the SD-style blocks, on tiny-d's sr2 (saved by that class).
SR2 = GOLDEN_ROOT / PUBLISHED_CASE / "models" / "show-1-sr2"


def test_the_published_sr2_unet_loads_with_the_reference_class_semantics() -> None:
    """attention_head_dim [2, 4] is heads per level (reversed on the way up), the temporal transformer
    after conv_in has 8 heads of 64, and use_linear_projection makes linear projections."""
    config = json.loads((SR2 / "unet" / "config.json").read_text())
    assert config["attention_head_dim"] == [2, 4] and config["use_linear_projection"]
    assert json.loads((SR2 / "model_index.json").read_text())["unet"][0].startswith("showone")
    model, info = Show1UNet3DConditionModel.from_pretrained(SR2 / "unet", output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    down_attention = model.down_blocks[0].attentions[0]
    assert down_attention.transformer_blocks[0].attn1.heads == 2
    assert isinstance(down_attention.proj_in, torch.nn.Linear)
    assert model.down_blocks[0].temp_attentions[0].transformer_blocks[0].attn1.heads == 2
    assert model.mid_block.attentions[0].transformer_blocks[0].attn1.heads == 4
    assert model.up_blocks[1].attentions[0].transformer_blocks[0].attn1.heads == 2
    assert not hasattr(model.up_blocks[0], "attentions")  # UpBlock3D
    assert model.transformer_in.proj_in.out_features == 8 * 64
    assert model.transformer_in.transformer_blocks[0].attn1.heads == 8


def test_diffusers_class_reads_the_published_sr2_config_otherwise(tmp_path: Path) -> None:
    """What the project did before: diffusers' UNet3DConditionModel takes the key as a head width, so a
    per-level list breaks its construction and an int builds another temporal transformer."""
    with pytest.raises(TypeError, match="tuple of ints"):
        UNet3DConditionModel.from_pretrained(SR2 / "unet")
    shutil.copytree(SR2 / "unet", tmp_path / "unet")
    config = {**json.loads((SR2 / "unet" / "config.json").read_text()), "attention_head_dim": 2}
    (tmp_path / "unet" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"transformer_in\.proj_in\.weight"):
        UNet3DConditionModel.from_pretrained(tmp_path / "unet")


def test_an_integer_head_count_applies_to_every_level() -> None:
    config = {**json.loads((SR2 / "unet" / "config.json").read_text()), "attention_head_dim": 2}
    model = Show1UNet3DConditionModel.from_config(config)
    assert model.down_blocks[0].attentions[0].transformer_blocks[0].attn1.heads == 2
    assert model.mid_block.attentions[0].transformer_blocks[0].attn1.heads == 2  # 64 channels: heads of 32


def test_sd_blocks_compute_what_diffusers_computes_for_the_same_heads() -> None:
    """With the heads diffusers' class derives from a head width, and its fixed options (linear
    projections, a temporal transformer after conv_in, here as wide as the reference's), both classes are
    one model."""
    torch.manual_seed(0)
    width = 64
    common = {
        "block_out_channels": [64, 128],
        "down_block_types": ["CrossAttnDownBlock3D", "DownBlock3D"],
        "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D"],
        "layers_per_block": 1,
        "cross_attention_dim": 32,
        "in_channels": 4,
        "out_channels": 4,
        "norm_num_groups": 32,
    }
    theirs = UNet3DConditionModel(**common, attention_head_dim=width).eval()
    ours = Show1UNet3DConditionModel(
        **common,
        attention_head_dim=[64 // width, 128 // width],
        transfromer_in_opt=True,
        use_linear_projection=True,
    )
    ours.load_state_dict(theirs.state_dict(), strict=True)
    ours.eval()
    generator = torch.Generator().manual_seed(1)
    sample = torch.randn(2, 4, 3, 16, 24, generator=generator)
    text = torch.randn(2, 5, 32, generator=generator)
    with torch.no_grad():
        expected = theirs(sample, torch.tensor([10, 700]), encoder_hidden_states=text).sample
        actual = ours(sample, torch.tensor([10, 700]), encoder_hidden_states=text).sample
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


def test_sides_the_down_path_does_not_halve_evenly_are_restored() -> None:
    """As the reference forwards upsample sizes: a 10x14 latent through three halvings comes back 10x14."""
    config = {
        **json.loads((SR2 / "unet" / "config.json").read_text()),
        "block_out_channels": [32, 32, 32, 32],
        "attention_head_dim": 2,
        "down_block_types": [
            "CrossAttnDownBlock3D",
            "CrossAttnDownBlock3D",
            "CrossAttnDownBlock3D",
            "DownBlock3D",
        ],
        "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"],
    }
    model = Show1UNet3DConditionModel.from_config(config).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 4, 2, 10, 14), 500, torch.randn(1, 5, 32)).sample
    assert out.shape == (1, 4, 2, 10, 14)
