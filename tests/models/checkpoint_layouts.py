"""Re-save a checkpoint component folder in each layout the Hub holds, as the libraries name them.

The published checkpoints come as single files or shards with an index, safetensors or pickled `.bin`,
plain or as an fp16 variant (`name.fp16.safetensors`, `name.fp16-00001-of-00002.safetensors` with
`name.safetensors.index.fp16.json`). The tiny sets hold one layout; these helpers make the others.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

# (safetensors stem, bin stem) of each library's weight files.
DIFFUSERS_STEMS = ("diffusion_pytorch_model", "diffusion_pytorch_model")
TRANSFORMERS_STEMS = ("model", "pytorch_model")


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the folder's (single-file safetensors) weights."""
    (path,) = folder.glob("*.safetensors")
    return load_file(path)


def write_layout(
    source: Path,
    dest: Path,
    *,
    stems: tuple[str, str],
    fmt: str = "safetensors",
    variant: str | None = None,
    shards: int = 1,
) -> Path:
    """`source`'s configs and weights re-saved in `dest` in the given layout; returns `dest`."""
    weights = read_weights(source)
    dest.mkdir(parents=True)
    for path in source.iterdir():
        if path.suffix == ".json":
            shutil.copy(path, dest / path.name)
    stem = stems[0] if fmt == "safetensors" else stems[1]
    stem = f"{stem}.{variant}" if variant else stem
    names = sorted(weights)
    groups = [names[i::shards] for i in range(shards)]
    weight_map = {}
    for index, group in enumerate(groups, start=1):
        part = {name: weights[name].contiguous() for name in group}
        file = f"{stem}.{fmt}" if shards == 1 else f"{stem}-{index:05d}-of-{shards:05d}.{fmt}"
        if fmt == "safetensors":
            save_file(part, str(dest / file), metadata={"format": "pt"})
        else:
            torch.save(part, dest / file)
        weight_map.update(dict.fromkeys(group, file))
    if shards > 1:
        base = stems[0] if fmt == "safetensors" else stems[1]
        index_name = f"{base}.{fmt}.index.{variant}.json" if variant else f"{base}.{fmt}.index.json"
        total = sum(t.numel() * t.element_size() for t in weights.values())
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (dest / index_name).write_text(json.dumps(index))
    return dest
