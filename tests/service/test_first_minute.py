"""A new user's first minute: the README's example on `show1 up`, live progress as Server-Sent Events,
and progress and ETAs that can be trusted."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from models.video import encode_mp4
from tests.conftest import REPO, Processes, free_port, service_env, wait_for
from tests.service.test_end_to_end import poll_to_end

README = (REPO / "README.md").read_text()
# Enough pixel-SR steps that a job is still running when the test acts on it.
SLOW = {"steps": {"sr1": 30}}


def readme_example() -> dict:
    """The JSON body of the README's first `curl -X POST .../v1/videos` example."""
    match = re.search(r"curl -s -X POST localhost:8000/v1/videos [^\n]*\\\n\s*-d '(\{.*?\})'", README, re.S)
    assert match, "the README has no submit example"
    return json.loads(match[1])


def read_events(base: str, job_id: str, last_event_id: str | None = None, stop_after: int | None = None):
    """(event, id, data) of the job's stream, to its end or after `stop_after` events."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    events: list[tuple[str, str, dict]] = []
    frame: dict[str, str] = {}
    with httpx.stream("GET", f"{base}/v1/videos/{job_id}/events", headers=headers, timeout=60) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith(":"):
                continue
            if line:
                name, _, value = line.partition(":")
                frame[name] = value.removeprefix(" ")
                continue
            if "data" in frame:
                events.append((frame.get("event", "message"), frame.get("id", ""), json.loads(frame["data"])))
                if stop_after is not None and len(events) >= stop_after:
                    break
            frame = {}
    return events


def test_the_event_stream_follows_a_job_to_its_end_and_resumes(
    processes: Processes, namespace: str, tiny_preset: Path, tmp_path: Path
) -> None:
    env = service_env(namespace, tiny_preset, tmp_path, SHOW1_DEMO_DEFAULTS="1")
    base = processes.api(env)
    job = httpx.post(f"{base}/v1/videos", json={"prompt": "a fox"}).json()
    processes.worker(env)
    events = read_events(base, job["id"])

    names = [name for name, _, _ in events]
    assert names[0] == "snapshot" and names[-1] == "done", names
    assert {"status", "progress", "preview"} <= set(names), names
    final = events[-1][2]
    assert final["status"] == "succeeded" and final["result"]["frames"] == 29
    assert final["progress"] == 1.0
    progress = [data["progress"] for name, _, data in events if "progress" in data and name != "done"]
    assert progress == sorted(progress), "progress went backwards"
    assert all(value < 1.0 for value in progress), "progress reached 1 before the job succeeded"
    first_progress = next(data for name, _, data in events if name == "progress")
    assert first_progress["eta_seconds"] is not None, "no ETA on the first progress write"

    # Reconnect after the fifth event: exactly the events after it, in order.
    resumed = read_events(base, job["id"], last_event_id=events[4][1])
    assert [event_id for _, event_id, _ in resumed] == [event_id for _, event_id, _ in events[5:]]
    assert resumed[-1][0] == "done"
    bad = httpx.get(f"{base}/v1/videos/{job['id']}/events", headers={"Last-Event-ID": "x"}, timeout=5)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["header", "last-event-id"]


def test_a_canceled_job_ends_its_stream_with_the_cancel(
    processes: Processes, namespace: str, tiny_preset: Path, tmp_path: Path
) -> None:
    env = service_env(namespace, tiny_preset, tmp_path, SHOW1_DEMO_DEFAULTS="1")
    base = processes.api(env)
    processes.worker(env)
    job = httpx.post(f"{base}/v1/videos", json={"prompt": "a fox", **SLOW}).json()
    first = read_events(base, job["id"], stop_after=3)
    assert httpx.delete(f"{base}/v1/videos/{job['id']}", timeout=5).status_code == 200
    rest = read_events(base, job["id"], last_event_id=first[-1][1])
    assert rest[-1][0] == "done" and rest[-1][2]["status"] == "canceled"


def test_queued_jobs_get_a_position_and_an_eta(
    processes: Processes, namespace: str, tiny_preset: Path, tmp_path: Path
) -> None:
    env = service_env(namespace, tiny_preset, tmp_path, SHOW1_DEMO_DEFAULTS="1")
    base = processes.api(env)
    processes.worker(env)
    first = httpx.post(f"{base}/v1/videos", json={"prompt": "one"}).json()
    poll_to_end(base, first["id"])  # the worker has measured a job now
    jobs = [httpx.post(f"{base}/v1/videos", json={"prompt": "x", **SLOW}).json() for _ in range(3)]
    last = wait_for(
        lambda: (
            (view := httpx.get(f"{base}/v1/videos/{jobs[2]['id']}").json())["status"] == "queued"
            and view["eta_seconds"] is not None
            and view
        ),
        30,
        "an ETA for the last queued job",
    )
    second = httpx.get(f"{base}/v1/videos/{jobs[1]['id']}").json()
    assert last["queue_position"] >= 0
    if second["status"] == "queued":
        assert last["eta_seconds"] > second["eta_seconds"]


def readme_draft_example() -> str:
    """The README's draft example: the shell block after **Drafts.**"""
    return re.search(r"\*\*Drafts\.\*\*.*?```bash\n(.*?)```", README, re.S)[1]


def readme_own_frames_example() -> str:
    """The README's storyboard and upscale examples: the shell block after **Your own frames.**"""
    return re.search(r"\*\*Your own frames\.\*\*.*?```bash\n(.*?)```", README, re.S)[1]


