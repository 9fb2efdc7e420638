"""A tiny Show-1 checkpoint set with random weights, generated offline.

Same folder layout, component classes, config keys and weight-file names as the published checkpoints,
so the real loading code runs unchanged; the architectures are shrunk until the whole cascade at the
paper's sizes (8x40x64 keyframes -> 29x320x576) runs in seconds on a laptop CPU. The service's tests
and its demo mode use it. The videos are noise: the weights are random.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from models.weights import BASE, CHECKPOINT_FOLDERS, IF_II, INTERPOLATION, SR1, SR2

# Scheduler settings of the published checkpoints (their scheduler_config.json values, as
# ../shared/published/ holds them). The showlab pixel stages sample with DPM-Solver++; sr1 predicts v.
PIXEL_DPM_SOLVER = {
    "_class_name": "DPMSolverMultistepScheduler",
    "algorithm_type": "dpmsolver++",
    "beta_end": 0.02,
    "beta_schedule": "squaredcos_cap_v2",
    "beta_start": 0.0001,
    "clip_sample": True,
    "clip_sample_range": 1.0,
    "dynamic_thresholding_ratio": 0.95,
    "lambda_min_clipped": -5.1,
    "lower_order_final": True,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.5,
    "solver_order": 2,
    "solver_type": "midpoint",
    "steps_offset": 0,
    "thresholding": True,
    "timestep_spacing": "linspace",
    "trained_betas": None,
    "use_karras_sigmas": False,
    "variance_type": "fixed_small",
}
SR1_DPM_SOLVER = {
    **PIXEL_DPM_SOLVER,
    "prediction_type": "v_prediction",
    "sample_max_value": 1.0,
}
# DeepFloyd's IF-II-L: DDPM with learned-range variance.
IF_II_DDPM = {
    "_class_name": "DDPMScheduler",
    "beta_end": 0.02,
    "beta_schedule": "squaredcos_cap_v2",
    "beta_start": 0.0001,
    "clip_sample": True,
    "clip_sample_range": 1.0,
    "dynamic_thresholding_ratio": 0.95,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "steps_offset": 0,
    "thresholding": True,
    "timestep_spacing": "leading",
    "trained_betas": None,
    "variance_type": "learned_range",
}
IMAGE_NOISING_DDPM = {
    **IF_II_DDPM,
    "dynamic_thresholding_ratio": 0.995,
    "thresholding": False,
    "variance_type": "fixed_small",
}
# show-1-sr2's, verbatim (keys DPMSolverMultistepScheduler ignores included).
LATENT_DPM_SOLVER = {
    "_class_name": "DPMSolverMultistepScheduler",
    "algorithm_type": "dpmsolver++",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "clip_sample_range": 1.0,
    "dynamic_thresholding_ratio": 0.995,
    "lambda_min_clipped": float("-inf"),
    "lower_order_final": True,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "solver_order": 2,
    "solver_type": "midpoint",
    "steps_offset": 1,
    "thresholding": False,
    "timestep_spacing": "linspace",
    "trained_betas": None,
    "use_karras_sigmas": False,
    "variance_type": None,
}

T5_WIDTH = 16
CLIP_WIDTH = 16
# The published UNet configs with every width shrunk and one layer per block; block kinds, depth and
# the other options as published. 32 is the width floor: the temporal convolution layers
# group-normalise in 32 groups.
PIXEL_UNET_BASE = {
    "act_fn": "gelu",
    "addition_embed_type": "text",
    "addition_embed_type_num_heads": 2,
    "attention_head_dim": 8,
    "block_out_channels": [32, 32, 32, 32],
    "class_embed_type": None,
    "cross_attention_dim": 32,
    "cross_attention_norm": "group_norm",
    "down_block_types": [
        "ResnetDownsampleBlock3D",
        "SimpleCrossAttnDownBlock3D",
        "SimpleCrossAttnDownBlock3D",
        "SimpleCrossAttnDownBlock3D",
    ],
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
    "sample_size": 64,
    "transfromer_in_opt": False,
    "up_block_types": [
        "SimpleCrossAttnUpBlock3D",
        "SimpleCrossAttnUpBlock3D",
        "SimpleCrossAttnUpBlock3D",
        "ResnetUpsampleBlock3D",
    ],
}
# Noisy frames 3 + condition 3 + mask 1.
PIXEL_UNET_INTERP = {**PIXEL_UNET_BASE, "in_channels": 7}
# IF-II-M-sized in the original: three ResNet levels then two attention levels, per-level layer
# counts, a cross-attention width other than T5's, the time embedding as wide as the last level.
PIXEL_UNET_SR1 = {
    **PIXEL_UNET_BASE,
    "block_out_channels": [32, 32, 32, 32, 32],
    "class_embed_type": "timestep",
    "down_block_types": [
        "ResnetDownsampleBlock3D",
        "ResnetDownsampleBlock3D",
        "ResnetDownsampleBlock3D",
        "SimpleCrossAttnDownBlock3D",
        "SimpleCrossAttnDownBlock3D",
    ],
    "in_channels": 6,
    "layers_per_block": [1, 1, 1, 2, 1],
    "mid_block_scale_factor": 1.4142271248762552,
    "resnet_out_scale_factor": 1.4142271248762552,
    "resnet_skip_time_act": True,
    "sample_size": 256,
    "time_embedding_act_fn": "gelu",
    "time_embedding_dim": 32,
    "up_block_types": [
        "SimpleCrossAttnUpBlock3D",
        "SimpleCrossAttnUpBlock3D",
        "ResnetUpsampleBlock3D",
        "ResnetUpsampleBlock3D",
        "ResnetUpsampleBlock3D",
    ],
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
    "layers_per_block": [1, 1],
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
# zeroscope's config as the reference's class writes it: SD-style blocks, `attention_head_dim` as the
# number of heads of each level, linear projections, the temporal transformer after conv_in.
LATENT_UNET = {
    "act_fn": "silu",
    "attention_head_dim": [2, 4],
    "block_out_channels": [32, 32],
    "cross_attention_dim": CLIP_WIDTH,
    "down_block_types": ["CrossAttnDownBlock3D", "DownBlock3D"],
    "downsample_padding": 1,
    "in_channels": 4,
    "layers_per_block": 1,
    "mid_block_scale_factor": 1,
    "mid_block_type": "UNetMidBlock3DCrossAttn",
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 32,
    "transfromer_in_opt": True,
    "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D"],
    "use_linear_projection": True,
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
# The showlab pixel folders carry IF's (unused) CLIP image processor config.
FEATURE_EXTRACTOR = {
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_processor_type": "CLIPImageProcessor",
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 224},
}
REFERENCE_UNET = ["showone.models.unet_3d_condition", "UNet3DConditionModel"]
T5_SHARDS = 2

# Text the T5 sentencepiece model is trained on: enough to cover lowercase prompts.
_TOKENIZER_CORPUS = (
    "a burning lamborghini driving on rainbow. a panda taking a selfie. an astronaut riding a horse "
    "on the moon. close up of a cat playing the piano, high quality video. waves crashing against "
    "rocks at sunset, drone shot. a teddy bear walking in times square; 4k, cinematic! "
    "quick brown fox jumps over the lazy dog 0123456789 ? ( ) , ' \" - _ : / & + = % $ # @ *"
)
_PIECES_FILE = "tiny-preset.complete"
# Bumped whenever the layout changes, so a preset cached by an older version is made again.
# 2: as published (DPM-Solver++ pixel stages, .bin weights, sr2 in the reference's UNet class).
LAYOUT_VERSION = 2


def default_tiny_preset_dir() -> Path:
    cache = os.environ.get("SHOW1_CACHE_DIR") or Path.home() / ".cache" / "show1"
    return Path(cache) / "tiny-preset"


def ensure_tiny_preset(dest: Path | None = None) -> Path:
    """The tiny preset at `dest` (default: the cache dir), made on first use."""
    return make_tiny_preset(dest or default_tiny_preset_dir())


def is_complete(dest: Path) -> bool:
    """A whole preset of the current layout is at `dest`."""
    try:
        stamp = json.loads((Path(dest) / _PIECES_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(stamp, dict) and stamp.get("layout") == LAYOUT_VERSION


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
        (staging / _PIECES_FILE).write_text(json.dumps({"layout": LAYOUT_VERSION, "seed": seed}))
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
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from models.unet_3d import Show1UNet3DConditionModel

    generator = _Seeds(seed)
    t5_folder = root / "_t5"
    t5 = _write_t5(t5_folder, generator)
    pixel_pipelines = {
        BASE: ("TextToVideoIFPipeline", PIXEL_UNET_BASE, PIXEL_DPM_SOLVER, False),
        INTERPOLATION: ("TextToVideoIFInterpPipeline", PIXEL_UNET_INTERP, PIXEL_DPM_SOLVER, False),
        SR1: ("TextToVideoIFSuperResolutionPipeline_Cond", PIXEL_UNET_SR1, SR1_DPM_SOLVER, True),
    }
    for name, (pipeline, unet_config, scheduler, noising) in pixel_pipelines.items():
        folder = root / name
        shutil.copytree(t5_folder / "tokenizer", folder / "tokenizer")
        # Float32 .bin shards with their index; show-1-interpolation's mix in float16 tensors, as
        # the Hub's do (the reference loads those two encoders and never runs them).
        _save_bin_shards(t5, folder / "text_encoder", T5_SHARDS, mixed_fp16=name == INTERPOLATION)
        generator.seed_next()
        _save_bin(Show1UNet3DConditionModel(**unet_config), folder / "unet")
        _write_json(folder / "scheduler" / "scheduler_config.json", scheduler)
        if noising:
            _write_json(folder / "image_noising_scheduler" / "scheduler_config.json", IMAGE_NOISING_DDPM)
        _write_json(folder / "feature_extractor" / "preprocessor_config.json", FEATURE_EXTRACTOR)
        _write_model_index(folder, pipeline, _pixel_components(noising, "DPMSolverMultistepScheduler"))

    # DeepFloyd's repos ship safetensors as fp16 variants only.
    if_folder = root / IF_II
    shutil.copytree(t5_folder / "tokenizer", if_folder / "tokenizer")
    copy.deepcopy(t5).half().save_pretrained(if_folder / "text_encoder", variant="fp16")
    generator.seed_next()
    UNet2DConditionModel(**IF_II_UNET).half().save_pretrained(
        if_folder / "unet", variant="fp16", safe_serialization=True
    )
    _write_json(if_folder / "scheduler" / "scheduler_config.json", IF_II_DDPM)
    _write_json(if_folder / "image_noising_scheduler" / "scheduler_config.json", IMAGE_NOISING_DDPM)
    _write_model_index(
        if_folder,
        "IFSuperResolutionPipeline",
        {
            **_pixel_components(True, "DDPMScheduler"),
            "feature_extractor": [None, None],
            "requires_safety_checker": False,
            "safety_checker": [None, None],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "watermarker": [None, None],
        },
    )

    sr2 = root / SR2
    generator.seed_next()
    _save_bin(Show1UNet3DConditionModel(**LATENT_UNET), sr2 / "unet")
    generator.seed_next()
    _save_bin(AutoencoderKL(**VAE), sr2 / "vae")
    _write_clip(sr2, generator)
    _write_json(sr2 / "scheduler" / "scheduler_config.json", LATENT_DPM_SOLVER)
    _write_model_index(
        sr2,
        "VideoToVideoSDPipeline",
        {
            "scheduler": ["diffusers", "DPMSolverMultistepScheduler"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "unet": REFERENCE_UNET,
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


def _save_bin(model: torch.nn.Module, folder: Path) -> None:
    """One float16 `diffusion_pytorch_model.bin`, no variant file, as the showlab folders hold."""
    model.half().save_pretrained(folder, safe_serialization=False)
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    if config.get("_class_name") == "Show1UNet3DConditionModel":
        # The name the reference's class writes (its model_index.json names the module).
        config["_class_name"] = "UNet3DConditionModel"
        _write_json(config_path, config)


def _save_bin_shards(model: Any, folder: Path, shards: int, mixed_fp16: bool = False) -> None:
    """A transformers model as pickled `pytorch_model-0000i-of-0000n.bin` shards with their index.

    transformers 5 saves safetensors only, so the shards are written here in its old layout: tensors in
    state-dict order, cut into `shards` runs of about equal size; tied tensors counted once.
    """
    folder.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(folder)
    state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    if mixed_fp16:
        first = list(state)[: len(state) // 2]
        state.update({name: state[name].half() for name in first[1::2]})
    sizes, seen = {}, set()
    for name, tensor in model.state_dict().items():
        pointer = tensor.data_ptr()
        sizes[name] = 0 if pointer in seen else tensor.numel() * tensor.element_size()
        seen.add(pointer)
    total = sum(sizes.values())
    names = [f"pytorch_model-{index + 1:05d}-of-{shards:05d}.bin" for index in range(shards)]
    weight_map, parts, running = {}, [{} for _ in names], 0
    for name, tensor in state.items():
        part = min(running * shards // total, shards - 1)
        parts[part][name] = tensor
        weight_map[name] = names[part]
        running += sizes[name]
    for name, part in zip(names, parts, strict=True):
        torch.save(part, folder / name)
    _write_json(
        folder / "pytorch_model.bin.index.json",
        {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))},
    )


def _write_t5(folder: Path, seeds: _Seeds) -> Any:
    """The T5 tokenizer, written under `folder`, and the (random) encoder."""
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
    return T5EncoderModel(config).eval()


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
    # One float32 pytorch_model.bin, as show-1-sr2 holds.
    encoder = CLIPTextModel(config)
    encoder.config.save_pretrained(folder / "text_encoder")
    torch.save(encoder.state_dict(), folder / "text_encoder" / "pytorch_model.bin")


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


def _pixel_components(noising: bool, scheduler: str) -> dict[str, Any]:
    components: dict[str, Any] = {
        "feature_extractor": ["transformers", "CLIPImageProcessor"],
        "scheduler": ["diffusers", scheduler],
        "text_encoder": ["transformers", "T5EncoderModel"],
        "tokenizer": ["transformers", "T5Tokenizer"],
        "unet": REFERENCE_UNET,
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
