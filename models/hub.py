"""Downloading the five published checkpoints from the Hugging Face Hub, only what the cascade loads.

Each repo's file list is read first, and for every component the cascade loads, models.weights picks
the one copy of the weights the loader will take (the fp16 variant where the reference loads one,
safetensors before `.bin`, one file or all shards with their index): nothing is downloaded twice in
two precisions or formats.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from models.weights import BASE, FP16_VARIANT_FOLDERS, IF_II, INTERPOLATION, SR1, SR2, choose_weights

HUB_REPOS = {
    BASE: "showlab/show-1-base",
    INTERPOLATION: "showlab/show-1-interpolation",
    IF_II: "DeepFloyd/IF-II-L-v1.0",
    SR1: "showlab/show-1-sr1",
    SR2: "showlab/show-1-sr2",
}
# The components of each checkpoint the cascade loads with weights. The pixel stages share the T5 of
# show-1-base and IF-II runs on those embeddings (as in the reference), so no other text encoder.
WEIGHT_COMPONENTS = {
    BASE: ("unet", "text_encoder"),
    INTERPOLATION: ("unet",),
    IF_II: ("unet",),
    SR1: ("unet",),
    SR2: ("unet", "vae", "text_encoder"),
}
# Components read from configs alone.
CONFIG_COMPONENTS = {
    BASE: ("scheduler", "tokenizer"),
    INTERPOLATION: ("scheduler",),
    IF_II: ("scheduler", "image_noising_scheduler"),
    SR1: ("scheduler", "image_noising_scheduler"),
    SR2: ("scheduler", "tokenizer"),
}


class HubError(Exception):
    pass


def files_to_download(folder: str, repo_files: Iterable[str]) -> list[str]:
    """The files of `folder`'s repo (listed as `repo_files`) that loading the cascade reads."""
    by_component: dict[str, list[str]] = {}
    for path in repo_files:
        component, _, name = path.partition("/")
        if name and "/" not in name:
            by_component.setdefault(component, []).append(name)
    wanted = [path for path in repo_files if path == "model_index.json"]
    for component in CONFIG_COMPONENTS[folder]:
        wanted += [f"{component}/{name}" for name in sorted(by_component.get(component, []))]
    for component in WEIGHT_COMPONENTS[folder]:
        names = by_component.get(component, [])
        if "config.json" not in names:
            raise HubError(f"{HUB_REPOS[folder]} has no {component}/config.json")
        try:
            chosen = choose_weights(
                names, prefer_fp16=folder in FP16_VARIANT_FOLDERS, where=f"{HUB_REPOS[folder]}/{component}"
            )
        except FileNotFoundError as error:
            raise HubError(str(error)) from error
        wanted += [f"{component}/config.json", *(f"{component}/{name}" for name in chosen.files)]
    return wanted


def download_weights(dest: Path, token: str | None = None, log: Callable[[str], None] = print) -> Path:
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError

    dest = Path(dest)
    api = HfApi(token=token)
    for folder, repo in HUB_REPOS.items():
        try:
            files = files_to_download(folder, api.list_repo_files(repo))
            log(f"{repo} -> {dest / folder} ({len(files)} files)")
            snapshot_download(repo_id=repo, local_dir=dest / folder, allow_patterns=files, token=token)
        except GatedRepoError as error:
            raise HubError(
                f"{repo} is gated: accept its licence at https://huggingface.co/{repo} with your account, "
                "then pass --token or set HF_TOKEN"
            ) from error
        except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as error:
            raise HubError(
                f"cannot download {repo} from the Hugging Face Hub ({error}); is it reachable?"
            ) from error
    return dest
