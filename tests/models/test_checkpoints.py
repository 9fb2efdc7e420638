"""Checkpoints as the Hub holds them: every weight layout loads to identical weights, the download
takes exactly what the loader reads, and a broken folder is refused by name before any job runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel, UNet3DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextModel, T5EncoderModel

from models.errors import CheckpointError
from models.hub import files_to_download
from models.loading import CascadeModels, load_component, load_models
from models.unet_3d import Show1UNet3DConditionModel
from models.weights import CHECKPOINT_FOLDERS, WeightFiles, choose_weights
from tests.conftest import REPO
from tests.models.checkpoint_layouts import (
    DIFFUSERS_STEMS,
    TRANSFORMERS_STEMS,
    read_weights,
    write_layout,
)
from tests.models.golden_case import GOLDEN_ROOT, PUBLISHED_CASE, requires_golden
from worker.supervisor import EXIT_BAD_CHECKPOINTS

pytestmark = requires_golden
TINY_C = GOLDEN_ROOT / "tiny-c" / "models"
# Every component folder with weights, and the class that loads it.
WEIGHT_COMPONENTS = {
    "show-1-base/text_encoder": T5EncoderModel,
    "show-1-base/unet": Show1UNet3DConditionModel,
    "show-1-interpolation/unet": Show1UNet3DConditionModel,
    "IF-II-L-v1.0/unet": UNet2DConditionModel,
    "show-1-sr1/unet": Show1UNet3DConditionModel,
    "show-1-sr2/unet": UNet3DConditionModel,
    "show-1-sr2/vae": AutoencoderKL,
    "show-1-sr2/text_encoder": CLIPTextModel,
}
LAYOUTS = {
    "fp16-shards": {"fmt": "safetensors", "variant": "fp16", "shards": 3},
    "plain-shards": {"fmt": "safetensors", "variant": None, "shards": 2},
    "plain-single": {"fmt": "safetensors", "variant": None, "shards": 1},
    "bin-single": {"fmt": "bin", "variant": None, "shards": 1},
    "fp16-bin-shards": {"fmt": "bin", "variant": "fp16", "shards": 2},
}


def relaid(dest: Path, layout: dict) -> Path:
    """tiny-c with every weight component re-saved in `layout`; configs and tokenizers as they are."""
    shutil.copytree(TINY_C, dest, ignore=shutil.ignore_patterns("*.safetensors"))
    for component in WEIGHT_COMPONENTS:
        stems = TRANSFORMERS_STEMS if component.endswith("text_encoder") else DIFFUSERS_STEMS
        shutil.rmtree(dest / component)
        write_layout(TINY_C / component, dest / component, stems=stems, **layout)
    return dest


def component_modules(models: CascadeModels) -> dict[str, torch.nn.Module]:
    """Each WEIGHT_COMPONENTS folder's loaded module."""
    return {
        "show-1-base/text_encoder": models.t5_encoder,
        "show-1-base/unet": models.base_unet,
        "show-1-interpolation/unet": models.interp_unet,
        "IF-II-L-v1.0/unet": models.if_unet,
        "show-1-sr1/unet": models.sr1_unet,
        "show-1-sr2/unet": models.sr2_unet,
        "show-1-sr2/vae": models.vae,
        "show-1-sr2/text_encoder": models.clip_encoder,
    }


@pytest.fixture(scope="module")
def published() -> dict[str, dict[str, torch.Tensor]]:
    names = component_modules(load_models(TINY_C, torch.float32))
    return {component: module.state_dict() for component, module in names.items()}


@pytest.mark.parametrize("layout", LAYOUTS, ids=list(LAYOUTS))
def test_every_hub_layout_loads_to_identical_weights(
    layout: str, tmp_path: Path, published: dict[str, dict[str, torch.Tensor]]
) -> None:
    loaded = component_modules(load_models(relaid(tmp_path / "models", LAYOUTS[layout]), torch.float32))
    for component, module in loaded.items():
        state = module.state_dict()
        expected = published[component]
        assert state.keys() == expected.keys(), component
        for key, value in expected.items():
            assert torch.equal(state[key], value), f"{component}: {key}"


