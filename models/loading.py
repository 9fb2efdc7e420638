"""Loading the five Show-1 checkpoint folders, each component as its folder names it.

The published model_index.json files name the reference's own classes (`showone.models...`) for the
showlab UNets: those load into this project's Show1UNet3DConditionModel, which implements that
class's semantics; a folder that names diffusers' UNet3DConditionModel instead (the older golden
sets' sr2) loads into diffusers' class, whose semantics differ. Schedulers are the classes their
configs name (models/schedulers.py). Loading is strict for every component, as diffusers 0.19 was for
the reference: weights that are missing, unexpected or of the wrong shape, an unreadable file, a
missing folder, or a class or option this project does not implement raise CheckpointError naming
the folder, so a worker fails at start-up instead of serving a partly random model.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    UNet2DConditionModel,
    UNet3DConditionModel,
)
from diffusers.models.modeling_utils import ModelMixin
from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5Tokenizer

from models.errors import CheckpointError
from models.schedulers import (
    PixelScheduler,
    load_latent_scheduler,
    load_noising_scheduler,
    load_pixel_scheduler,
)
from models.unet_3d import Show1UNet3DConditionModel
from models.weights import (
    CHECKPOINT_FOLDERS,
    FP16_VARIANT_FOLDERS,
    choose_weights,
    loading_problems,
)


@dataclass
class CascadeModels:
    """Every component the cascade runs. Interpolation and sr1 reuse the base model's T5 embeddings."""

    t5_tokenizer: T5Tokenizer
    t5_encoder: T5EncoderModel
    base_unet: Show1UNet3DConditionModel
    base_scheduler: PixelScheduler
    interp_unet: Show1UNet3DConditionModel
    interp_scheduler: PixelScheduler
    if_unet: UNet2DConditionModel
    if_scheduler: PixelScheduler
    if_noising_scheduler: DDPMScheduler
    sr1_unet: Show1UNet3DConditionModel
    sr1_scheduler: PixelScheduler
    sr1_noising_scheduler: DDPMScheduler
    sr2_unet: Show1UNet3DConditionModel | UNet3DConditionModel
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
        raise CheckpointError(f"checkpoint folder(s) missing under {root}: {', '.join(missing)}")
    base, interp, if_ii, sr1, sr2 = (root / name for name in CHECKPOINT_FOLDERS)
    return CascadeModels(
        t5_tokenizer=_component(T5Tokenizer, base / "tokenizer"),
        t5_encoder=load_component(T5EncoderModel, base / "text_encoder", dtype),
        base_unet=load_component(Show1UNet3DConditionModel, base / "unet", dtype),
        base_scheduler=load_pixel_scheduler(base / "scheduler"),
        interp_unet=load_component(Show1UNet3DConditionModel, interp / "unet", dtype),
        interp_scheduler=load_pixel_scheduler(interp / "scheduler"),
        if_unet=load_component(UNet2DConditionModel, if_ii / "unet", dtype),
        if_scheduler=load_pixel_scheduler(if_ii / "scheduler"),
        if_noising_scheduler=load_noising_scheduler(if_ii / "image_noising_scheduler"),
        sr1_unet=load_component(Show1UNet3DConditionModel, sr1 / "unet", dtype),
        sr1_scheduler=load_pixel_scheduler(sr1 / "scheduler"),
        sr1_noising_scheduler=load_noising_scheduler(sr1 / "image_noising_scheduler"),
        sr2_unet=load_component(latent_unet_class(sr2), sr2 / "unet", dtype),
        vae=load_component(AutoencoderKL, sr2 / "vae", dtype),
        sr2_scheduler=load_latent_scheduler(sr2 / "scheduler"),
        clip_tokenizer=_component(CLIPTokenizer, sr2 / "tokenizer"),
        clip_encoder=load_component(CLIPTextModel, sr2 / "text_encoder", dtype),
    )


# The UNet classes a model_index.json may name, by (library, class): the reference's own class, under
# whichever module path a folder spells it, or diffusers' (whose `attention_head_dim` is a head width
# and whose temporal transformer after conv_in is always there, as wide as that).
_REFERENCE_UNET_LIBRARIES = ("showone.models.unet_3d_condition", "showone.models", "showone")
_UNET_CLASSES: dict[tuple[str, str], type] = {
    **{(library, "UNet3DConditionModel"): Show1UNet3DConditionModel for library in _REFERENCE_UNET_LIBRARIES},
    ("diffusers", "UNet3DConditionModel"): UNet3DConditionModel,
}


def latent_unet_class(folder: Path) -> type:
    """The class the latent (sr2) folder's model_index.json names for its UNet."""
    index = folder / "model_index.json"
    try:
        library, name = json.loads(index.read_text())["unet"]
    except FileNotFoundError as error:
        raise CheckpointError(f"{index}: missing (it names the UNet class)") from error
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f'{index}: no readable "unet": [library, class] entry ({error})') from error
    try:
        return _UNET_CLASSES[(library, name)]
    except KeyError:
        known = ", ".join(f"{lib}.{cls}" for lib, cls in _UNET_CLASSES)
        raise CheckpointError(f"{index}: UNet class {library}.{name} is not implemented ({known})") from None


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


def _component(cls: type, folder: Path, **kwargs: Any) -> Any:
    """A tokenizer or scheduler; a missing or unreadable folder is a CheckpointError naming it."""
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: folder missing (needed for {cls.__name__})")
    try:
        return cls.from_pretrained(folder, **kwargs)
    except Exception as error:
        raise CheckpointError(f"{folder}: cannot load {cls.__name__}: {error}") from error


def load_component(cls: type, folder: Path, dtype: torch.dtype) -> torch.nn.Module:
    """A model from its folder, strictly: every weight present, expected and of the right shape."""
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: folder missing (needed for {cls.__name__})")
    try:
        chosen = choose_weights(
            os.listdir(folder), prefer_fp16=folder.parent.name in FP16_VARIANT_FOLDERS, where=str(folder)
        )
    except FileNotFoundError as error:
        raise CheckpointError(str(error)) from error
    options: dict[str, Any] = {"variant": chosen.variant, "use_safetensors": chosen.use_safetensors}
    if issubclass(cls, ModelMixin):
        options["torch_dtype"] = dtype
    else:
        # transformers reports shape mismatches only in its log unless told to collect them.
        options |= {"dtype": dtype, "ignore_mismatched_sizes": True}
    try:
        model, info = cls.from_pretrained(folder, output_loading_info=True, **options)
    except CheckpointError:
        raise
    except Exception as error:
        raise CheckpointError(
            f"{folder}: cannot load {cls.__name__} from {chosen.files[0]}: {error}"
        ) from error
    problems = loading_problems(info)
    if problems:
        raise CheckpointError(f"{folder}: weights do not fit {cls.__name__} ({problems})")
    return model
