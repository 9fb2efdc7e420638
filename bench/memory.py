"""Memory of the Show-1 cascade: the model's estimate (models/memory.py) against measurement.

    python bench/memory.py                      # tiny preset on the CPU: estimate vs peak RSS, 5 sizes
    python bench/memory.py --sizes paper,720p   # some of them
    python bench/memory.py --published          # float16 estimates of the published models, per mode

Each measured size runs in a fresh process (so its peak RSS is its own): the models are loaded, the
process's resident memory is read (the baseline, weights included), then one generation runs while a
thread samples the resident memory every millisecond and files each sample under the running stage.
The estimate of a size is that baseline plus the model's peak. On CUDA (`--device cuda`) the
measurement is `torch.cuda.max_memory_allocated` per stage, against the estimate with weights.
Results go to bench/results/<date>-memory-<device>.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import threading
import time
from datetime import date
from functools import cache
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.memory import (  # noqa: E402
    DEFAULT_WORKING_BYTES,
    MEMORY_MODES,
    TEXT,
    ModelProfile,
    default_pairs_per_batch,
    estimate_memory,
    profile_of,
)
from models.params import GenerationParams, StageSteps  # noqa: E402
from worker.memory import peak_resident_bytes, resident_bytes  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
GB = 2**30
# The calibration sizes: (keyframes, keyframe size, output size). "paper" is the reference default,
# "720p" the OpenAI face's default size with its 33 frames (9 keyframes).
SIZES = {
    "demo": (8, (16, 24), (64, 112)),
    "paper": (8, (40, 64), (320, 576)),
    "16-keyframes": (16, (40, 64), (320, 576)),
    "large-keyframes": (8, (64, 112), (480, 848)),
    "720p": (9, (40, 64), (720, 1280)),
}
# Small sizes for tests/models/test_memory.py.
CI_SIZES = {
    "ci-small": (8, (16, 24), (64, 112)),
    "ci-wide": (5, (24, 40), (256, 448)),
}
STEPS = StageSteps(base=2, interp=2, sr1_image=2, sr1=2, sr2=2)  # memory does not grow with steps


def params_for(size: str) -> GenerationParams:
    keyframes, keyframe_size, output_size = {**SIZES, **CI_SIZES}[size]
    return GenerationParams(
        prompt="A panda taking a selfie",
        seed=1,
        num_keyframes=keyframes,
        keyframe_size=keyframe_size,
        output_size=output_size,
        steps=STEPS,
    )


class StagePeaks:
    """Samples this process's resident memory on a thread, filing the peak under the running stage."""

    def __init__(self) -> None:
        self.stage = TEXT
        self.peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    rss = staticmethod(resident_bytes)

    def _sample(self) -> None:
        while not self._stop.is_set():
            value = self.rss()
            self.peaks[self.stage] = max(self.peaks.get(self.stage, 0), value)
            time.sleep(0.001)

    def __enter__(self) -> StagePeaks:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def on_progress(self, stage: str, _step: int, _total: int) -> None:
        self.stage = stage


def measure_one(size: str, device: str, models_dir: str | None, working_mb: int | None) -> dict:
    """In this process: load, read the baseline, generate once, report per-stage peaks and estimates."""
    import gc

    import torch

    from models.cascade import Show1Cascade
    from models.chunking import WorkingMemory
    from models.tiny import ensure_tiny_preset

    working = WorkingMemory(working_mb * 2**20) if working_mb else None
    cascade = Show1Cascade.from_pretrained(
        models_dir or ensure_tiny_preset(), device=device, working_memory=working
    )
    params = params_for(size)
    gc.collect()
    profile = cascade.memory_profile()
    estimate = estimate_memory(params, profile, cascade.memory_mode)
    started = time.perf_counter()
    if cascade.device.type == "cuda":
        measured, baseline = _measure_cuda(cascade, params)
    else:
        baseline = StagePeaks.rss()
        peaks = StagePeaks()
        with peaks:
            cascade.generate(params, progress=peaks.on_progress)
        measured = {stage: value - baseline for stage, value in peaks.peaks.items()}
        measured["process_peak"] = peak_resident_bytes()
    return {
        "size": size,
        "frames": params.num_frames,
        "output_size": list(params.output_size),
        "keyframe_size": list(params.keyframe_size),
        "device": str(cascade.device),
        "seconds": round(time.perf_counter() - started, 1),
        "baseline": baseline,
        "measured": measured,
        "estimate": estimate.stages,
        "estimate_peak": baseline + estimate.peak if cascade.device.type == "cpu" else estimate.peak,
        "torch": torch.__version__,
        "memory_mode": cascade.memory_mode,
        "profile": profile.to_dict(),
    }


def _measure_cuda(cascade, params: GenerationParams) -> tuple[dict[str, int], int]:  # noqa: ANN001
    import torch

    measured: dict[str, int] = {}
    current = {"stage": TEXT}

    def on_progress(stage: str, _step: int, _total: int) -> None:
        if stage != current["stage"]:
            measured[current["stage"]] = torch.cuda.max_memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            current["stage"] = stage

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    cascade.generate(params, progress=on_progress)
    measured[current["stage"]] = torch.cuda.max_memory_allocated()
    measured["process_peak"] = max(measured.values())
    return measured, 0