def test_the_reference_precision_is_preferred_when_both_are_present(tmp_path: Path) -> None:
    """base loads its fp16 variant (as the reference does), sr1 its plain weights, whatever else is there."""
    for folder, prefer in (("show-1-base/unet", "fp16"), ("show-1-sr1/unet", None)):
        dest = tmp_path / folder
        write_layout(TINY_C / folder, dest, stems=DIFFUSERS_STEMS, fmt="safetensors", variant=None)
        for variant in ("fp16",):
            weights = read_weights(TINY_C / folder)
            save_file(weights, str(dest / f"diffusion_pytorch_model.{variant}.safetensors"))
        torch.save(read_weights(TINY_C / folder), dest / "diffusion_pytorch_model.bin")
        names = [path.name for path in dest.iterdir()]
        chosen = choose_weights(names, prefer_fp16=folder.startswith("show-1-base"))
        assert chosen.variant == prefer and chosen.format == "safetensors"
        load_component(Show1UNet3DConditionModel, dest, torch.float32)


@pytest.mark.parametrize(
    ("names", "prefer_fp16", "expected"),
    [
        (
            ["config.json", "model.safetensors", "model.fp16.safetensors", "pytorch_model.bin"],
            True,
            WeightFiles("safetensors", "fp16", ("model.fp16.safetensors",)),
        ),
        (
            ["config.json", "model.safetensors", "model.fp16.safetensors"],
            False,
            WeightFiles("safetensors", None, ("model.safetensors",)),
        ),
        (
            [
                "model.fp16-00002-of-00002.safetensors",
                "model.fp16-00001-of-00002.safetensors",
                "model.safetensors.index.fp16.json",
                "model-00001-of-00003.safetensors",
                "model.safetensors.index.json",
            ],
            True,
            WeightFiles(
                "safetensors",
                "fp16",
                (
                    "model.safetensors.index.fp16.json",
                    "model.fp16-00001-of-00002.safetensors",
                    "model.fp16-00002-of-00002.safetensors",
                ),
            ),
        ),
        (
            # Shards without their index are an interrupted download, not a copy to load.
            ["model.fp16-00001-of-00002.safetensors", "pytorch_model.fp16.bin"],
            True,
            WeightFiles("bin", "fp16", ("pytorch_model.fp16.bin",)),
        ),
        (
            ["diffusion_pytorch_model.bin", "diffusion_pytorch_model.fp16.bin"],
            True,
            WeightFiles("bin", "fp16", ("diffusion_pytorch_model.fp16.bin",)),
        ),
        (
            # Only the other precision: taken rather than nothing.
            ["diffusion_pytorch_model.fp16.safetensors"],
            False,
            WeightFiles("safetensors", "fp16", ("diffusion_pytorch_model.fp16.safetensors",)),
        ),
        (
            ["diffusion_pytorch_model.non_ema.safetensors", "diffusion_pytorch_model.safetensors"],
            False,
            WeightFiles("safetensors", None, ("diffusion_pytorch_model.safetensors",)),
        ),
    ],
)
def test_choose_weights(names: list[str], prefer_fp16: bool, expected: WeightFiles) -> None:
    assert choose_weights(names, prefer_fp16=prefer_fp16) == expected


def test_choose_weights_names_the_folder_when_nothing_is_complete() -> None:
    with pytest.raises(FileNotFoundError, match=r"some/unet: no complete set.*model-00001-of-00002"):
        choose_weights(
            ["config.json", "model-00001-of-00002.safetensors"], prefer_fp16=True, where="some/unet"
        )


def test_download_takes_one_copy_of_each_component() -> None:
    """A listing like the published show-1-base: T5 in fp32 and fp16 shards, and `.bin` copies."""
    listing = [
        ".gitattributes",
        "README.md",
        "model_index.json",
        "scheduler/scheduler_config.json",
        "tokenizer/special_tokens_map.json",
        "tokenizer/spiece.model",
        "tokenizer/tokenizer_config.json",
        "text_encoder/config.json",
        "text_encoder/model-00001-of-00002.safetensors",
        "text_encoder/model-00002-of-00002.safetensors",
        "text_encoder/model.safetensors.index.json",
        "text_encoder/model.fp16-00001-of-00002.safetensors",
        "text_encoder/model.fp16-00002-of-00002.safetensors",
        "text_encoder/model.safetensors.index.fp16.json",
        "text_encoder/pytorch_model.bin.index.json",
        "text_encoder/pytorch_model-00001-of-00002.bin",
        "text_encoder/pytorch_model-00002-of-00002.bin",
        "unet/config.json",
        "unet/diffusion_pytorch_model.bin",
        "unet/diffusion_pytorch_model.fp16.bin",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "unet/diffusion_pytorch_model.safetensors",
    ]
    assert files_to_download("show-1-base", listing) == [
        "model_index.json",
        "scheduler/scheduler_config.json",
        "tokenizer/special_tokens_map.json",
        "tokenizer/spiece.model",
        "tokenizer/tokenizer_config.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "text_encoder/config.json",
        "text_encoder/model.safetensors.index.fp16.json",
        "text_encoder/model.fp16-00001-of-00002.safetensors",
        "text_encoder/model.fp16-00002-of-00002.safetensors",
    ]
    # sr1 is loaded in full precision by the reference; a `.bin`-only repo is fetched as `.bin`.
    sr1 = ["unet/config.json", "unet/diffusion_pytorch_model.bin", "unet/diffusion_pytorch_model.fp16.bin"]
    sr1 += ["scheduler/scheduler_config.json", "image_noising_scheduler/scheduler_config.json"]
    assert files_to_download("show-1-sr1", sr1) == [
        "scheduler/scheduler_config.json",
        "image_noising_scheduler/scheduler_config.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.bin",
    ]


