"""Stage outputs kept in storage: a killed worker's job resumes where it was and makes the very video
an uninterrupted job makes; a draft is finished into the frames of a full job; refusals; expiry."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import numpy as np
import redis
from rq import Queue

from app.actions import sweep_stage_outputs
from app.jobs import JobStore
from app.settings import Settings
from app.storage import LocalStorage, stage_output_key
from models.stage_outputs import FINAL_FRAMES, from_bytes
from models.video import decode_mp4
from tests.conftest import FAST_REQUEST, REDIS_URL, Processes, service_env, wait_for

KEY, OTHER_KEY = "stage-key", "other-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
# Four pixel-SR windows of 6 steps (several seconds each): time to kill the worker after the first
# window is stored.
RESUMABLE = {
    **FAST_REQUEST,
    "prompt": "a red fox in snow",
    "seed": 11,
    "steps": {**FAST_REQUEST["steps"], "sr1": 6},
}


def post(base: str, body: dict, headers: dict = AUTH) -> httpx.Response:
    return httpx.post(f"{base}/v1/videos", json=body, headers=headers, timeout=10)


def view(base: str, job_id: str) -> dict:
    return httpx.get(f"{base}/v1/videos/{job_id}", headers=AUTH, timeout=5).json()


def frames_of(base: str, job_id: str) -> np.ndarray:
    answer = httpx.get(f"{base}/v1/videos/{job_id}/content", headers=AUTH, timeout=10, follow_redirects=True)
    assert answer.status_code == 200, answer.text
    return decode_mp4(answer.content)


def assert_same_video(base: str, storage_dir: str, one: dict, other: dict) -> None:
    """The cascade made exactly the same frames for both jobs (their stored FINAL_FRAMES), and their
    MP4s show them alike. Not bit for bit: the bundled libx264 encodes the same frames slightly
    differently from run to run (4 different files from 20 encodes of one 29-frame video here; two
    such decodes differed in 0.8 % of their values)."""
    storage = LocalStorage(Path(storage_dir))
    frames = [
        from_bytes(storage.get(stage_output_key(job["id"], job["attempts"], FINAL_FRAMES))).numpy()
        for job in (one, other)
    ]
    np.testing.assert_array_equal(*frames)
    decoded = [frames_of(base, job["id"]) for job in (one, other)]
    assert decoded[0].shape == decoded[1].shape == frames[0].shape
    assert np.abs(decoded[0].astype(int) - decoded[1]).mean() < 0.5


def finished(base: str, job_id: str, processes: Processes, timeout: float = 240) -> tuple[dict, float]:
    """Poll until the job ends; it must have succeeded. Returns it and the seconds waited."""
    started = time.monotonic()
    final = wait_for(
        lambda: (job := view(base, job_id))["status"] in ("succeeded", "failed", "canceled") and job,
        timeout,
        f"job {job_id} to end",
        0.05,
    )
    assert final["status"] == "succeeded", (final, processes.logs())
    return final, time.monotonic() - started


def test_a_killed_worker_resumes_mid_pixel_sr_into_the_same_video(
    processes: Processes, namespace: str, tiny_preset: Path, tmp_path: Path
) -> None:
    env = service_env(namespace, tiny_preset, tmp_path, SHOW1_API_KEYS=KEY)
    base = processes.api(env)
    first = processes.worker(env)
    killed = post(base, RESUMABLE).json()
    wait_for(
        lambda: "pixel_sr.0" in view(base, killed["id"])["stored_stages"],
        120,
        "the first pixel-SR window stored",
        0.05,
    )
    first.send_signal(signal.SIGKILL)
    first.wait()
    before = view(base, killed["id"])
    assert before["status"] == "running" and "pixel_sr.3" not in before["stored_stages"]
    windows_stored = sum(name.startswith("pixel_sr.") for name in before["stored_stages"])
    processes.worker(env)
    resumed, _ = finished(base, killed["id"], processes)
    assert resumed["attempts"] == 2
    assert (
        resumed["resumed_from"]["stage"] == "pixel_sr" and resumed["resumed_from"]["window"] >= windows_stored
    )
    assert resumed["stage"] is None and resumed["progress"] == 1.0
    assert resumed["stored_stages"] == [
        "keyframes",
        "interpolation",
        "first_frame_sr",
        "pixel_sr.0",
        "pixel_sr.1",
        "pixel_sr.2",
        "pixel_sr.3",
        "frames",
    ]

    uninterrupted = post(base, RESUMABLE).json()
    clean, _ = finished(base, uninterrupted["id"], processes)
    assert clean["attempts"] == 1 and clean["resumed_from"] is None
    assert clean["params"] == resumed["params"]
    assert_same_video(base, env["SHOW1_LOCAL_STORAGE_DIR"], resumed, clean)


def test_a_draft_is_finished_into_the_full_video(
    processes: Processes, namespace: str, tiny_preset: Path, tmp_path: Path
) -> None:
    env = service_env(
        namespace, tiny_preset, tmp_path, SHOW1_API_KEYS=f"{KEY},{OTHER_KEY}", SHOW1_DEMO_DEFAULTS="1"
    )
    base = processes.api(env)
    processes.worker(env)
    queue = Queue(namespace, connection=redis.Redis.from_url(REDIS_URL))
    body = {"prompt": "a lighthouse at dusk", "seed": 7}

    draft = post(base, {**body, "draft": True}).json()
    assert draft["draft"] is True and draft["status"] == "queued"
    drafted, draft_seconds = finished(base, draft["id"], processes)
    keyframe_height, keyframe_width = drafted["params"]["keyframe_size"]
    assert drafted["result"]["draft"] is True and drafted["result"]["frames"] == 29
    assert (drafted["result"]["height"], drafted["result"]["width"]) == (keyframe_height, keyframe_width)
    assert drafted["stored_stages"] == ["keyframes", "interpolation"]
    assert frames_of(base, draft["id"]).shape == (29, keyframe_height, keyframe_width, 3)

    later = {"steps": {"sr1": 3}, "fps": 6}
    finish = post(base, {"draft_id": draft["id"], **later}).json()
    assert finish["draft_id"] == draft["id"] and finish["draft"] is False
    finished_job, finish_seconds = finished(base, finish["id"], processes)
    assert finished_job["resumed_from"] == {"stage": "first_frame_sr", "window": None}
    assert finished_job["result"]["draft"] is False and finished_job["result"]["fps"] == 6

    full = post(base, {**body, **later}).json()
    full_job, full_seconds = finished(base, full["id"], processes)
    assert full_job["params"] == finished_job["params"]
    assert_same_video(base, env["SHOW1_LOCAL_STORAGE_DIR"], finished_job, full_job)
    print(
        f"draft {draft_seconds:.2f} s, finish {finish_seconds:.2f} s, full {full_seconds:.2f} s: "
        f"draft / full = {draft_seconds / full_seconds:.2f}, draft + finish / full = "
        f"{(draft_seconds + finish_seconds) / full_seconds:.2f}"
    )

    # Refusals, each with nothing enqueued.
    depth = len(queue)
    refused = [
        (post(base, {"draft_id": draft["id"], "prompt": "another prompt"}), 422, ["body", "prompt"]),
        (post(base, {"draft_id": draft["id"], "seed": 8}), 422, ["body", "seed"]),
        (post(base, {"draft_id": draft["id"], "steps": {"base": 5}}), 422, ["body", "steps", "base"]),
        (
            post(base, {"draft_id": draft["id"], "keyframe_size": {"height": 32, "width": 48}}),
            422,
            ["body", "keyframe_size"],
        ),
        (post(base, {"draft_id": draft["id"], "draft": True}), 422, ["body", "draft"]),
        (post(base, {"draft_id": "0" * 32}), 404, "no draft"),
        (
            post(base, {"draft_id": draft["id"]}, headers={"Authorization": f"Bearer {OTHER_KEY}"}),
            404,
            "no draft",
        ),
        (post(base, {"draft_id": full["id"]}), 409, "not a draft"),
        (post(base, {"draft_id": "nothex"}), 422, ["body", "draft_id"]),
    ]
    for answer, code, detail in refused:
        assert answer.status_code == code, answer.text
        if isinstance(detail, list):
            assert answer.json()["detail"][0]["loc"] == detail, answer.text
        else:
            assert detail in answer.json()["detail"], answer.text
    # The same prompt, keyframes and seed as the draft's are not changes: accepted.
    same = post(base, {"draft_id": draft["id"], "prompt": body["prompt"], "seed": 7, "steps": {"base": 2}})
    assert same.status_code == 202, same.text
    assert httpx.delete(f"{base}/v1/videos/{same.json()['id']}", headers=AUTH).status_code == 200
    assert len(queue) == depth

    # Unfinished: a draft still queued behind the others.
    pending = post(base, {**body, "draft": True, "seed": 9, "steps": {"base": 150}}).json()
    unfinished = post(base, {"draft_id": pending["id"]})
    assert unfinished.status_code == 409, unfinished.text
    assert "queued" in unfinished.json()["detail"] or "running" in unfinished.json()["detail"]

    # Deleting a finished job removes its own stage outputs.
    assert list(Path(env["SHOW1_LOCAL_STORAGE_DIR"], "stages").glob(f"{full['id']}.*"))
    assert httpx.delete(f"{base}/openai/v1/videos/{full['id']}", headers=AUTH).status_code == 200
    assert not list(Path(env["SHOW1_LOCAL_STORAGE_DIR"], "stages").glob(f"{full['id']}.*"))

    # Expired: once the janitor's sweep passes the draft's time, finishing it is refused.
    settings = Settings(key_prefix=namespace, redis_url=REDIS_URL)
    store = JobStore(redis.Redis.from_url(REDIS_URL), namespace, settings.job_record_ttl_seconds)
    storage = LocalStorage(Path(env["SHOW1_LOCAL_STORAGE_DIR"]))
    metrics = httpx.get(f"{base}/metrics").text
    assert _gauge(metrics, "show1_stage_outputs") >= 2 + 6  # the draft's and its finishing job's
    swept = sweep_stage_outputs(store, storage, now=time.time() + settings.draft_ttl_seconds + 1)
    assert swept >= 2
    expired = post(base, {"draft_id": draft["id"]})
    assert expired.status_code == 409 and "expired" in expired.json()["detail"], expired.text
    assert not list(Path(env["SHOW1_LOCAL_STORAGE_DIR"], "stages").glob(f"{draft['id']}.*"))
    assert _gauge(httpx.get(f"{base}/metrics").text, "show1_stage_outputs") < _gauge(
        metrics, "show1_stage_outputs"
    )


def _gauge(metrics: str, name: str) -> float:
    (line,) = [line for line in metrics.splitlines() if line.startswith(f"{name} ")]
    return float(line.split()[1])


def test_the_openai_face_leaves_drafts_to_v1(
    processes: Processes, namespace: str, tiny_preset: Path, tmp_path: Path
) -> None:
    base = processes.api(service_env(namespace, tiny_preset, tmp_path))
    answer = httpx.post(
        f"{base}/openai/v1/videos", json={"prompt": "x", "model": "show-1", "draft": True}, timeout=10
    )
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "draft"
