"""The memory model (models/memory.py) against measurement, and what it says of the published models.

Measured here: the tiny preset on the CPU, each size in a fresh process (bench/memory.py --child), its
peak RSS against the loaded process's RSS plus the estimate, at sizes a CI machine runs in seconds;
bench/results/2026-12-06-memory-cpu.md has the large ones (the paper's sizes, 1280x720 with 33 frames).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from models.memory import MEMORY_MODES, ModelProfile, estimate_memory
from models.params import GenerationParams
from tests.conftest import REPO

GB = 2**30
TOLERANCE = 0.25


def _measure(tiny_preset, size: str) -> dict:  # noqa: ANN001
    command = [sys.executable, "bench/memory.py", "--child", size, "--models-dir", str(tiny_preset)]
    output = subprocess.run(command, cwd=REPO, check=True, capture_output=True, text=True, timeout=600)
    return json.loads(output.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("size", ["ci-small", "ci-wide"])
def test_estimate_within_a_quarter_of_the_measured_peak(tiny_preset, size: str):  # noqa: ANN001
    row = _measure(tiny_preset, size)
    measured = row["measured"]["process_peak"]
    added = measured - row["baseline"]
    estimated_added = row["estimate_peak"] - row["baseline"]
    # The job must add a fair share of the peak, or the comparison would say little of the model.
    assert added > 0.2 * measured, f"{size}: the job adds only {added / GB:.2f} GB"
    # The whole process, as a worker's memory is limited (and admission estimates it).
    assert abs(row["estimate_peak"] - measured) <= TOLERANCE * measured, (
        f"{size}: estimated {row['estimate_peak'] / GB:.2f} GB (the job {estimated_added / GB:.2f}), "
        f"measured {measured / GB:.2f} GB (the job {added / GB:.2f})"
    )


def published_profile(mode: str) -> ModelProfile:
    """The published models' sizes (bench/configs) in float16 on a GPU, as bench/memory.py builds them."""
    sys.path.insert(0, str(REPO / "bench"))
    import memory  # bench/memory.py

    return memory.published_profile(mode)


def test_the_least_memory_mode_fits_an_8_gb_card_at_the_paper_defaults():
    paper = GenerationParams(prompt="p", seed=0)
    peaks = {mode: estimate_memory(paper, published_profile(mode), mode).peak for mode in MEMORY_MODES}
    assert peaks["sequential_offload"] + 1 * GB <= 8 * GB, peaks  # a CUDA context beside it
    # Each mode keeps less on the device than the one before it.
    ordered = [peaks[mode] for mode in MEMORY_MODES]
    assert ordered == sorted(ordered, reverse=True), peaks
    # Resident: every weight (about 24 GB in float16) plus the largest stage's activations.
    assert 24 * GB < peaks["resident"] < 60 * GB


def test_estimates_grow_with_what_the_request_grows():
    profile = published_profile("resident")
    paper = GenerationParams(prompt="p", seed=0)
    larger = {
        "output": GenerationParams(prompt="p", seed=0, output_size=(720, 1280)),
        "frames": GenerationParams(prompt="p", seed=0, num_keyframes=16),
        "keyframes": GenerationParams(prompt="p", seed=0, keyframe_size=(64, 112)),
    }
    base = estimate_memory(paper, profile).peak
    for name, params in larger.items():
        assert estimate_memory(params, profile).peak > base, name
    # A draft's stages alone need less than the whole cascade at a large output.
    large = larger["output"]
    draft = estimate_memory(large, profile, stages=("keyframes", "interpolation"))
    assert draft.peak < estimate_memory(large, profile).peak
    assert set(draft.stages) == {"text", "keyframes", "interpolation"}


def test_a_profile_survives_json():
    profile = published_profile("sequential_offload")
    again = ModelProfile.from_dict(json.loads(json.dumps(profile.to_dict())))
    assert again == profile
