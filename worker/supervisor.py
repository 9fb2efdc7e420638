"""`show1 worker --gpus`: one resident worker process per GPU, restarted if it dies."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

log = logging.getLogger("show1.worker")

# sysexits' EX_CONFIG: the checkpoints cannot be loaded. Restarting would fail the same way.
EXIT_BAD_CHECKPOINTS = 78


def visible_gpus(spec: str) -> list[str]:
    if spec != "all":
        return [gpu.strip() for gpu in spec.split(",") if gpu.strip()]
    import torch

    return [str(index) for index in range(torch.cuda.device_count())]


def supervise_gpu_workers(spec: str, *, burst: bool = False) -> int:
    gpus = visible_gpus(spec)
    if not gpus:
        log.error("no GPUs visible for --gpus %s", spec)
        return 1
    command = [sys.executable, "-m", "worker.cli", "worker", *(["--burst"] if burst else [])]

    def start(gpu: str) -> subprocess.Popen:
        log.info("starting worker on GPU %s", gpu)
        return subprocess.Popen(command, env={**os.environ, "CUDA_VISIBLE_DEVICES": gpu})

    workers = {gpu: start(gpu) for gpu in gpus}
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for process in workers.values():
            if process.poll() is None:
                process.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while True:
        for gpu, process in list(workers.items()):
            code = process.poll()
            if code is None:
                continue
            if stopping or (burst and code == 0):
                del workers[gpu]
            elif code == EXIT_BAD_CHECKPOINTS:
                log.error("worker on GPU %s cannot load the checkpoints; stopping every worker", gpu)
                forward(signal.SIGTERM, None)
                for other in workers.values():
                    other.wait()
                return code
            else:
                log.warning("worker on GPU %s exited with %s; restarting", gpu, code)
                workers[gpu] = start(gpu)
        if not workers:
            return 0
        time.sleep(1)