# The main branches as ../shared/published/README.md lists them (weights, configs and tokenizers).
_T5_SHARDS = [
    "text_encoder/config.json",
    "text_encoder/pytorch_model-00001-of-00002.bin",
    "text_encoder/pytorch_model-00002-of-00002.bin",
    "text_encoder/pytorch_model.bin.index.json",
]
PUBLISHED_LISTINGS = {
    "show-1-base": [
        "model_index.json",
        "scheduler/scheduler_config.json",
        *_T5_SHARDS,
        "tokenizer/special_tokens_map.json",
        "tokenizer/spiece.model",
        "tokenizer/tokenizer_config.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.bin",
    ],
    "show-1-interpolation": [
        "model_index.json",
        "scheduler/scheduler_config.json",
        *_T5_SHARDS,
        "tokenizer/spiece.model",
        "unet/config.json",
        "unet/diffusion_pytorch_model.bin",
    ],
    "IF-II-L-v1.0": [
        "model_index.json",
        "scheduler/scheduler_config.json",
        "image_noising_scheduler/scheduler_config.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.bin",
        "unet/diffusion_pytorch_model.fp16.bin",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "unet/diffusion_pytorch_model.safetensors",
        "text_encoder/config.json",
        "text_encoder/model.fp16-00001-of-00002.safetensors",
        "text_encoder/model.fp16-00002-of-00002.safetensors",
        "text_encoder/model.safetensors.index.fp16.json",
    ],
    "show-1-sr1": [
        "model_index.json",
        "scheduler/scheduler_config.json",
        "image_noising_scheduler/scheduler_config.json",
        *_T5_SHARDS,
        "tokenizer/spiece.model",
        "unet/config.json",
        "unet/diffusion_pytorch_model.bin",
    ],
    "show-1-sr2": [
        "model_index.json",
        "scheduler/scheduler_config.json",
        "text_encoder/config.json",
        "text_encoder/pytorch_model.bin",
        "tokenizer/merges.txt",
        "tokenizer/special_tokens_map.json",
        "tokenizer/tokenizer_config.json",
        "tokenizer/vocab.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.bin",
        "vae/config.json",
        "vae/diffusion_pytorch_model.bin",
    ],
}


def test_the_published_repos_are_fetched_without_unused_text_encoders() -> None:
    """Plain `.bin` where no variant exists; the T5 of show-1-base only (interpolation's and sr1's,
    about 30 GB, are loaded by the reference and never used); IF-II-L's fp16 safetensors."""
    planned = {folder: files_to_download(folder, listing) for folder, listing in PUBLISHED_LISTINGS.items()}
    assert planned["show-1-base"] == [
        "model_index.json",
        "scheduler/scheduler_config.json",
        "tokenizer/special_tokens_map.json",
        "tokenizer/spiece.model",
        "tokenizer/tokenizer_config.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.bin",
        "text_encoder/config.json",
        "text_encoder/pytorch_model.bin.index.json",
        "text_encoder/pytorch_model-00001-of-00002.bin",
        "text_encoder/pytorch_model-00002-of-00002.bin",
    ]
    plain_unet = ["model_index.json", "scheduler/scheduler_config.json", "unet/config.json"]
    assert planned["show-1-interpolation"] == [*plain_unet, "unet/diffusion_pytorch_model.bin"]
    assert planned["IF-II-L-v1.0"] == [
        "model_index.json",
        "scheduler/scheduler_config.json",
        "image_noising_scheduler/scheduler_config.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.fp16.safetensors",
    ]
    assert planned["show-1-sr1"] == [
        "model_index.json",
        "scheduler/scheduler_config.json",
        "image_noising_scheduler/scheduler_config.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.bin",
    ]
    assert sorted(planned["show-1-sr2"]) == sorted(PUBLISHED_LISTINGS["show-1-sr2"])
    for folder in ("show-1-interpolation", "IF-II-L-v1.0", "show-1-sr1"):
        assert not any(name.startswith(("text_encoder/", "tokenizer/")) for name in planned[folder]), folder


