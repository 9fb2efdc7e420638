"""Each folder's scheduler as it names it: what loads, what is refused by name, and the DDPM sampler
against diffusers' DDPMScheduler driven the way the reference drives it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from diffusers import DDPMScheduler

from models.errors import CheckpointError
from models.loading import load_models
from models.noise import draw_frame_noise
from models.schedulers import load_latent_scheduler, load_noising_scheduler, load_pixel_scheduler
from tests.models.golden_case import GOLDEN_ROOT, PUBLISHED_CASE, TAME_CASE, requires_golden

pytestmark = requires_golden

PUBLISHED = GOLDEN_ROOT / PUBLISHED_CASE / "models"


def test_the_published_folders_sample_with_what_they_name() -> None:
    models = load_models(PUBLISHED, torch.float32)
    for name in ("base_scheduler", "interp_scheduler", "sr1_scheduler"):
        scheduler = getattr(models, name)
        assert scheduler.class_name == "DPMSolverMultistepScheduler", name
        assert scheduler.config["algorithm_type"] == "dpmsolver++"
        assert scheduler.config["final_sigmas_type"] == "sigma_min"  # as diffusers 0.19 ended
        assert not scheduler.draws_step_noise
    assert models.base_scheduler.prediction_type == "epsilon"
    assert models.sr1_scheduler.prediction_type == "v_prediction"
    assert models.sr1_scheduler.config["sample_max_value"] == 1.0
    assert models.if_scheduler.class_name == "DDPMScheduler" and models.if_scheduler.draws_step_noise
    assert models.sr2_scheduler.config.final_sigmas_type == "sigma_min"
    tame = load_models(GOLDEN_ROOT / TAME_CASE / "models", torch.float32)
    assert tame.base_scheduler.class_name == "DDPMScheduler"


def _folder_with(tmp_path: Path, source: Path, **changes: object) -> Path:
    folder = tmp_path / source.parent.name / source.name
    shutil.copytree(source, folder)
    config = folder / "scheduler_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), **changes}))
    return folder


@pytest.mark.parametrize(
    ("source", "changes", "named"),
    [
        ("show-1-base/scheduler", {"_class_name": "EulerDiscreteScheduler"}, "'EulerDiscreteScheduler'"),
        ("show-1-base/scheduler", {"algorithm_type": "sde-dpmsolver++"}, "algorithm_type='sde-dpmsolver++'"),
        ("show-1-sr1/scheduler", {"use_karras_sigmas": True}, "use_karras_sigmas=True"),
        ("show-1-interpolation/scheduler", {"prediction_type": "flow_prediction"}, "prediction_type"),
        ("IF-II-L-v1.0/scheduler", {"variance_type": "fixed_large"}, "variance_type='fixed_large'"),
        ("IF-II-L-v1.0/scheduler", {"timestep_spacing": "trailing"}, "timestep_spacing='trailing'"),
    ],
)
def test_a_pixel_scheduler_not_implemented_is_refused_by_name(
    tmp_path: Path, source: str, changes: dict, named: str
) -> None:
    folder = _folder_with(tmp_path, PUBLISHED / source, **changes)
    with pytest.raises(CheckpointError) as raised:
        load_pixel_scheduler(folder)
    assert str(folder) in str(raised.value) and named in str(raised.value)


def test_noising_and_latent_schedulers_are_checked_too(tmp_path: Path) -> None:
    noising = _folder_with(
        tmp_path, PUBLISHED / "show-1-sr1/image_noising_scheduler", _class_name="PNDMScheduler"
    )
    with pytest.raises(CheckpointError, match="'PNDMScheduler' is not implemented"):
        load_noising_scheduler(noising)
    latent = _folder_with(tmp_path, PUBLISHED / "show-1-sr2/scheduler", euler_at_final=True)
    with pytest.raises(CheckpointError, match="euler_at_final=True is not implemented"):
        load_latent_scheduler(latent)
    missing = tmp_path / "nothing"
    with pytest.raises(CheckpointError, match="scheduler_config.json missing"):
        load_pixel_scheduler(missing)


def test_the_cascade_refuses_at_load_not_at_the_first_job(tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(PUBLISHED, models)
    config = models / "show-1-sr1" / "scheduler" / "scheduler_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "solver_type": "bogus"}))
    with pytest.raises(CheckpointError, match=r"show-1-sr1/scheduler.*solver_type='bogus'"):
        load_models(models, torch.float32)


def _synthetic_prediction(sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
    """A fixed smooth 'model': 3 prediction channels and 3 variance fractions in [-1, 1]."""
    scale = timestep.float() / 1000
    return torch.cat([torch.tanh(sample * 0.7 + scale), torch.tanh(sample.flip(1) - scale)], dim=1)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("variance_type", ["learned_range", "fixed_small"])
def test_ddpm_sampler_is_diffusers_ddpm_stepped_frames_as_a_batch(
    prediction_type: str, variance_type: str
) -> None:
    config = {
        **json.loads((PUBLISHED / "IF-II-L-v1.0" / "scheduler" / "scheduler_config.json").read_text()),
        "prediction_type": prediction_type,
        "variance_type": variance_type,
        "sample_max_value": 1.5,
    }
    folder_config = {"_class_name": "DDPMScheduler", **config}
    steps, frames, size = 6, 3, (8, 12)
    start = torch.randn(1, 3, frames, *size, generator=torch.Generator().manual_seed(5))

    ours = load_pixel_scheduler_from(folder_config).sampler(steps, torch.device("cpu"))
    generator = torch.Generator().manual_seed(11)
    sample = start
    for index, timestep in enumerate(ours.timesteps):
        output = _synthetic_prediction(sample, timestep)
        sample = ours.step(index, output[:, :3], output[:, 3:], sample, generator)

    reference = DDPMScheduler.from_config(config)
    reference.set_timesteps(steps)
    generator = torch.Generator().manual_seed(11)
    expected = start
    for timestep in reference.timesteps:
        output = _synthetic_prediction(expected, timestep)
        if variance_type != "learned_range":
            output = output[:, :3]
        frames_first = expected.permute(0, 2, 1, 3, 4).reshape(frames, 3, *size)
        output = output.permute(0, 2, 1, 3, 4).reshape(frames, -1, *size)
        stepped = reference.step(output, timestep, frames_first, generator=generator).prev_sample
        expected = stepped.reshape(1, frames, 3, *size).permute(0, 2, 1, 3, 4)
    torch.testing.assert_close(sample, expected, rtol=0, atol=1e-5)
    # The layout of the step noise is the reference's: (F, 3, H, W) frames.
    assert draw_frame_noise(frames, *size, torch.Generator(), torch.device("cpu"), torch.float32).shape == (
        1,
        3,
        frames,
        *size,
    )


def load_pixel_scheduler_from(config: dict) -> object:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "scheduler_config.json").write_text(json.dumps(config))
        return load_pixel_scheduler(Path(folder))
