"""A tiny Show-1 checkpoint set with random weights, generated offline.

Same folder layout, component classes, config keys and weight-file names as the published checkpoints,
so the real loading code runs unchanged; the architectures are shrunk until the whole cascade at the
paper's sizes (8x40x64 keyframes -> 29x320x576) runs in seconds on a laptop CPU. The service's tests
and its demo mode use it. The videos are noise: the weights are random.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from models.weights import BASE, CHECKPOINT_FOLDERS, IF_II, INTERPOLATION, SR1, SR2

# Scheduler settings of the published checkpoints (their scheduler_config.json values).
PIXEL_DDPM = {
    "_class_name": "DDPMScheduler",
    "beta_end": 0.02,
    "beta_schedule": "squaredcos_cap_v2",
    "beta_start": 0.0001,
    "clip_sample": True,
    "clip_sample_range": 1.0,
    "dynamic_thresholding_ratio": 0.95,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.5,
    "steps_offset": 0,
    "thresholding": True,
    "timestep_spacing": "leading",
    "trained_betas": None,
    "variance_type": "learned_range",
}
IMAGE_NOISING_DDPM = {
    **PIXEL_DDPM,
    "dynamic_thresholding_ratio": 0.995,
    "sample_max_value": 1.0,
    "thresholding": False,
    "variance_type": "fixed_small",
}
LATENT_DPM_SOLVER = {
    "_class_name": "DPMSolverMultistepScheduler",
    "algorithm_type": "dpmsolver++",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "dynamic_thresholding_ratio": 0.995,
    "lower_order_final": True,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "solver_order": 2,
    "solver_type": "midpoint",
    "steps_offset": 0,
    "thresholding": False,
    "timestep_spacing": "linspace",
    "trained_betas": None,
    "lambda_min_clipped": float("-inf"),
    "use_karras_sigmas": False,
    "variance_type": None,
}

T5_WIDTH = 16
CLIP_WIDTH = 16
PIXEL_UNET_BASE = {
    "act_fn": "gelu",
    "addition_embed_type": "text",
    "addition_embed_type_num_heads": 2,
    "attention_head_dim": 8,
    # 32 is the floor: the temporal convolution layers group-normalise in 32 groups.
    "block_out_channels": [32, 32],
    "class_embed_type": None,
    "cross_attention_dim": 32,
    "cross_attention_norm": "group_norm",
    "down_block_types": ["ResnetDownsampleBlock3D", "SimpleCrossAttnDownBlock3D"],
    "encoder_hid_dim": T5_WIDTH,
    "encoder_hid_dim_type": "text_proj",
    "in_channels": 3,
    "layers_per_block": 1,
    "mid_block_scale_factor": 1,
    "mid_block_type": "UNetMidBlock3DSimpleCrossAttn",
    "norm_num_groups": 32,
    "only_cross_attention": False,
    "out_channels": 6,
    "resnet_out_scale_factor": 1.0,
    "resnet_skip_time_act": False,
    "resnet_time_scale_shift": "scale_shift",
    "up_block_types": ["SimpleCrossAttnUpBlock3D", "ResnetUpsampleBlock3D"],
}
PIXEL_UNET_SR1 = {
    **PIXEL_UNET_BASE,
    "class_embed_type": "timestep",
    "in_channels": 6,
    "mid_block_scale_factor": 1.4142271248762552,
    "only_cross_attention": True,
    "resnet_out_scale_factor": 1.4142271248762552,
    "resnet_skip_time_act": True,
    "time_embedding_act_fn": "gelu",
    "time_embedding_dim": 32,
}
IF_II_UNET = {
    "act_fn": "gelu",
    "addition_embed_type": "text",
    "addition_embed_type_num_heads": 2,
    "attention_head_dim": 4,
    "block_out_channels": [8, 16],
    "class_embed_type": "timestep",
    "cross_attention_dim": 32,
    "cross_attention_norm": "group_norm",
    "down_block_types": ["ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"],
    "encoder_hid_dim": T5_WIDTH,
    "encoder_hid_dim_type": "text_proj",
    "in_channels": 6,
    "layers_per_block": 1,
    "mid_block_scale_factor": 1.4142271248762552,
    "mid_block_type": "UNetMidBlock2DSimpleCrossAttn",
    "norm_num_groups": 4,
    "only_cross_attention": True,
    "out_channels": 6,
    "resnet_out_scale_factor": 1.4142271248762552,
    "resnet_skip_time_act": True,
    "resnet_time_scale_shift": "scale_shift",
    "time_embedding_act_fn": "gelu",
    "time_embedding_dim": 32,
    "up_block_types": ["SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"],
}
LATENT_UNET = {
    "act_fn": "silu",
    "attention_head_dim": 4,
    "block_out_channels": [32, 32],
    "cross_attention_dim": CLIP_WIDTH,
    "down_block_types": ["CrossAttnDownBlock3D", "DownBlock3D"],
    "in_channels": 4,
    "layers_per_block": 1,
    "norm_num_groups": 32,
    "out_channels": 4,
    "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D"],
}
VAE = {
    "act_fn": "silu",
    "block_out_channels": [8, 8, 8, 8],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 1,
    "norm_num_groups": 4,
    "out_channels": 3,
    "scaling_factor": 0.18215,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}

# Text the T5 sentencepiece model is trained on: enough to cover lowercase prompts.
_TOKENIZER_CORPUS = (
    "a burning lamborghini driving on rainbow. a panda taking a selfie. an astronaut riding a horse "
    "on the moon. close up of a cat playing the piano, high quality video. waves crashing against "
    "rocks at sunset, drone shot. a teddy bear walking in times square; 4k, cinematic! "
    "quick brown fox jumps over the lazy dog 0123456789 ? ( ) , ' \" - _ : / & + = % $ # @ *"
)
_PIECES_FILE = "tiny-preset.complete"


def default_tiny_preset_dir() -> Path:
    cache = os.environ.get("SHOW1_CACHE_DIR") or Path.home() / ".cache" / "show1"
    return Path(cache) / "tiny-preset"


def ensure_tiny_preset(dest: Path | None = None) -> Path:
    """The tiny preset at `dest` (default: the cache dir), made on first use."""
    return make_tiny_preset(dest or default_tiny_preset_dir())


def is_complete(dest: Path) -> bool:
    return (Path(dest) / _PIECES_FILE).is_file()


def make_tiny_preset(dest: Path, seed: int = 0) -> Path:
    """Write the five checkpoint folders under `dest`; does nothing if a complete preset is there.

    Built in a sibling temp folder and renamed into place, so processes starting together never load
    a half-written preset (the loser of the rename race discards its copy).
    """
    dest = Path(dest)
    if is_complete(dest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-preset-", dir=dest.parent))
    try:
        _write_preset(staging, seed)
        (staging / _PIECES_FILE).write_text(json.dumps({"seed": seed}))
        if dest.exists() and not is_complete(dest):
            shutil.rmtree(dest, ignore_errors=True)
        try:
            staging.rename(dest)
        except OSError:
            if not is_complete(dest):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def _write_preset(root: Path, seed: int) -> None:
    from diffusers import AutoencoderKL, UNet2DConditionModel, UNet3DConditionModel

    from models.unet_3d import Show1UNet3DConditionModel

    generator = _Seeds(seed)
    t5_folder = root / "_t5"
    _write_t5(t5_folder, generator)
    pixel_pipelines = {
        BASE: ("TextToVideoIFPipeline", PIXEL_UNET_BASE, "fp16", False),
        INTERPOLATION: ("TextToVideoIFInterpPipeline", {**PIXEL_UNET_BASE, "in_channels": 7}, "fp16", False),
        SR1: ("TextToVideoIFSuperResolutionPipeline_Cond", PIXEL_UNET_SR1, None, True),
    }
    for name, (pipeline, unet_config, variant, noising) in pixel_pipelines.items():
        folder = root / name
        _copy_t5(t5_folder, folder, variant)
        generator.seed_next()
        _save(Show1UNet3DConditionModel(**unet_config), folder / "unet", variant)
        _write_json(folder / "scheduler" / "scheduler_config.json", PIXEL_DDPM)
        if noising:
            _write_json(folder / "image_noising_scheduler" / "scheduler_config.json", IMAGE_NOISING_DDPM)
        _write_model_index(folder, pipeline, _pixel_components(noising, "showone.models.unet_3d_condition"))

    if_folder = root / IF_II
    _copy_t5(t5_folder, if_folder, "fp16")
    generator.seed_next()
    _save(UNet2DConditionModel(**IF_II_UNET), if_folder / "unet", "fp16")
    _write_json(if_folder / "scheduler" / "scheduler_config.json", PIXEL_DDPM)
    _write_json(if_folder / "image_noising_scheduler" / "scheduler_config.json", IMAGE_NOISING_DDPM)
    _write_model_index(if_folder, "IFSuperResolutionPipeline", _pixel_components(True, "diffusers"))

    sr2 = root / SR2
    generator.seed_next()
    _save(UNet3DConditionModel(**LATENT_UNET), sr2 / "unet", None)
    generator.seed_next()
    _save(AutoencoderKL(**VAE), sr2 / "vae", None)
    _write_clip(sr2, generator)
    _write_json(sr2 / "scheduler" / "scheduler_config.json", LATENT_DPM_SOLVER)
    _write_model_index(
        sr2,
        "VideoToVideoSDPipeline",
        {
            "scheduler": ["diffusers", "DPMSolverMultistepScheduler"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "unet": ["diffusers", "UNet3DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
        },
    )
    shutil.rmtree(t5_folder)


class _Seeds:
    """Seeds torch's global generator once per model, so each model's weights depend only on `seed`."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.count = 0

    def seed_next(self) -> None:
        torch.manual_seed(self.seed * 1000 + self.count)
        self.count += 1