def measure(sizes: list[str], device: str, models_dir: str | None, working_mb: int | None) -> list[dict]:
    rows = []
    for size in sizes:
        command = [sys.executable, __file__, "--child", size, "--device", device]
        if working_mb:
            command += ["--working-mb", str(working_mb)]
        if models_dir:
            command += ["--models-dir", models_dir]
        print(f"measuring {size} ...", file=sys.stderr, flush=True)
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(output.strip().splitlines()[-1]))
    return rows


def measured_table(rows: list[dict]) -> str:
    lines = [
        "| size | frames | output | measured peak RSS | estimate | error "
        "| peak stage (measured / estimated) | s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        measured = row["measured"]["process_peak"]
        stage_measured = max((s for s in row["measured"] if s != "process_peak"), key=row["measured"].get)
        stage_estimated = max(row["estimate"], key=row["estimate"].get)
        lines.append(
            f"| {row['size']} | {row['frames']} | {row['output_size'][0]}x{row['output_size'][1]} "
            f"| {measured / GB:.2f} GB | {row['estimate_peak'] / GB:.2f} GB "
            f"| {(row['estimate_peak'] - measured) / measured:+.0%} | {stage_measured} / {stage_estimated} "
            f"| {row['seconds']} |"
        )
    lines += ["", "Per stage, above the loaded process (measured / estimated, GB):", ""]
    stages = list(rows[0]["estimate"])
    lines.append("| size | " + " | ".join(stages) + " |")
    lines.append("| --- |" + " --- |" * len(stages))
    for row in rows:
        cells = [
            f"{row['measured'].get(stage, 0) / GB:.2f} / {row['estimate'][stage] / GB:.2f}"
            for stage in stages
        ]
        lines.append(f"| {row['size']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@cache
def published_models():  # noqa: ANN201
    """The published models' sizes (bench/configs) in float16, on the meta device: no memory, no time."""
    import torch

    from bench import full_size_models  # bench/bench.py, beside this script

    models = full_size_models(torch.device("meta"), torch.float16, None, meta=True)
    for module in models.modules():
        module.to(torch.float16)  # on the meta device: only the sizes change
    return models


def published_profile(mode: str) -> ModelProfile:
    """The published models on a GPU in float16, in `mode`, at the default working memory."""
    return profile_of(
        published_models(),
        element_size=2,
        device_type="cuda",
        working_bytes=DEFAULT_WORKING_BYTES,
        interpolation_pairs_per_batch=default_pairs_per_batch("cuda", mode),
    )


def published_table() -> str:
    """float16 estimates of the published models (bench/configs) on a GPU, per memory mode."""
    requests = {
        "paper defaults (8 keyframes, 29 frames of 320x576)": GenerationParams(prompt="p", seed=0),
        "OpenAI face default (9 keyframes, 33 frames of 1280x720)": GenerationParams(
            prompt="p", seed=0, num_keyframes=9, output_size=(720, 1280)
        ),
    }
    lines = [
        "| request | memory mode | peak (estimate) | peak stage | fits |",
        "| --- | --- | --- | --- | --- |",
    ]
    for label, params in requests.items():
        for mode in MEMORY_MODES:
            estimate = estimate_memory(params, published_profile(mode), mode)
            lines.append(
                f"| {label} | {mode} | {estimate.peak / GB:.1f} GB | {estimate.peak_stage} "
                f"| {fits(estimate.peak)} |"
            )
    return "\n".join(lines)


# Cards by memory, and what a process needs beside its tensors (CUDA context, allocator slack).
CARDS = (
    ("8 GB (RTX 4060)", 8),
    ("16 GB (T4, A4000)", 16),
    ("24 GB (L4, A10, RTX 4090)", 24),
    ("40 GB (A100-40G)", 40),
    ("80 GB (A100-80G, H100)", 80),
    ("141 GB (H200)", 141),
)
CONTEXT_OVERHEAD = 1.0 * GB


def fits(peak: int) -> str:
    for name, gigabytes in CARDS:
        if peak + CONTEXT_OVERHEAD <= gigabytes * GB:
            return name
    return "none of one GPU"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default=",".join(SIZES), help=f"any of {', '.join(SIZES)}")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models-dir", help="checkpoints to measure (default: the tiny preset)")
    parser.add_argument("--published", action="store_true", help="print the published models' estimates")
    parser.add_argument("--working-mb", type=int, help="the cascade's working memory (default: its own)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument(
        "--output", type=Path, help="results file (default: bench/results/<date>-memory-<device>.md)"
    )
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure_one(args.child, args.device, args.models_dir, args.working_mb)))
        return
    if args.published:
        print(published_table())
        return
    rows = measure(args.sizes.split(","), args.device, args.models_dir, args.working_mb)
    machine = platform.processor() or platform.machine()
    report = (
        f"# Memory: estimate against measurement ({date.today().isoformat()}, {args.device}, {machine})\n\n"
        f"`python bench/memory.py --sizes {args.sizes} --device {args.device}`; steps "
        f"{STEPS.base}/{STEPS.interp}/{STEPS.sr1_image}/{STEPS.sr1}/{STEPS.sr2}.\n\n"
        f"{measured_table(rows)}\n\n```json\n{json.dumps(rows, indent=1)}\n```\n"
    )
    output = args.output or RESULTS / f"{date.today().isoformat()}-memory-{args.device}.md"
    output.write_text(report)
    print(measured_table(rows))
    print(f"\nwrote {output}")


if __name__ == "__main__":
    main()
