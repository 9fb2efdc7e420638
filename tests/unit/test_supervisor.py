"""The restart rule shared by `show1 up` and `show1 worker --gpus` (worker/supervisor.py), on real
child processes."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from worker.supervisor import EXIT_BAD_CHECKPOINTS, Backoff, Supervisor


@pytest.fixture(autouse=True)
def restore_signal_handlers() -> Iterator[None]:
    """Supervisor.run takes SIGTERM and SIGINT for itself; give them back to pytest afterwards."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def test_backoff_doubles_up_to_its_cap_and_starts_over_after_a_long_run() -> None:
    backoff = Backoff()
    assert [backoff.next_delay(ran_for=2.0) for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff.next_delay(ran_for=backoff.reset_after) == 1
    assert backoff.next_delay(ran_for=0.5) == 2


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_child_that_exits_is_started_again_until_the_supervisor_is_told_to_stop(tmp_path: Path) -> None:
    starts, stopped = tmp_path / "starts", tmp_path / "stopped"
    supervisor = Supervisor(stop_timeout=10)
    # Exits at once, each time: restarted after 1 s, then 2 s.
    supervisor.start("crasher", python(f"open({str(starts)!r}, 'a').write('x'); raise SystemExit(3)"))
    # Runs until told to stop, and says it was told.
    on_term = f"lambda *_: open({str(stopped)!r}, 'w').close() or exit(0)"
    stays = f"import signal, time; signal.signal(15, {on_term}); time.sleep(60)"
    long_lived = supervisor.start("long-lived", python(stays))
    threading.Timer(5.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
    began = time.monotonic()
    assert supervisor.run() == 0
    assert 5.5 <= time.monotonic() - began < 12
    assert starts.read_text() == "xxx"  # at 0, after 1 s, after 2 more s (the next would be 4 s later)
    assert long_lived.returncode == 0 and stopped.exists()


def test_a_worker_that_cannot_load_its_checkpoints_stops_the_group_without_a_restart() -> None:
    supervisor = Supervisor(stop_timeout=10)
    bad_checkpoints = f"import time; time.sleep(0.5); raise SystemExit({EXIT_BAD_CHECKPOINTS})"
    broken = supervisor.start("worker on GPU 0", python(bad_checkpoints))
    other = supervisor.start("worker on GPU 1", python("import time; time.sleep(60)"))
    assert supervisor.run() == EXIT_BAD_CHECKPOINTS
    assert broken.returncode == EXIT_BAD_CHECKPOINTS
    assert other.returncode == -signal.SIGTERM


def test_burst_workers_that_emptied_the_queue_are_not_restarted() -> None:
    supervisor = Supervisor()
    done = supervisor.start("worker on GPU 0", python("raise SystemExit(0)"))
    assert supervisor.run(burst=True) == 0
    assert done.returncode == 0 and supervisor.children == []
