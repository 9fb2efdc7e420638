"""Which files of a checkpoint component folder hold its weights, and whether they fit the model.

Importable without torch: `show1 download-weights` picks files from a Hub listing with the same rule
the loaders apply to a local folder, so what is downloaded is exactly what will be loaded.

The Hub holds weights in every layout the libraries ever saved: one file or shards with an index,
safetensors or pickled `.bin`, plain or as an fp16 variant. The names (diffusers and transformers use
the same scheme, each with its own stem):

    diffusion_pytorch_model.safetensors                 model.safetensors           pytorch_model.bin
    diffusion_pytorch_model.fp16.safetensors            model.fp16.safetensors      pytorch_model.fp16.bin
    sharded: model-00001-of-00002.safetensors ... with model.safetensors.index.json, and as a variant
    diffusion_pytorch_model.fp16-00001-of-00002.safetensors ... with
    diffusion_pytorch_model.safetensors.index.fp16.json
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

BASE = "show-1-base"
INTERPOLATION = "show-1-interpolation"
IF_II = "IF-II-L-v1.0"
SR1 = "show-1-sr1"
SR2 = "show-1-sr2"
CHECKPOINT_FOLDERS = (BASE, INTERPOLATION, IF_II, SR1, SR2)
# run_inference.py loads these three with variant="fp16"; sr1 and sr2 with the plain weights.
FP16_VARIANT_FOLDERS = frozenset({BASE, INTERPOLATION, IF_II})
FP16 = "fp16"

_STEMS = r"diffusion_pytorch_model|pytorch_model|model"
_WEIGHT_FILE = re.compile(
    rf"^(?:{_STEMS})(?:\.(?P<variant>[A-Za-z0-9_]+))?(?P<shard>-\d+-of-\d+)?\.(?P<format>safetensors|bin)$"
)
_INDEX_FILE = re.compile(
    rf"^(?:{_STEMS})\.(?P<format>safetensors|bin)\.index(?:\.(?P<variant>[A-Za-z0-9_]+))?\.json$"
)

# (format, variant) in the order a loader takes them. Within the precision the reference loads,
# safetensors before pickles; the other precision only when the folder holds nothing else.
_FP16_FIRST = (("safetensors", FP16), ("bin", FP16), ("safetensors", None), ("bin", None))
_PLAIN_FIRST = (("safetensors", None), ("bin", None), ("safetensors", FP16), ("bin", FP16))


@dataclass(frozen=True)
class WeightFiles:
    """One complete copy of a component's weights and how to ask the libraries to load it."""

    format: str
    variant: str | None
    files: tuple[str, ...]

    @property
    def use_safetensors(self) -> bool:
        return self.format == "safetensors"


def choose_weights(names: Iterable[str], *, prefer_fp16: bool, where: str = "") -> WeightFiles:
    """The copy of the weights to load among the file `names` of one component folder.

    A copy is complete when it is one file or has its shard index; shards without an index (an
    interrupted download) do not count. Raises FileNotFoundError naming `where` when no copy is complete.
    """
    singles: dict[tuple[str, str | None], list[str]] = {}
    shards: dict[tuple[str, str | None], list[str]] = {}
    indexes: dict[tuple[str, str | None], str] = {}
    for name in names:
        if match := _WEIGHT_FILE.match(name):
            key = (match["format"], match["variant"])
            (shards if match["shard"] else singles).setdefault(key, []).append(name)
        elif match := _INDEX_FILE.match(name):
            indexes[(match["format"], match["variant"])] = name
    for key in _FP16_FIRST if prefer_fp16 else _PLAIN_FIRST:
        if key in indexes and key in shards:
            return WeightFiles(*key, files=(indexes[key], *sorted(shards[key])))
        if key in singles:
            return WeightFiles(*key, files=tuple(sorted(singles[key])))
    found = sorted({*_flatten(singles), *_flatten(shards), *indexes.values()})
    raise FileNotFoundError(
        f"{where or 'folder'}: no complete set of weights (single file, or shards with their index; "
        f"safetensors or .bin; plain or fp16); weight files present: {found or 'none'}"
    )


def _flatten(groups: Mapping[Any, list[str]]) -> list[str]:
    return [name for names in groups.values() for name in names]


def loading_problems(info: Mapping[str, Any], shown: int = 5) -> str | None:
    """What a library's `output_loading_info` says does not fit, in one line; None when all fits."""
    parts = []
    for field, what in (
        ("missing_keys", "missing"),
        ("unexpected_keys", "unexpected"),
        ("mismatched_keys", "mis-shaped"),
        ("error_msgs", "errors"),
    ):
        values = sorted(str(value) for value in info.get(field) or ())
        if values:
            more = f", ... ({len(values)} in all)" if len(values) > shown else ""
            parts.append(f"{what}: {', '.join(values[:shown])}{more}")
    return "; ".join(parts) or None
