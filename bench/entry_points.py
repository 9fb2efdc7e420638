"""What a storyboard and an upscale cost against a full job: cost units (models/cost.py, only the stages
each runs: models/stage_outputs.job_stages) and seconds of `Show1Cascade.generate`, median of a few runs.

    python bench/entry_points.py --preset tiny --runs 3          # demo sizes and steps, as `show1 up`
    python bench/entry_points.py --preset /path/to/checkpoints --paper --device cuda --dtype float16

The storyboard's images are a prompt run's keyframes as 8-bit images (what a user can send), the
upscale's clip is that run's interpolated video as 8-bit frames at the keyframe size: each job has the
frame count of the full one, so the numbers compare like for like.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.cascade import Show1Cascade  # noqa: E402
from models.cost import REFERENCE_COST, stage_costs  # noqa: E402
from models.params import DEMO_KEYFRAME_SIZE, DEMO_OUTPUT_SIZE, DEMO_STEPS, GenerationParams  # noqa: E402
from models.pipelines.latent_sr import from_uint8_frames, to_uint8_frames  # noqa: E402
from models.stage_outputs import INTERPOLATION, KEYFRAMES, job_stages  # noqa: E402


class _Held:
    """Stage outputs in memory: where the prompt run leaves its keyframes and interpolation."""

    def __init__(self) -> None:
        self.outputs: dict[str, torch.Tensor] = {}

    def load(self, name: str) -> torch.Tensor | None:
        return None  # every timed run starts from its own entry point

    def save(self, name: str, output: torch.Tensor) -> None:
        self.outputs[name] = output


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="tiny", help="'tiny' (made if missing) or a checkpoints folder")
    parser.add_argument("--paper", action="store_true", help="the paper's sizes and steps, not the demo's")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--num-keyframes", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()

    if args.preset == "tiny":
        from models.tiny import ensure_tiny_preset

        preset = ensure_tiny_preset()
    else:
        preset = Path(args.preset)
    cascade = Show1Cascade.from_pretrained(preset, device=args.device, dtype=getattr(torch, args.dtype))
    params = GenerationParams(prompt="A panda taking a selfie", seed=7, num_keyframes=args.num_keyframes)
    if not args.paper:
        params = replace(
            params, keyframe_size=DEMO_KEYFRAME_SIZE, output_size=DEMO_OUTPUT_SIZE, steps=DEMO_STEPS
        )

    held = _Held()
    cascade.generate(params, stored=held, last_stage=INTERPOLATION)  # also warms every model up
    keyframes = from_uint8_frames(to_uint8_frames(held.outputs[KEYFRAMES]))
    clip = to_uint8_frames(held.outputs[INTERPOLATION])
    runs = {
        "prompt": (params, {}),
        "keyframe_images": (params, {"keyframes": keyframes}),
        "input_video": (replace(params, clip_frames=len(clip)), {"clip": clip}),
    }
    report = {}
    for entry, (entry_params, given) in runs.items():
        stages = job_stages(entry)
        seconds = []
        for _ in range(args.runs):
            started = time.perf_counter()
            result = cascade.generate(entry_params, **given)
            seconds.append(time.perf_counter() - started)
        entry_costs = stage_costs(entry_params)
        report[entry] = {
            "stages": list(stages),
            "frames": int(result.frames.shape[0]),
            "cost": round(sum(entry_costs[stage] for stage in stages) / REFERENCE_COST, 4),
            "seconds_median": round(statistics.median(seconds), 3),
            "seconds": [round(value, 3) for value in seconds],
        }
    full = report["prompt"]
    for entry in report.values():
        entry["cost_vs_full"] = round(entry["cost"] / full["cost"], 3)
        entry["seconds_vs_full"] = round(entry["seconds_median"] / full["seconds_median"], 3)
    sizes = {
        "keyframe_size": params.keyframe_size,
        "output_size": params.output_size,
        "steps": asdict(params.steps),
    }
    print(json.dumps({"torch_threads": torch.get_num_threads(), **sizes, "entry_points": report}, indent=2))


if __name__ == "__main__":
    main()
