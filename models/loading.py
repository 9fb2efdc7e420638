"""Loading the five Show-1 checkpoint folders with the classes this project chooses.

The published model_index.json files name the reference's own `showone.*` classes, so nothing here
reads them: each component folder is loaded directly with its class.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    UNet2DConditionModel,
    UNet3DConditionModel,
)
from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5Tokenizer

from models.unet_pixel import PixelUNet3DConditionModel

BASE = "show-1-base"
INTERPOLATION = "show-1-interpolation"
IF_II = "IF-II-L-v1.0"
SR1 = "show-1-sr1"
SR2 = "show-1-sr2"
CHECKPOINT_FOLDERS = (BASE, INTERPOLATION, IF_II, SR1, SR2)

_WEIGHT_SUFFIXES = (".safetensors", ".bin")


@dataclass
class CascadeModels:
    """Every component the cascade runs. Interpolation and sr1 reuse the base model's T5 embeddings."""

    t5_tokenizer: T5Tokenizer
    t5_encoder: T5EncoderModel
    base_unet: PixelUNet3DConditionModel
    base_scheduler: DDPMScheduler
    interp_unet: PixelUNet3DConditionModel
    interp_scheduler: DDPMScheduler
    if_unet: UNet2DConditionModel
    if_scheduler: DDPMScheduler
    if_noising_scheduler: DDPMScheduler
    sr1_unet: PixelUNet3DConditionModel
    sr1_scheduler: DDPMScheduler
    sr1_noising_scheduler: DDPMScheduler
    sr2_unet: UNet3DConditionModel
    vae: AutoencoderKL
    sr2_scheduler: DPMSolverMultistepScheduler
    clip_tokenizer: CLIPTokenizer
    clip_encoder: CLIPTextModel

    def modules(self) -> list[torch.nn.Module]:
        return [
            value
            for value in (getattr(self, f.name) for f in fields(self))
            if isinstance(value, torch.nn.Module)
        ]


def load_models(models_dir: Path, dtype: torch.dtype) -> CascadeModels:
    """Load every component onto the CPU in `dtype` (T5 keeps the layers transformers pins to float32)."""
    root = Path(models_dir)
    missing = [name for name in CHECKPOINT_FOLDERS if not (root / name).is_dir()]
    if missing:
        raise FileNotFoundError(f"checkpoint folder(s) missing under {root}: {', '.join(missing)}")
    base, interp, if_ii, sr1, sr2 = (root / name for name in CHECKPOINT_FOLDERS)
    return CascadeModels(
        t5_tokenizer=T5Tokenizer.from_pretrained(base / "tokenizer"),
        t5_encoder=_transformers_model(T5EncoderModel, base / "text_encoder", dtype),
        base_unet=_diffusers_model(PixelUNet3DConditionModel, base / "unet", dtype),
        base_scheduler=DDPMScheduler.from_pretrained(base / "scheduler"),
        interp_unet=_diffusers_model(PixelUNet3DConditionModel, interp / "unet", dtype),
        interp_scheduler=DDPMScheduler.from_pretrained(interp / "scheduler"),
        if_unet=_diffusers_model(UNet2DConditionModel, if_ii / "unet", dtype),
        if_scheduler=DDPMScheduler.from_pretrained(if_ii / "scheduler"),
        if_noising_scheduler=DDPMScheduler.from_pretrained(if_ii / "image_noising_scheduler"),
        sr1_unet=_diffusers_model(PixelUNet3DConditionModel, sr1 / "unet", dtype),
        sr1_scheduler=DDPMScheduler.from_pretrained(sr1 / "scheduler"),
        sr1_noising_scheduler=DDPMScheduler.from_pretrained(sr1 / "image_noising_scheduler"),
        sr2_unet=_diffusers_model(UNet3DConditionModel, sr2 / "unet", dtype),
        vae=_diffusers_model(AutoencoderKL, sr2 / "vae", dtype),
        # Configs saved by diffusers 0.19 lack final_sigmas_type; current diffusers then ends on sigma 0,
        # while the reference's last step used the schedule's smallest sigma.
        sr2_scheduler=DPMSolverMultistepScheduler.from_pretrained(
            sr2 / "scheduler", final_sigmas_type="sigma_min"
        ),
        clip_tokenizer=CLIPTokenizer.from_pretrained(sr2 / "tokenizer"),
        clip_encoder=_transformers_model(CLIPTextModel, sr2 / "text_encoder", dtype),
    )


def checkpoint_info(models_dir: Path) -> dict[str, dict[str, str]]:
    """Path and revision of each checkpoint folder, for recording what produced a video."""
    root = Path(models_dir)
    return {
        name: {"path": str((root / name).resolve()), "revision": folder_revision(root / name)}
        for name in CHECKPOINT_FOLDERS
    }


def folder_revision(folder: Path) -> str:
    """The Hub commit when the folder is a Hub snapshot or download, else a short hash of its configs."""
    resolved = folder.resolve()
    if resolved.parent.name == "snapshots":
        return resolved.name
    hub_metadata = sorted((resolved / ".cache" / "huggingface" / "download").rglob("*.metadata"))
    if hub_metadata:
        return hub_metadata[0].read_text().splitlines()[0].strip()
    digest = hashlib.sha256()
    for config in sorted(resolved.rglob("*.json")):
        digest.update(str(config.relative_to(resolved)).encode())
        digest.update(config.read_bytes())
    return "config-" + digest.hexdigest()[:12]


def weight_variant(folder: Path) -> str | None:
    """ "fp16" when the folder holds fp16-variant weights, which the reference loads when present."""
    names = [path.name for path in folder.iterdir() if path.name.endswith(_WEIGHT_SUFFIXES)]
    return "fp16" if any(".fp16." in name for name in names) else None


def _diffusers_model(cls: type, folder: Path, dtype: torch.dtype) -> torch.nn.Module:
    return cls.from_pretrained(folder, variant=weight_variant(folder), torch_dtype=dtype)


def _transformers_model(cls: type, folder: Path, dtype: torch.dtype) -> torch.nn.Module:
    return cls.from_pretrained(folder, variant=weight_variant(folder), dtype=dtype)
