"""The whole service as users run it: API under uvicorn, a real worker process, Redis, S3 over HTTP."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
from pathlib import Path

import av
import boto3
import httpx
import pytest

from app.storage import preview_key, record_key
from tests.conftest import FAST_REQUEST, REPO, Processes, free_port, s3_env, service_env, wait_for

STAGE_ORDER = ["keyframes", "interpolation", "first_frame_sr", "pixel_sr", "latent_sr", "encoding"]


def poll_to_end(base: str, job_id: str, timeout: float = 240) -> tuple[dict, list[dict]]:
    """Poll until the job ends; returns the final job and every distinct state seen."""
    seen: list[dict] = []

    def finished() -> dict | None:
        response = httpx.get(f"{base}/v1/videos/{job_id}", timeout=5)
        assert response.status_code == 200, response.text
        job = response.json()
        if not seen or (job["stage"], job["progress"], job["status"]) != (
            seen[-1]["stage"],
            seen[-1]["progress"],
            seen[-1]["status"],
        ):
            seen.append(job)
        return job if job["status"] in ("succeeded", "failed", "canceled") else None

    return wait_for(finished, timeout, f"job {job_id} to finish", interval=0.1), seen


def decode(data: bytes) -> tuple[int, int, int]:
    with av.open(io.BytesIO(data)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    height, width, _ = frames[0].shape
    return len(frames), height, width


def assert_progress_rose_through_stages(seen: list[dict]) -> None:
    running = [job for job in seen if job["status"] == "running" and job["stage"]]
    assert running, "never saw the job running"
    stages = [job["stage"] for job in running]
    order = [STAGE_ORDER.index(stage) for stage in stages]
    assert order == sorted(order), f"stages went backwards: {stages}"
    assert len(set(stages)) >= 3, f"too few stages observed: {stages}"
    progress = [job["progress"] for job in running]
    assert progress == sorted(progress), f"progress fell: {progress}"


def submit(base: str, **extra: object) -> dict:
    response = httpx.post(f"{base}/v1/videos", json={"prompt": "a red fox in snow", **FAST_REQUEST, **extra})
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/v1/videos/{response.json()['id']}"
    return response.json()


def test_s3_end_to_end(
    processes: Processes, namespace: str, tiny_preset: Path, tmp_path: Path, s3_server: str
):
    env = service_env(namespace, tiny_preset, tmp_path, **s3_env(s3_server))
    base = processes.api(env)
    processes.worker(env)

    job = submit(base, seed=7)
    final, seen = poll_to_end(base, job["id"])
    assert final["status"] == "succeeded", processes.logs()
    assert_progress_rose_through_stages(seen)
    assert any(state["preview_url"] for state in seen if state["status"] == "running"), (
        "no preview while running"
    )

    result = final["result"]
    assert result["url"].startswith(s3_server) and "X-Amz-Signature" in result["url"]
    video = httpx.get(result["url"], timeout=10)
    assert video.status_code == 200
    assert decode(video.content) == (29, 64, 112)
    assert (result["frames"], result["height"], result["width"], result["bytes"]) == (
        29,
        64,
        112,
        len(video.content),
    )

    redirect = httpx.get(f"{base}/v1/videos/{job['id']}/content")
    assert redirect.status_code == 302 and redirect.headers["location"].startswith(s3_server)

    s3 = boto3.client("s3", endpoint_url=s3_server, aws_access_key_id="t", aws_secret_access_key="t")
    attempt = final["attempts"]  # each attempt writes its own files; the one that published is the job's
    key = record_key(job["id"], attempt)
    record = json.loads(s3.get_object(Bucket="videos", Key=key)["Body"].read())
    assert record["params"]["seed"] == 7
    assert set(record["timings"]) >= {"keyframes", "pixel_sr", "latent_sr", "total"}
    assert set(record["models"]) == {
        "show-1-base",
        "show-1-interpolation",
        "IF-II-L-v1.0",
        "show-1-sr1",
        "show-1-sr2",
    }
    preview = s3.get_object(Bucket="videos", Key=preview_key(job["id"], attempt))["Body"].read()
    assert preview.startswith(b"\x89PNG")


def test_local_storage_end_to_end(processes: Processes, namespace: str, tiny_preset: Path, tmp_path: Path):
    env = service_env(namespace, tiny_preset, tmp_path)
    base = processes.api(env)
    processes.worker(env)

    job = submit(base, num_keyframes=3)
    final, _ = poll_to_end(base, job["id"])
    assert final["status"] == "succeeded", processes.logs()
    assert isinstance(final["params"]["seed"], int)
    content = httpx.get(final["result"]["url"], timeout=10)
    assert content.headers["content-type"] == "video/mp4"
    assert decode(content.content) == (9, 64, 112)
    preview = httpx.get(f"{base}/v1/videos/{job['id']}/preview")
    assert preview.status_code == 200 and preview.content.startswith(b"\x89PNG")


def test_show1_up_serves_and_stops_everything(tiny_preset: Path, tmp_path: Path):
    port, dead_redis_port = free_port(), free_port()
    env = service_env("unused", tiny_preset, tmp_path)
    for name in ("SHOW1_KEY_PREFIX", "SHOW1_QUEUE_NAME", "SHOW1_MODELS_DIR", "SHOW1_LOCAL_STORAGE_DIR"):
        env.pop(name)
    # Nothing answers here, so `up` must start its own redis-server.
    env["SHOW1_REDIS_URL"] = f"redis://127.0.0.1:{dead_redis_port}/0"
    env["SHOW1_CACHE_DIR"] = str(tiny_preset.parent)
    log = open(tmp_path / "up.log", "wb")  # noqa: SIM115
    up = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "up", "--port", str(port), "--data-dir", str(tmp_path / "var")],
        env=env,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: b"Show-1 is up" in (tmp_path / "up.log").read_bytes(), 90, "show1 up to start")
        output = (tmp_path / "up.log").read_text()
        assert "TINY RANDOM-WEIGHTS" in output and "embedded redis-server" in output
        assert f"curl -s -X POST {base}/v1/videos" in output
        job = submit(base)
        final, _ = poll_to_end(base, job["id"])
        assert final["status"] == "succeeded", (tmp_path / "up.log").read_text()[-3000:]
        assert decode(httpx.get(f"{base}/v1/videos/{job['id']}/content", timeout=10).content)[0] == 29
    finally:
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=40) == 0
    children = subprocess.run(
        ["pgrep", "-f", f"--port {port}|:{dead_redis_port}|--port {dead_redis_port}"],
        capture_output=True,
        text=True,
    )
    assert children.stdout.strip() == "", f"processes left running: {children.stdout}"
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{base}/healthz", timeout=2)
