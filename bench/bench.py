"""Benchmark of the Show-1 cascade: ours (every memory mode) against the reference's way of running.

    python bench/bench.py --preset tiny                       # CPU smoke run on the tiny preset
    python bench/bench.py --preset full --device cuda         # full-size models, random weights
    python bench/bench.py --preset full --models-dir DIR      # the UNet configs of a checkpoint set

Full-size models are built from bench/configs/*.json with random weights: the compute is the same as
with the published weights (bench/configs/README.md says which configs are confirmed). UNet FLOPs
are counted per stage with torch's FlopCounterMode on the meta device (no memory, no time), then
divided by the measured seconds. Results go to bench/results/<date>-<device>.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from torch.utils.flop_counter import FlopCounterMode
from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import GenerationParams, Show1Cascade, StageSteps  # noqa: E402
from models.loading import CascadeModels, latent_unet_class, load_models  # noqa: E402
from models.memory import MEMORY_MODES, estimate_memory  # noqa: E402
from models.params import latent_sr_steps, sr_window_starts  # noqa: E402
from models.tiny import ensure_tiny_preset  # noqa: E402
from models.unet_3d import Show1UNet3DConditionModel  # noqa: E402
from worker.memory import peak_resident_bytes  # noqa: E402

CONFIGS = Path(__file__).resolve().parent / "configs"
RESULTS = Path(__file__).resolve().parent / "results"
PROMPT = "A burning lamborghini driving on rainbow."
# Which full-size configs are published facts and which are estimates (bench/configs/README.md).
CONFIGS_CONFIRMED = {
    "show-1-base": "published (rebuilt to the published byte count and weight size)",
    "show-1-interpolation": "inferred: show-1-base with 7 input channels (published sizes 1.8 kB, 3.45 GB)",
    "IF-II-L-v1.0": "layout of IF-II-L as in DESIGN.md",
    "show-1-sr1": "rebuilt to the published byte count: IF-II-M-sized (128..768, 0.80 B)",
    "show-1-sr2": "zeroscope_v2_XL's UNet with the reference class's semantics (5/10/20/20 heads, "
    "transformer_in, linear projections) + SD VAE + OpenCLIP ViT-H text encoder",
    "t5": "T5 v1.1 XXL encoder",
}


def full_size_models(
    device: torch.device, dtype: torch.dtype, models_dir: Path | None, meta: bool = False
) -> CascadeModels:
    """Random-weight full-size models, built on the device (fast init) and parked on the CPU in `dtype`
    (or left on the meta device, for counting)."""
    with torch.device("cpu"):
        tiny = load_models(ensure_tiny_preset(), torch.float32)  # tokenizers, schedulers: published values

    def build(factory):  # noqa: ANN001, ANN202
        with torch.device(device):
            model = factory()
        return model if meta else model.to(dtype).to("cpu").eval()

    def unet_config(name: str) -> dict:
        if models_dir is not None:
            return dict(Show1UNet3DConditionModel.load_config(models_dir / name / "unet"))
        return json.loads((CONFIGS / f"{name}.unet.json").read_text())

    names = ("show-1-base", "show-1-interpolation", "show-1-sr1", "show-1-sr2")
    unets = {name: unet_config(name) for name in names}
    # sr2's class as the folder's model_index.json names it (the published one: the reference's own).
    sr2_class = (
        Show1UNet3DConditionModel if models_dir is None else latent_unet_class(models_dir / "show-1-sr2")
    )
    return dataclasses.replace(
        tiny,
        t5_encoder=build(lambda: T5EncoderModel(T5Config(**_config("t5-v1_1-xxl.encoder")))),
        base_unet=build(lambda: Show1UNet3DConditionModel(**unets["show-1-base"])),
        interp_unet=build(lambda: Show1UNet3DConditionModel(**unets["show-1-interpolation"])),
        if_unet=build(lambda: UNet2DConditionModel(**_config("IF-II-L-v1.0.unet"))),
        sr1_unet=build(lambda: Show1UNet3DConditionModel(**unets["show-1-sr1"])),
        sr2_unet=build(lambda: sr2_class.from_config(unets["show-1-sr2"])),
        vae=build(lambda: AutoencoderKL(**_config("show-1-sr2.vae"))),
        clip_encoder=build(lambda: CLIPTextModel(CLIPTextConfig(**_config("show-1-sr2.clip")))),
    )


def _config(name: str) -> dict:
    return json.loads((CONFIGS / f"{name}.json").read_text())


def unet_flops(models: CascadeModels, params: GenerationParams) -> dict[str, float]:
    """FLOPs of every UNet forward of a video, per stage, counted on meta-device copies."""
    kh, kw = params.keyframe_size
    sh, sw = params.sr1_size
    oh, ow = params.output_size
    t5_width = models.t5_encoder.config.d_model
    clip_width = models.clip_encoder.config.hidden_size
    pairs = params.num_keyframes - 1
    windows = len(sr_window_starts(params.num_frames, params.window, params.stride))
    window = min(params.window, params.num_frames)
    # (model, input shape, text width, class labels?, forwards per video); batch 2 = both guidance branches.
    plan = {
        "keyframes": (
            models.base_unet,
            (2, 3, params.num_keyframes, kh, kw),
            t5_width,
            False,
            params.steps.base,
        ),
        "interpolation": (
            models.interp_unet,
            (2 * pairs, 7, 5, kh, kw),
            t5_width,
            False,
            params.steps.interp,
        ),
        "first_frame_sr": (models.if_unet, (2, 6, sh, sw), t5_width, True, params.steps.sr1_image),
        "pixel_sr": (models.sr1_unet, (2, 6, window, sh, sw), t5_width, True, params.steps.sr1 * windows),
        "latent_sr": (
            models.sr2_unet,
            (2, 4, params.num_frames, oh // 8, ow // 8),
            clip_width,
            False,
            latent_sr_steps(params.steps.sr2, params.sr2_strength),
        ),
    }
    flops = {}
    for stage, (model, shape, width, labels, forwards) in plan.items():
        with torch.device("meta"):
            meta = type(model).from_config(model.config)
            inputs = {
                "sample": torch.randn(shape),
                "timestep": torch.tensor([500.0, 500.0]).repeat(shape[0] // 2),
                "encoder_hidden_states": torch.randn(shape[0], 77, width),
            }
            if labels:
                inputs["class_labels"] = torch.full((shape[0],), 250.0)
            counter = FlopCounterMode(display=False)
            with counter, torch.no_grad():
                meta(**inputs)
        flops[stage] = counter.get_total_flops() * forwards
    return flops


def run_once(cascade: Show1Cascade, params: GenerationParams) -> tuple[dict[str, float], float | None]:
    if cascade.device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(cascade.device)
    started = time.perf_counter()
    result = cascade.generate(params)
    timings = {**result.timings, "total": time.perf_counter() - started}
    peak = torch.cuda.max_memory_allocated(cascade.device) / 2**30 if cascade.device.type == "cuda" else None
    return timings, peak


def release(models: CascadeModels) -> None:
    """Undo a mode's placement (accelerate hooks, device) so the next mode starts from the CPU."""
    from accelerate.hooks import remove_hook_from_module

    for module in models.modules():
        remove_hook_from_module(module, recurse=True)
        module.to("cpu")
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", choices=["tiny", "full"], default="tiny")
    parser.add_argument(
        "--models-dir", type=Path, help="take the full-size UNet configs from this checkpoint set"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float16", "bfloat16", "float32"])
    parser.add_argument("--steps", help="override steps, e.g. base=2,interp=2,sr1_image=2,sr1=2,sr2=2")
    parser.add_argument("--modes", default=",".join(MEMORY_MODES), help="memory modes of ours to measure")
    parser.add_argument("--skip-reference", action="store_true", help="do not run the reference flow")
    parser.add_argument(
        "--small", action="store_true", help="16x24 keyframes -> 64x112 video (quick CPU runs)"
    )
    parser.add_argument(
        "--flops-only", action="store_true", help="print the UNet FLOPs per stage of the preset and exit"
    )
    parser.add_argument(
        "--output", type=Path, help="results file (default: bench/results/<date>-<device>.json)"
    )
    args = parser.parse_args()

    device = torch.device(args.device)
    dtype = (
        getattr(torch, args.dtype)
        if args.dtype
        else (torch.float16 if device.type == "cuda" else torch.float32)
    )
    steps = (
        StageSteps(**{k: int(v) for k, v in (item.split("=") for item in args.steps.split(","))})
        if args.steps
        else StageSteps()
    )
    sizes = {"keyframe_size": (16, 24), "output_size": (64, 112)} if args.small else {}
    params = GenerationParams(prompt=PROMPT, seed=345, steps=steps, **sizes)

    if args.flops_only:
        with torch.device("meta"):
            models = full_size_models(torch.device("meta"), dtype, args.models_dir, meta=True)
        for stage, value in unet_flops(models, params).items():
            print(f"{stage:<16}{value / 1e15:8.3f} PFLOP")
        return
    if args.preset == "full":
        models = full_size_models(device, dtype, args.models_dir)
    else:
        models = load_models(ensure_tiny_preset(), dtype)
    flops = unet_flops(models, params)

    def cascade(mode: str, pairs_per_batch: int | None = None) -> Show1Cascade:
        release(models)
        return Show1Cascade(
            models,
            device=device,
            dtype=dtype,
            memory_mode=mode,
            interpolation_pairs_per_batch=pairs_per_batch,
        )

    warm = GenerationParams(prompt=PROMPT, seed=1, steps=StageSteps(1, 1, 1, 1, 2))
    cascade(MEMORY_MODES[0]).generate(warm)  # kernels, allocator and autotuning warm-up, not measured

    modes = {}
    for mode in args.modes.split(","):
        ours = cascade(mode)
        # The memory model's peak (models/memory.py) beside the measured one: on CUDA both count the
        # device's tensors, weights included; on a CPU it is what a job adds to the loaded process.
        estimate = estimate_memory(params, ours.memory_profile(), mode).peak / 2**30
        timings, peak = run_once(ours, params)
        modes[mode] = {
            "seconds": round(timings["total"], 3),
            "peak_gb": peak,
            "estimate_gb": round(estimate, 3),
            "stages": timings,
        }
        print(f"measured {mode}: {timings['total']:.1f}s", file=sys.stderr)
    reference = None
    if not args.skip_reference:
        timings, peak = run_once(cascade("model_offload", pairs_per_batch=1), params)
        reference = {"seconds": round(timings["total"], 3), "peak_gb": peak, "stages": timings}

    ours = modes.get("resident") or next(iter(modes.values()))
    stages = {
        stage: {
            "seconds": round(ours["stages"][stage], 4),
            "unet_tflop": round(flops[stage] / 1e12, 3),
            "unet_tflops_per_s": round(flops[stage] / 1e12 / ours["stages"][stage], 3),
            "reference_seconds": round(reference["stages"][stage], 4) if reference else None,
        }
        for stage in flops
    }
    low_memory = [mode["peak_gb"] for mode in modes.values() if mode["peak_gb"] is not None]
    device_name = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    )
    report = {
        "device": device_name,
        "device_type": device.type,
        "preset": args.preset,
        "dtype": str(dtype).removeprefix("torch."),
        "torch_version": torch.__version__,
        "steps": dataclasses.asdict(steps),
        "sizes": {"keyframes": params.keyframe_size, "sr1": params.sr1_size, "output": params.output_size},
        "seconds_per_video": ours["seconds"],
        "speedup_vs_reference": round(reference["seconds"] / ours["seconds"], 3) if reference else None,
        "peak_gb_low_memory": min(low_memory) if low_memory else None,
        "peak_rss_gb_process": round(peak_resident_bytes() / 2**30, 2),
        "stages": stages,
        "modes": modes,
        "reference_flow": reference,
        "configs_confirmed": CONFIGS_CONFIRMED if args.preset == "full" else "tiny preset",
        "unet_pflop_per_video": round(sum(flops.values()) / 1e15, 3),
    }
    tag = "cpu-tiny" if device.type == "cpu" and args.preset == "tiny" else device_name.replace(" ", "-")
    output = args.output or RESULTS / f"{date.today().isoformat()}-{tag}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"\nwrote {output}")


