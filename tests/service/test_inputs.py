"""The user's own frames through the running service (uvicorn, an RQ worker, the tiny preset): a
storyboard of a run's keyframes gives that run's later frames exactly, twice the same; an upscale keeps
the clip's frames at output_size."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from app.storage import LocalStorage
from models.cascade import Show1Cascade
from models.params import GenerationParams, StageSteps
from models.pipelines.latent_sr import from_uint8_frames, to_uint8_frames
from models.stage_outputs import FINAL_FRAMES, INTERPOLATION, KEYFRAMES, from_bytes
from models.video import decode_mp4, encode_mp4
from tests.conftest import FAST_REQUEST, Processes, service_env
from tests.service.test_stage_outputs import AUTH, KEY, finished, frames_of, post, view

PROMPT = {**FAST_REQUEST, "prompt": "a lighthouse at dusk", "seed": 5, "num_keyframes": 2}
# A storyboard's images are its keyframes: the keyframe stage's fields do not apply. The smallest sizes
# and steps the tiny preset takes (two keyframes of 8x16, one step a stage, sr2's least of two): the
# test is about exactness, which does not need many pixels.
STORYBOARD_SIZES = {"keyframe_size": {"height": 8, "width": 16}, "output_size": {"height": 32, "width": 64}}
STORYBOARD_STEPS = {"interp": 1, "sr1_image": 1, "sr1": 1, "sr2": 2}


def png_data_url(frame: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


class _Outputs:
    """Stage outputs held in memory: the keyframes a storyboard's images give, for the expected run."""

    def __init__(self, outputs: dict[str, torch.Tensor]) -> None:
        self.outputs = outputs

    def load(self, name: str) -> torch.Tensor | None:
        return self.outputs.get(name)

    def save(self, name: str, output: torch.Tensor) -> None:
        self.outputs[name] = output


@pytest.mark.slow
def test_a_storyboard_of_a_runs_keyframes_gives_its_later_frames_exactly(
    processes: Processes, namespace: str, tiny_preset: Path, tmp_path: Path
) -> None:
    env = service_env(namespace, tiny_preset, tmp_path, SHOW1_API_KEYS=KEY)
    base = processes.api(env)
    processes.worker(env)
    storage = LocalStorage(tmp_path / "storage")

    # A cascade run that stores its stage outputs, as the worker's runs do (same preset, CPU, float32).
    cascade = Show1Cascade.from_pretrained(tiny_preset, device="cpu", dtype=torch.float32)
    params = GenerationParams(
        prompt=PROMPT["prompt"],
        seed=PROMPT["seed"],
        num_keyframes=2,
        keyframe_size=(8, 16),
        output_size=(32, 64),
        steps=StageSteps(base=1, **STORYBOARD_STEPS),
    )
    stored = _Outputs({})
    cascade.generate(params, stored=stored, last_stage=INTERPOLATION)
    keyframes = stored.outputs[KEYFRAMES]
    images = to_uint8_frames(keyframes)  # the run's keyframes as 8-bit images: all a user can send
    storyboard = {
        **PROMPT,
        **STORYBOARD_SIZES,
        "steps": STORYBOARD_STEPS,
        "keyframe_images": [png_data_url(image) for image in images],
    }
    del storyboard["num_keyframes"]
    answers = [post(base, storyboard) for _ in range(2)]
    assert [answer.status_code for answer in answers] == [202, 202], answers[0].text
    jobs = [finished(base, answer.json()["id"], processes)[0] for answer in answers]
    assert jobs[0]["job_stages"] == ["interpolation", "first_frame_sr", "pixel_sr", "latent_sr"]
    assert jobs[0]["stage_progress"].keys() == set(jobs[0]["job_stages"])
    described = jobs[0]["inputs"]["keyframe_images"]
    assert [(item["width"], item["height"], item["format"]) for item in described] == [(16, 8, "PNG")] * 2
    assert jobs[0]["result"]["frames"] == 5

    finals = [from_bytes(storage.get(_stage_keys(env, job["id"])[FINAL_FRAMES])).numpy() for job in jobs]
    assert np.array_equal(finals[0], finals[1]), "one seed, one storyboard: the same frames"
    assert np.array_equal(frames_of(base, jobs[0]["id"]), frames_of(base, jobs[1]["id"]))

    # The run itself, resumed after its keyframes made 8-bit: the entry point adds nothing else.
    quantised = from_uint8_frames(images)
    assert (quantised - keyframes.clamp(-1, 1)).abs().max() <= 1 / 127.5
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the worker runs (OMP_NUM_THREADS=1): the same float sums
    try:
        storyboard_params = GenerationParams.from_dict(jobs[0]["params"])
        expected = cascade.generate(storyboard_params, stored=_Outputs({KEYFRAMES: quantised}))
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(finals[0], expected.frames)


def _stage_keys(env: dict[str, str], job_id: str) -> dict[str, str]:
    import redis

    from app.jobs import JobStore

    store = JobStore(redis.Redis.from_url(env["SHOW1_REDIS_URL"]), env["SHOW1_KEY_PREFIX"], 3600)
    record = store.get(job_id)
    assert record is not None
    return record["stages"]


@pytest.mark.slow
def test_an_upscaled_clip_keeps_its_frames_and_rate_at_output_size(
    processes: Processes, namespace: str, tiny_preset: Path, tmp_path: Path
) -> None:
    env = service_env(namespace, tiny_preset, tmp_path, SHOW1_API_KEYS=KEY)
    base = processes.api(env)
    processes.worker(env)
    clip = np.random.default_rng(3).integers(0, 256, (6, 48, 80, 3), dtype=np.uint8)
    mp4 = encode_mp4(clip, fps=12)
    # As a file part of a multipart body, as curl -F and the SDKs send files.
    answer = httpx.post(
        f"{base}/v1/videos",
        data={
            "prompt": "sharper",
            "seed": "4",
            "output_size[height]": "64",
            "output_size[width]": "112",
            "steps[sr2]": "2",
        },
        files={"input_video": ("clip.mp4", mp4, "video/mp4")},
        headers=AUTH,
        timeout=30,
    )
    assert answer.status_code == 202, answer.text
    job = answer.json()
    assert job["job_stages"] == ["latent_sr"]
    assert job["inputs"]["input_video"]["frames"] == 6 and job["inputs"]["input_video"]["codec"] == "h264"
    job, _ = finished(base, job["id"], processes)
    assert job["stage_progress"].keys() == {"latent_sr"}
    result = job["result"]
    assert (result["frames"], result["height"], result["width"], result["fps"]) == (6, 64, 112, 12)
    assert decode_mp4(
        httpx.get(
            f"{base}/v1/videos/{job['id']}/content", headers=AUTH, timeout=10, follow_redirects=True
        ).content
    ).shape == (6, 64, 112, 3)
    assert view(base, job["id"])["params"]["clip_frames"] == 6
