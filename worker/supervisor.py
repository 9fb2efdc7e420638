"""Child processes kept running, for `show1 worker --gpus` (one worker per GPU) and `show1 up` (Redis,
the API and a worker): the one place that decides when a process that exited is started again.

A child that exits is started again after a backoff (1, 2, 4 ... s, at most 30 s, and 1 s again once it
had run RESET_AFTER_SECONDS), so a job that kills its worker (the kernel's OOM killer, a SIGKILL) costs
a worker restart, never the service; the job counts that attempt and fails with `worker_lost` when its
attempts run out (worker/jobs.py::on_job_failure), so it cannot loop. Two exits are not restarted: a
worker that cannot load the checkpoints (EXIT_BAD_CHECKPOINTS: every restart would fail the same way)
stops the whole group, and with `burst` a worker that exits 0 has emptied the queue. Otherwise the
supervisor stops only on SIGTERM or SIGINT: it sends SIGTERM to its children (RQ's warm shutdown: the
job in hand finishes), group by group, and passes a second signal on to those still stopping (RQ's cold
shutdown, uvicorn's forced exit).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("show1.worker")

# sysexits' EX_CONFIG: the checkpoints cannot be loaded. Restarting would fail the same way.
EXIT_BAD_CHECKPOINTS = 78

FIRST_DELAY_SECONDS = 1.0
MAX_DELAY_SECONDS = 30.0
# A child that ran this long before it exited was healthy: its next restart waits the first delay again.
RESET_AFTER_SECONDS = 60.0
POLL_SECONDS = 0.5


@dataclass
class Backoff:
    """Restart delays of one child: doubled for each exit in a row, capped, reset by a long run."""

    first: float = FIRST_DELAY_SECONDS
    cap: float = MAX_DELAY_SECONDS
    reset_after: float = RESET_AFTER_SECONDS
    exits_in_a_row: int = 0

    def next_delay(self, ran_for: float) -> float:
        if ran_for >= self.reset_after:
            self.exits_in_a_row = 0
        delay = min(self.first * 2**self.exits_in_a_row, self.cap)
        self.exits_in_a_row += 1
        return delay


@dataclass
class Child:
    """One supervised process: how to start it, and when it last started or is due to start again."""

    name: str
    command: list[str]
    env: Mapping[str, str] | None
    popen_options: dict[str, Any]
    stop_order: int
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    backoff: Backoff = field(default_factory=Backoff)

    def start(self) -> None:
        self.process = subprocess.Popen(self.command, env=self.env, **self.popen_options)
        self.started_at, self.restart_at = time.monotonic(), None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with {code}"


class Supervisor:
    """Starts children, restarts those that exit (with backoff) and stops them all on a signal.

    `stop_timeout`: how long each stop group may take before it is killed (None: as long as its jobs
    take; an orchestrator's grace period bounds it)."""

    def __init__(self, *, stop_timeout: float | None = None) -> None:
        self.stop_timeout = stop_timeout
        self.children: list[Child] = []
        self._stop_signal: int | None = None
        self._stopping: list[Child] = []

    def start(
        self,
        name: str,
        command: list[str],
        env: Mapping[str, str] | None = None,
        *,
        stop_order: int = 0,
        **popen_options: Any,
    ) -> subprocess.Popen:
        """Start a child now; it stops in `stop_order` (lower first, equal ones together)."""
        child = Child(name, list(command), env, popen_options, stop_order)
        child.start()
        self.children.append(child)
        assert child.process is not None
        return child.process

    def exited(self) -> Child | None:
        """A child that is not running (start-up checks: nothing is restarted before `run`)."""
        return next((child for child in self.children if not child.running()), None)

    def run(self, *, burst: bool = False) -> int:
        """Keep the children running until SIGTERM or SIGINT (0), until every child of a `burst` group
        has exited 0 (0), or until a worker cannot load its checkpoints (EXIT_BAD_CHECKPOINTS)."""
        signal.signal(signal.SIGTERM, self._request_stop)
        signal.signal(signal.SIGINT, self._request_stop)
        while self._stop_signal is None:
            for child in list(self.children):
                code = self._tend(child, burst)
                if code is not None:
                    self.stop()
                    return code
            if not self.children:
                return 0
            time.sleep(POLL_SECONDS)
        self.stop()
        return 0

    def _tend(self, child: Child, burst: bool) -> int | None:
        """Restart `child` when it exited and its delay is over; an exit code when the group must stop."""
        now = time.monotonic()
        if child.restart_at is not None:
            if now >= child.restart_at:
                log.warning("restarting %s", child.name)
                child.start()
            return None
        assert child.process is not None
        code = child.process.poll()
        if code is None:
            return None
        if burst and code == 0:
            self.children.remove(child)
            return None
        if code == EXIT_BAD_CHECKPOINTS:
            log.error("%s cannot load the checkpoints; stopping every process", child.name)
            return code
        delay = child.backoff.next_delay(ran_for=now - child.started_at)
        log.warning("%s %s; restarting it in %.0f s", child.name, describe_exit(code), delay)
        child.restart_at = now + delay
        return None

    def _request_stop(self, signum: int, _frame: object) -> None:
        self._stop_signal = signum

    def _forward(self, signum: int, _frame: object) -> None:
        """A second signal while the children stop: passed on to those still stopping."""
        for child in self._stopping:
            if child.running():
                assert child.process is not None
                child.process.send_signal(signum)

    def stop(self) -> None:
        """SIGTERM to every running child, one stop group after another; a group still running after
        `stop_timeout` is killed. Children due for a restart are not started again."""
        signal.signal(signal.SIGTERM, self._forward)
        signal.signal(signal.SIGINT, self._forward)
        for order in sorted({child.stop_order for child in self.children}):
            group = [child for child in self.children if child.stop_order == order and child.running()]
            self._stopping = group
            for child in group:
                assert child.process is not None
                child.process.send_signal(signal.SIGTERM)
            deadline = None if self.stop_timeout is None else time.monotonic() + self.stop_timeout
            for child in group:
                assert child.process is not None
                left = None if deadline is None else max(deadline - time.monotonic(), 0.1)
                try:
                    child.process.wait(timeout=left)
                except subprocess.TimeoutExpired:
                    log.warning("%s did not stop in %.0f s; killing it", child.name, self.stop_timeout)
                    child.process.kill()
                    child.process.wait()
        self._stopping = []
        for child in self.children:
            child.restart_at = None


def visible_gpus(spec: str) -> list[str]:
    if spec != "all":
        return [gpu.strip() for gpu in spec.split(",") if gpu.strip()]
    import torch

    return [str(index) for index in range(torch.cuda.device_count())]


def supervise_gpu_workers(spec: str, *, burst: bool = False) -> int:
    """`show1 worker --gpus`: one resident worker process per GPU, restarted when it dies."""
    gpus = visible_gpus(spec)
    if not gpus:
        log.error("no GPUs visible for --gpus %s", spec)
        return 1
    command = [sys.executable, "-m", "worker.cli", "worker", *(["--burst"] if burst else [])]
    supervisor = Supervisor()
    for gpu in gpus:
        log.info("starting worker on GPU %s", gpu)
        supervisor.start(f"worker on GPU {gpu}", command, {**os.environ, "CUDA_VISIBLE_DEVICES": gpu})
    return supervisor.run(burst=burst)