def print_table(report: dict) -> None:
    print(f"\n{report['device']} ({report['preset']}, {report['dtype']})")
    print(f"{'stage':<16}{'ours s':>10}{'ref s':>10}{'UNet TFLOP':>12}{'TFLOP/s':>10}")
    for stage, row in report["stages"].items():
        ref = "-" if row["reference_seconds"] is None else f"{row['reference_seconds']:.2f}"
        print(
            f"{stage:<16}{row['seconds']:>10.2f}{ref:>10}{row['unet_tflop']:>12.2f}{row['unet_tflops_per_s']:>10.2f}"
        )
    print(f"\n{'mode':<24}{'s/video':>10}{'peak GB':>10}{'estimate GB':>13}")
    for mode, row in report["modes"].items():
        peak = "-" if row["peak_gb"] is None else f"{row['peak_gb']:.2f}"
        print(f"{mode:<24}{row['seconds']:>10.2f}{peak:>10}{row['estimate_gb']:>13.2f}")
    if report["reference_flow"]:
        ref = report["reference_flow"]
        peak = "-" if ref["peak_gb"] is None else f"{ref['peak_gb']:.1f}"
        print(f"{'reference flow':<24}{ref['seconds']:>10.2f}{peak:>10}")
        print(f"\nspeed-up vs the reference flow: {report['speedup_vs_reference']}x")


if __name__ == "__main__":
    main()
