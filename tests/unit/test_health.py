"""`show1 healthcheck` finds its container's role from the main process's command line."""

from __future__ import annotations

import time
from pathlib import Path

from worker.health import UP, WORKER, api_address, main_process_command, problems, role_of, worker_problem


def test_the_role_is_the_show1_command_of_the_main_process(tmp_path: Path):
    cmdline = tmp_path / "cmdline"
    cmdline.write_bytes(b"/opt/venv/bin/python3\0/opt/venv/bin/show1\0worker\0--gpus\0all\0")
    assert role_of(main_process_command(cmdline)) == ("worker", ["--gpus", "all"])
    cmdline.write_bytes(b"/opt/venv/bin/python3\0/opt/venv/bin/show1\0up\0--host\x000.0.0.0\0--port=9000\0")
    role, arguments = role_of(main_process_command(cmdline))
    assert role == UP and api_address(arguments) == "http://127.0.0.1:9000"
    assert role_of(["show1", "download-weights", "--dir", "/models"]) == (None, [])
    assert main_process_command(tmp_path / "missing") == []
    assert problems(None, [], tmp_path / "alive", 10) == []  # nothing to check, e.g. download-weights


def test_the_api_address_follows_serve_options():
    assert api_address([]) == "http://127.0.0.1:8000"
    assert api_address(["--host", "0.0.0.0", "--port", "8001"]) == "http://127.0.0.1:8001"
    assert api_address(["--host=10.1.2.3"]) == "http://10.1.2.3:8000"
    assert api_address(["--host", "::1", "--port", "80"]) == "http://[::1]:80"


def test_a_worker_is_healthy_while_its_alive_file_is_fresh(tmp_path: Path):
    alive = tmp_path / "alive"
    assert "has not written" in worker_problem(alive, 10)
    alive.touch()
    assert worker_problem(alive, 10) is None
    assert "old" in worker_problem(alive, 10, now=time.time() + 121)
    assert worker_problem(alive, 20, now=time.time() + 121) is None  # 12 heartbeats of 20 s
    assert problems(WORKER, [], alive, 10) == []
