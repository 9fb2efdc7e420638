"""A dead worker does not take the service down, and a job that kills workers does not loop
(worker/supervisor.py, worker/jobs.py::on_job_failure); a job that runs out of memory inside a stage
fails once, and the same worker goes on (worker/jobs.py::release_memory)."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
import redis

from app.jobs import JobStore, Keys
from tests.conftest import REDIS_URL, REPO, Processes, free_port, service_env, wait_for
from tests.service.test_end_to_end import poll_to_end, submit

# Address space a worker may add to what it holds once loaded: plenty for a small job, too little for
# keyframes of 512x896, whose base UNet's first-level activations are 940 MB each (2 guidance branches x
# 8 frames x 32 channels x 512 x 896 in float32), however the attention in it is chunked. Their cost is
# within SHOW1_MAX_JOB_COST at 2 steps per stage.
HEADROOM_BYTES = 1 << 30
TOO_LARGE_FOR_THE_HEADROOM = {"keyframe_size": {"height": 512, "width": 896}}


def proc_status(pid: int, field: str) -> int:
    """A /proc/<pid>/status size (VmSize, VmRSS) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for process {pid}")


def worker_name(pid: int) -> str:
    """The name a worker gives itself (worker/runtime.py::load_runtime) and records on its attempts."""
    return f"{socket.gethostname()}-{pid}"


def test_out_of_memory_in_a_stage_fails_that_job_once_and_the_worker_takes_the_next(
    processes: Processes, namespace: str, tiny_preset: Path, tmp_path: Path
) -> None:
    """A real allocation failure, not a simulated one: the loaded worker's address space is capped
    (RLIMIT_AS, set on the running process) so that torch's CPU allocator refuses the keyframe stage of
    a large request, as a machine without that memory would."""
    # Few malloc arenas: the address space then grows with the allocations, not with the threads. The
    # worker claims far more memory than the cap leaves it (as a misconfigured one would), so that
    # admission by memory lets the job reach the allocator.
    env = service_env(
        namespace,
        tiny_preset,
        tmp_path,
        SHOW1_JOB_RETRIES="2",
        MALLOC_ARENA_MAX="2",
        SHOW1_WORKER_MEMORY_GB="1000",
    )
    base = processes.api(env)
    worker = processes.worker(env)
    workers = redis.Redis.from_url(REDIS_URL)
    name = worker_name(worker.pid)
    # Announced once the cascade is loaded and warmed up: what the worker holds for good.
    wait_for(lambda: workers.hexists(Keys(namespace).workers(), name), 120, "the worker to load the cascade")
    loaded = proc_status(worker.pid, "VmRSS")
    _, hard = resource.prlimit(worker.pid, resource.RLIMIT_AS)
    cap = proc_status(worker.pid, "VmSize") + HEADROOM_BYTES
    resource.prlimit(worker.pid, resource.RLIMIT_AS, (cap, hard))

    large = submit(base, seed=1, **TOO_LARGE_FOR_THE_HEADROOM)
    failed, _ = poll_to_end(base, large["id"])
    assert failed["status"] == "failed" and failed["attempts"] == 1, processes.logs()
    assert failed["error"]["code"] == "resource_exhausted", failed["error"]
    assert failed["stage"] == "keyframes"
    assert "can't allocate memory" in processes.logs()
    # What the stage held is handed back (the next job runs under the same cap, too).
    assert proc_status(worker.pid, "VmRSS") < loaded + (256 << 20)

    after, _ = poll_to_end(base, submit(base, seed=2)["id"])
    assert after["status"] == "succeeded", processes.logs()
    assert worker.poll() is None, "the worker died"
    assert after["attempts"] == 1
    assert poll_to_end(base, large["id"])[0]["attempts"] == 1, "the failed job was retried"
    store_record = workers.hget(Keys(namespace).record(after["id"]), "worker")
    assert store_record is not None and name in store_record.decode(), "another worker ran the next job"


