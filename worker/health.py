"""`show1 healthcheck`: one health check for every role the image runs (the Dockerfile's HEALTHCHECK).

A container runs one command, so its role is its main process's command line (`show1 serve`, `show1
worker`, `show1 up`; /proc/1/cmdline in a container): the API is healthy when its /healthz answers, a
worker when its alive file (touched every heartbeat once the cascade is loaded, worker/rq_worker.py) is
fresh, `up` when both are. Kubernetes and compose name the role instead (`--role worker`).
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

API, WORKER, UP = "serve", "worker", "up"
ROLES = (API, WORKER, UP)
# An alive file older than this many heartbeats: the worker is stuck or gone.
STALE_AFTER_HEARTBEATS = 12
_ANY_ADDRESS = ("0.0.0.0", "::", "")


def role_of(command_line: list[str]) -> tuple[str | None, list[str]]:
    """The `show1` command in a process's arguments and the arguments after it; (None, []) if none."""
    for index, argument in enumerate(command_line):
        if argument in ROLES:
            return argument, command_line[index + 1 :]
    return None, []


def main_process_command(path: Path = Path("/proc/1/cmdline")) -> list[str]:
    try:
        raw = path.read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def api_address(arguments: list[str]) -> str:
    """Where the API that `show1 serve|up ARGUMENTS` started answers, from inside its container."""
    host, port = "127.0.0.1", "8000"
    for index, argument in enumerate(arguments):
        name, _, value = argument.partition("=")
        if name in ("--host", "--port") and not value and index + 1 < len(arguments):
            value = arguments[index + 1]
        if name == "--port" and value:
            port = value
        elif name == "--host" and value and value not in _ANY_ADDRESS:
            host = value
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def api_problem(base_url: str, timeout: float = 3.0) -> str | None:
    try:
        answer = httpx.get(f"{base_url}/healthz", timeout=timeout)
    except httpx.HTTPError as error:
        return f"the API at {base_url} does not answer: {error}"
    if answer.status_code != 200:
        return f"the API at {base_url} answers /healthz with {answer.status_code}"
    return None


def worker_problem(alive_file: Path, heartbeat_seconds: float, now: float | None = None) -> str | None:
    limit = STALE_AFTER_HEARTBEATS * heartbeat_seconds
    try:
        age = (time.time() if now is None else now) - alive_file.stat().st_mtime
    except OSError:
        return f"the worker has not written {alive_file} yet (still loading the cascade?)"
    if age > limit:
        return f"the worker's alive file {alive_file} is {age:.0f} s old (more than {limit:.0f} s)"
    return None


def problems(role: str | None, arguments: list[str], alive_file: Path, heartbeat_seconds: float) -> list[str]:
    """What is wrong with a container of `role` started with `arguments`; empty when it is healthy."""
    found = []
    if role in (API, UP):
        found.append(api_problem(api_address(arguments)))
    if role in (WORKER, UP):
        found.append(worker_problem(alive_file, heartbeat_seconds))
    return [problem for problem in found if problem]