def _save(model: torch.nn.Module, folder: Path, variant: str | None) -> None:
    # The published base, interpolation and IF-II checkpoints ship fp16-variant files only.
    if variant == "fp16":
        model = model.half()
    model.save_pretrained(folder, variant=variant, safe_serialization=True)


def _write_t5(folder: Path, seeds: _Seeds) -> None:
    import sentencepiece as spm
    from transformers import T5Config, T5EncoderModel

    tokenizer = folder / "tokenizer"
    tokenizer.mkdir(parents=True)
    corpus = folder / "corpus.txt"
    corpus.write_text(_TOKENIZER_CORPUS.replace(". ", ".\n"))
    # T5's id layout: pad 0, eos 1, unk 2, no bos.
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(tokenizer / "spiece"),
        vocab_size=64,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        hard_vocab_limit=False,
        character_coverage=1.0,
        minloglevel=2,
    )
    corpus.unlink()
    (tokenizer / "spiece.vocab").unlink()
    _write_json(
        tokenizer / "special_tokens_map.json",
        {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"},
    )
    _write_json(
        tokenizer / "tokenizer_config.json",
        {
            "eos_token": "</s>",
            "extra_ids": 0,
            "legacy": True,
            "model_max_length": 77,
            "pad_token": "<pad>",
            "tokenizer_class": "T5Tokenizer",
            "unk_token": "<unk>",
        },
    )
    seeds.seed_next()
    config = T5Config(
        vocab_size=64,
        d_model=T5_WIDTH,
        d_kv=4,
        d_ff=32,
        num_layers=1,
        num_heads=4,
        feed_forward_proj="gated-gelu",
        is_encoder_decoder=False,
        pad_token_id=0,
        eos_token_id=1,
    )
    T5EncoderModel(config).save_pretrained(folder / "text_encoder")


def _copy_t5(t5_folder: Path, dest: Path, variant: str | None) -> None:
    from transformers import T5EncoderModel

    shutil.copytree(t5_folder / "tokenizer", dest / "tokenizer")
    encoder = T5EncoderModel.from_pretrained(t5_folder / "text_encoder")
    if variant == "fp16":
        encoder = encoder.half()
    encoder.save_pretrained(dest / "text_encoder", variant=variant)


def _write_clip(folder: Path, seeds: _Seeds) -> None:
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = folder / "tokenizer"
    tokenizer.mkdir(parents=True)
    # A byte-level BPE with no merges: every byte is a token, alone or word-final, as CLIP spells them.
    byte_chars = list(_bytes_to_unicode().values())
    vocab = {char: index for index, char in enumerate(byte_chars)}
    vocab.update({char + "</w>": len(byte_chars) + index for index, char in enumerate(byte_chars)})
    bos, eos = "<|startoftext|>", "<|endoftext|>"
    vocab[bos], vocab[eos] = len(vocab), len(vocab) + 1
    _write_json(tokenizer / "vocab.json", vocab)
    (tokenizer / "merges.txt").write_text("#version: 0.2\n")
    _write_json(
        tokenizer / "special_tokens_map.json",
        {"bos_token": bos, "eos_token": eos, "pad_token": eos, "unk_token": eos},
    )
    _write_json(
        tokenizer / "tokenizer_config.json",
        {
            "bos_token": bos,
            "eos_token": eos,
            "errors": "replace",
            "model_max_length": 77,
            "pad_token": eos,
            "tokenizer_class": "CLIPTokenizer",
            "unk_token": eos,
        },
    )
    seeds.seed_next()
    config = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=CLIP_WIDTH,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=vocab[bos],
        eos_token_id=vocab[eos],
        pad_token_id=vocab[eos],
        hidden_act="quick_gelu",
        projection_dim=CLIP_WIDTH,
    )
    CLIPTextModel(config).save_pretrained(folder / "text_encoder")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + extra)
            extra += 1
    return table


def _pixel_components(noising: bool, unet_library: str) -> dict[str, Any]:
    components: dict[str, Any] = {
        "feature_extractor": [None, None],
        "scheduler": ["diffusers", "DDPMScheduler"],
        "text_encoder": ["transformers", "T5EncoderModel"],
        "tokenizer": ["transformers", "T5Tokenizer"],
        "unet": [
            unet_library,
            "UNet2DConditionModel" if unet_library == "diffusers" else "UNet3DConditionModel",
        ],
    }
    if noising:
        components["image_noising_scheduler"] = ["diffusers", "DDPMScheduler"]
    return components


def _write_model_index(folder: Path, pipeline: str, components: dict[str, Any]) -> None:
    _write_json(folder / "model_index.json", {"_class_name": pipeline, **components})


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


__all__ = ["CHECKPOINT_FOLDERS", "default_tiny_preset_dir", "ensure_tiny_preset", "make_tiny_preset"]