class ApiWatch(threading.Thread):
    """Asks the API for /healthz and for one job every 0.2 s; notes every request that failed."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.base, self.job_id = base, ""
        self.answered, self.failures = 0, []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.2):
            paths = ["/healthz", *([f"/v1/videos/{self.job_id}"] if self.job_id else [])]
            for path in paths:
                try:
                    status = httpx.get(f"{self.base}{path}", timeout=5).status_code
                except httpx.HTTPError as error:
                    self.failures.append(f"{path}: {error!r}")
                    continue
                if status == 200:
                    self.answered += 1
                else:
                    self.failures.append(f"{path}: {status}")


def kill_worker_of_attempt(store: JobStore, job_id: str, attempt: int, killed: list[int]) -> None:
    """SIGKILL the worker running `attempt` of the job once it is inside a stage, as the kernel's OOM
    killer would."""

    def running_attempt() -> int | None:
        record = store.get(job_id)
        running = record and record.status == "running" and record["attempts"] == attempt and record["stage"]
        return int(record["worker"].rsplit("-", 1)[1]) if running else None

    pid = wait_for(running_attempt, 120, f"attempt {attempt} of job {job_id} to run", interval=0.05)
    assert pid not in killed, "the killed worker ran the job again"
    os.kill(pid, signal.SIGKILL)
    killed.append(pid)


@pytest.mark.slow
def test_show1_up_outlives_killed_workers_and_a_job_that_kills_every_worker_fails_as_worker_lost(
    namespace: str, tiny_preset: Path, tmp_path: Path
) -> None:
    port = free_port()
    # 2 attempts per job; each from the start (no stored stage outputs to resume from), so that every
    # attempt is still running when the test kills its worker.
    env = service_env(namespace, tiny_preset, tmp_path, SHOW1_JOB_RETRIES="1", SHOW1_STAGE_OUTPUTS="false")
    env.pop("SHOW1_MODELS_DIR")  # `show1 up` chooses: the tiny preset, found in the cache
    env["SHOW1_CACHE_DIR"] = str(tiny_preset.parent)
    log = tmp_path / "up.log"
    command = [sys.executable, "-m", "worker.cli", "up", "--port", str(port), "--data-dir", str(tmp_path)]
    up = subprocess.Popen(command, env=env, cwd=REPO, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    store = JobStore(redis.Redis.from_url(REDIS_URL), namespace, 3600)
    watch = ApiWatch(base)
    killed: list[int] = []
    try:
        wait_for(lambda: b"Show-1 is up" in log.read_bytes(), 120, "show1 up to start")
        watch.start()

        # Killed once: a new worker process runs the job's second attempt to the end.
        once = submit(base)
        watch.job_id = once["id"]
        kill_worker_of_attempt(store, once["id"], 1, killed)
        final, _ = poll_to_end(base, once["id"])
        assert final["status"] == "succeeded" and final["attempts"] == 2, log.read_text()[-3000:]
        assert store.get(once["id"])["worker"] != f"{socket.gethostname()}-{killed[0]}"

        # Killed on every attempt: the job fails, saying its worker was lost, instead of looping.
        doomed = submit(base)
        watch.job_id = doomed["id"]
        for attempt in (1, 2):
            kill_worker_of_attempt(store, doomed["id"], attempt, killed)
        final, _ = poll_to_end(base, doomed["id"])
        assert final["status"] == "failed" and final["attempts"] == 2, log.read_text()[-3000:]
        assert final["error"]["code"] == "worker_lost"
        assert "worker process was lost" in final["error"]["message"]
        assert "no attempt is left (2 made)" in final["error"]["message"]

        # And a worker is back for the next job.
        wait_for(lambda: live_workers(store, killed), 120, "a restarted worker")
        assert up.poll() is None
    finally:
        watch.done.set()
        if watch.is_alive():
            watch.join()  # its last requests answered before the API is told to stop
        up.send_signal(signal.SIGTERM)
        try:
            code = up.wait(timeout=40)
        finally:
            if up.poll() is None:
                up.kill()
    assert code == 0, log.read_text()[-3000:]
    assert watch.failures == [], watch.failures[:5]  # the API answered all along
    assert watch.answered > 50
    assert log.read_text().count("restarting it in") == 3


def live_workers(store: JobStore, killed: list[int]) -> list[int]:
    """Pids of the announced workers that are alive and were not killed."""
    pids = [int(name.decode().rsplit("-", 1)[1]) for name in store.redis.hkeys(store.keys.workers())]
    return [pid for pid in pids if pid not in killed and Path(f"/proc/{pid}").exists()]
