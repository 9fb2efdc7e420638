"""`show1 generate`: one video on this machine, with a progress bar per stage."""

from __future__ import annotations

import secrets
import sys
import time
from pathlib import Path

import click
from tqdm import tqdm


def run_generate(
    prompt: str,
    output: Path,
    models_dir: Path | None,
    seed: int | None,
    keyframes: int,
    keyframe_size: tuple[int, int],
    output_size: tuple[int, int],
    steps: dict[str, int],
    guidance: dict[str, float],
    keyframe_dropout: str,
    negative_prompt: str,
    fps: int,
    device: str | None,
    dtype: str | None,
    memory_mode: str,
    save_stages: Path | None,
) -> None:
    import torch

    from models import GenerationParams, Show1Cascade, StageGuidance, StageSteps
    from models.tiny import ensure_tiny_preset
    from models.video import encode_mp4

    if models_dir is None:
        click.secho(
            "No --models-dir / SHOW1_MODELS_DIR: using the TINY RANDOM-WEIGHTS preset; the video is noise.",
            fg="yellow",
            err=True,
        )
        models_dir = ensure_tiny_preset()
    seed = secrets.randbelow(2**63) if seed is None else seed
    try:
        params = GenerationParams(
            prompt=prompt,
            seed=seed,
            negative_prompt=negative_prompt,
            num_keyframes=keyframes,
            keyframe_size=keyframe_size,
            output_size=output_size,
            steps=StageSteps(**steps),
            guidance=StageGuidance(**guidance),
            fps=fps,
            keyframe_dropout=keyframe_dropout,
        )
    except ValueError as error:
        raise click.UsageError(str(error)) from error
    click.echo(f"seed {seed}", err=True)

    started = time.monotonic()
    cascade = Show1Cascade.from_pretrained(
        models_dir, device=device, dtype=getattr(torch, dtype) if dtype else None, memory_mode=memory_mode
    )
    click.echo(f"models loaded in {time.monotonic() - started:.1f}s on {cascade.device}", err=True)
    bars: dict[str, tqdm] = {}

    def progress(stage: str, step: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=f"{stage:>15}", unit="step", file=sys.stderr)
        bar.update(step - bar.n)
        if step == total:
            bar.close()

    result = cascade.generate(params, progress=progress, keep_stages=save_stages is not None)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(encode_mp4(result.frames, fps=fps))
    if save_stages is not None:
        from safetensors.torch import save_file

        save_file({key: value.contiguous().cpu() for key, value in result.stages.items()}, str(save_stages))
    frames, height, width, _ = result.frames.shape
    seconds = sum(result.timings.values())
    click.echo(f"wrote {output} ({frames} frames, {width}x{height}, {fps} fps) in {seconds:.1f}s")