@pytest.mark.parametrize("case", ["tiny-c", PUBLISHED_CASE])
def test_the_downloaded_files_are_enough_to_load_the_cascade(case: str, tmp_path: Path) -> None:
    """Only the planned files of each checkpoint, copied as a download would lay them: it loads (tiny-d
    has the published layout: `.bin` UNets, sharded T5, sr2 written by the reference's class)."""
    source = GOLDEN_ROOT / case / "models"
    for folder in CHECKPOINT_FOLDERS:
        listing = [str(p.relative_to(source / folder)) for p in (source / folder).rglob("*") if p.is_file()]
        for name in files_to_download(folder, listing):
            (tmp_path / folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source / folder / name, tmp_path / folder / name)
    assert not (tmp_path / "IF-II-L-v1.0" / "text_encoder").exists()
    load_models(tmp_path, torch.float32)


def break_weights(folder: Path, fault: str) -> None:
    (path,) = folder.glob("*.safetensors")
    weights = read_weights(folder)
    first = sorted(weights)[0]
    if fault == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return
    if fault == "renamed":
        weights[f"renamed.{first}"] = weights.pop(first)
    elif fault == "shape":
        weights[first] = torch.zeros(weights[first].shape[0] + 1, *weights[first].shape[1:])
    save_file(weights, str(path))


@pytest.mark.parametrize("fault", ["truncated", "renamed", "shape"])
@pytest.mark.parametrize("component", WEIGHT_COMPONENTS, ids=list(WEIGHT_COMPONENTS))
def test_a_broken_component_is_refused_by_name(component: str, fault: str, tmp_path: Path) -> None:
    folder = tmp_path / component
    shutil.copytree(TINY_C / component, folder)
    break_weights(folder, fault)
    first_key = sorted(read_weights(TINY_C / component))[0] if fault != "truncated" else ""
    with pytest.raises(CheckpointError) as raised:
        load_component(WEIGHT_COMPONENTS[component], folder, torch.float32)
    message = str(raised.value)
    assert str(folder) in message
    # transformers names a key without the model's own prefix (CLIP's `text_model.`).
    assert first_key.removeprefix("text_model.") in message


def test_a_missing_folder_or_component_is_refused_by_name(tmp_path: Path) -> None:
    shutil.copytree(TINY_C, tmp_path / "models")
    shutil.rmtree(tmp_path / "models" / "show-1-sr2" / "vae")
    with pytest.raises(CheckpointError, match=r"show-1-sr2/vae: folder missing"):
        load_models(tmp_path / "models", torch.float32)
    shutil.rmtree(tmp_path / "models" / "IF-II-L-v1.0")
    with pytest.raises(CheckpointError, match=r"missing under .*: IF-II-L-v1.0"):
        load_models(tmp_path / "models", torch.float32)


def _rename_a_vae_weight(models: Path) -> tuple[str, ...]:
    break_weights(models / "show-1-sr2" / "vae", "renamed")
    return ("show-1-sr2/vae", "renamed.")


def _an_sde_solver_for_sr1(models: Path) -> tuple[str, ...]:
    config = models / "show-1-sr1" / "scheduler" / "scheduler_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "algorithm_type": "sde-dpmsolver++"}))
    return ("show-1-sr1/scheduler", "algorithm_type='sde-dpmsolver++' is not implemented")


@pytest.mark.parametrize(
    ("case", "fault"), [("tiny-c", _rename_a_vae_weight), (PUBLISHED_CASE, _an_sde_solver_for_sr1)]
)
def test_a_worker_with_a_broken_checkpoint_stops_before_taking_a_job(
    case: str,
    fault: Callable[[Path], tuple[str, ...]],
    tmp_path: Path,
    namespace: str,
    redis_connection: object,
) -> None:
    from rq import Queue

    from tests.conftest import service_env

    models = tmp_path / "models"
    shutil.copytree(GOLDEN_ROOT / case / "models", models)
    named = fault(models)
    env = service_env(namespace, models, tmp_path)
    queue = Queue(namespace, connection=redis_connection)
    queue.enqueue("builtins.print", "not to be run")
    run = subprocess.run(
        [sys.executable, "-m", "worker.cli", "worker"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == EXIT_BAD_CHECKPOINTS, run.stderr[-2000:]
    assert "cannot load the checkpoints" in run.stderr
    assert all(part in run.stderr for part in named), run.stderr[-2000:]
    assert queue.count == 1