def write_own_frames(folder: Path) -> list[str]:
    """The files the README's storyboard and upscale examples name, each in the format its name says."""
    names = re.findall(r"@([\w.]+)", readme_own_frames_example())
    rng = np.random.default_rng(0)
    for name in names:
        if name.endswith(".mp4"):
            (folder / name).write_bytes(encode_mp4(rng.integers(0, 256, (5, 32, 48, 3), np.uint8), fps=8))
        else:
            Image.fromarray(rng.integers(0, 256, (30, 40, 3), np.uint8)).save(folder / name)
    return names


def test_the_readme_example_finishes_within_a_minute_on_show1_up(tiny_preset: Path, tmp_path: Path) -> None:
    port = free_port()
    env = service_env("unused", tiny_preset, tmp_path)
    for name in ("SHOW1_KEY_PREFIX", "SHOW1_QUEUE_NAME", "SHOW1_MODELS_DIR", "SHOW1_LOCAL_STORAGE_DIR"):
        env.pop(name)
    env["SHOW1_KEY_PREFIX"] = env["SHOW1_QUEUE_NAME"] = f"readme{port}"  # apart from other show1 ups
    env["SHOW1_CACHE_DIR"] = str(tiny_preset.parent)
    env.pop("OMP_NUM_THREADS")  # as a user runs it
    log = tmp_path / "up.log"
    # Bound to every address, as in a container: the URLs the job reports must still be the client's.
    command = [sys.executable, "-m", "worker.cli", "up", "--host", "0.0.0.0", "--port", str(port)]
    env["SHOW1_DATA_DIR"] = str(tmp_path)
    # Started as a shell starts a background job: SIGINT ignored (`show1 up &`, then `kill -INT`).
    up = subprocess.Popen(
        command,
        env=env,
        cwd=REPO,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: b"Show-1 is up" in log.read_bytes(), 120, "show1 up to start")
        assert "Demo defaults" in log.read_text()
        started = time.monotonic()
        job = httpx.post(f"{base}/v1/videos", json=readme_example(), timeout=10).json()
        assert job["params"]["keyframe_size"] == [16, 24] and job["params"]["steps"]["sr1"] == 2
        url = f"{base}/v1/videos/{job['id']}"
        started_view = wait_for(
            lambda: (view := httpx.get(url).json())["status"] != "queued" and view, 60, "start", interval=0.05
        )
        if started_view["status"] == "running":
            assert started_view["eta_seconds"] is not None, started_view
        final, _ = poll_to_end(base, job["id"])
        seconds = time.monotonic() - started
        assert final["status"] == "succeeded", log.read_text()[-3000:]
        assert seconds < 60, f"the README example took {seconds:.0f} s"
        assert final["result"]["url"] == f"{url}/content" and final["preview_url"] == f"{url}/preview"
        assert httpx.get(final["result"]["url"], timeout=10).content[4:8] == b"ftyp"
        assert (tmp_path / "storage" / "videos").is_dir()  # SHOW1_DATA_DIR held the storage

        # The README's draft example, run as written (but on this port), where curl is installed.
        if shutil.which("curl") is None:
            return
        run = run_as_written(readme_draft_example(), port, tmp_path)
        finishing = json.loads(run.stdout)
        assert finishing["status"] == "queued" and finishing["draft_id"], finishing
        assert (tmp_path / "draft.mp4").stat().st_size > 0
        finished, _ = poll_to_end(base, finishing["id"])
        assert finished["status"] == "succeeded" and finished["resumed_from"]["stage"] == "first_frame_sr"

        # The storyboard and upscale examples, as written, with the files they name made here.
        assert write_own_frames(tmp_path) == ["first.png", "middle.jpg", "last.webp", "clip.mp4"]
        run = run_as_written(readme_own_frames_example(), port, tmp_path)
        decoder, answers, rest = json.JSONDecoder(), [], run.stdout.strip()
        while rest:  # curl -s prints each answer without a newline after it
            answer, end = decoder.raw_decode(rest)
            answers.append(answer)
            rest = rest[end:].lstrip()
        storyboard, upscale = answers
        assert storyboard["job_stages"][0] == "interpolation", storyboard
        assert [item["format"] for item in storyboard["inputs"]["keyframe_images"]] == ["PNG", "JPEG", "WEBP"]
        assert upscale["job_stages"] == ["latent_sr"], upscale
        assert upscale["inputs"]["input_video"]["frames"] == 5, upscale
        storyboard, _ = poll_to_end(base, storyboard["id"])
        upscale, _ = poll_to_end(base, upscale["id"])
        assert storyboard["status"] == "succeeded" and storyboard["result"]["frames"] == 9, storyboard
        assert upscale["status"] == "succeeded", upscale
        result = upscale["result"]
        assert (result["frames"], result["height"], result["width"]) == (5, 320, 576), result
    finally:
        up.send_signal(signal.SIGINT)
        stopping = time.monotonic()
        code = up.wait(timeout=40)
    stopped_in = time.monotonic() - stopping
    worker_lines = [line for line in log.read_text().splitlines() if "worker" in line][-12:]
    assert code == 0 and stopped_in < 15, (code, stopped_in, worker_lines)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{base}/healthz", timeout=2)  # the API it started is gone with it


def run_as_written(script: str, port: int, folder: Path) -> subprocess.CompletedProcess:
    """A README shell example, as written but for the port `show1 up` listens on."""
    run = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script.replace("localhost:8000", f"127.0.0.1:{port}")],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    return run
