"""Downloading the five published checkpoints from the Hugging Face Hub, only what the cascade loads."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from models.loading import BASE, IF_II, INTERPOLATION, SR1, SR2

HUB_REPOS = {
    BASE: "showlab/show-1-base",
    INTERPOLATION: "showlab/show-1-interpolation",
    IF_II: "DeepFloyd/IF-II-L-v1.0",
    SR1: "showlab/show-1-sr1",
    SR2: "showlab/show-1-sr2",
}
# The reference loads these three with variant="fp16"; the other two have plain weight files only.
FP16_VARIANT = {BASE, INTERPOLATION, IF_II}
CONFIG_PATTERNS = ["model_index.json", "*/config.json", "*/scheduler_config.json", "tokenizer/*"]


class HubError(Exception):
    pass


def allow_patterns(folder: str) -> list[str]:
    """Files of `folder`'s repo the cascade reads: configs, tokenizers, one copy of each weight file.

    The pixel models' T5 is read from show-1-base only, and IF-II is run without its text encoder
    (as the reference does), so those text encoders are skipped.
    """
    weights = "*.fp16.safetensors" if folder in FP16_VARIANT else "*.safetensors"
    components = {
        BASE: ["unet", "text_encoder"],
        INTERPOLATION: ["unet"],
        IF_II: ["unet"],
        SR1: ["unet"],
        SR2: ["unet", "vae", "text_encoder"],
    }[folder]
    patterns = [pattern for pattern in CONFIG_PATTERNS if folder in (BASE, SR2) or "tokenizer" not in pattern]
    patterns += [f"{component}/{weights}" for component in components]
    if folder in (BASE, SR2):
        patterns.append("text_encoder/*.index*.json")
    return patterns


def download_weights(dest: Path, token: str | None = None, log: Callable[[str], None] = print) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError

    dest = Path(dest)
    for folder, repo in HUB_REPOS.items():
        log(f"{repo} -> {dest / folder}")
        try:
            snapshot_download(
                repo_id=repo, local_dir=dest / folder, allow_patterns=allow_patterns(folder), token=token
            )
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
