"""What this worker may hold: detected at start, announced with every heartbeat (app/memory.py)."""

from __future__ import annotations

import logging
import resource
from pathlib import Path

from app.memory import GB, WorkerMemory
from app.settings import Settings

log = logging.getLogger("show1.worker")

# Kept free of the estimate's reach: allocator fragmentation and the estimate's own error (within 25 %
# of measurement at the calibrated sizes, bench/results/*-memory-cpu.md) spread over a whole job.
RESERVE = 0.1
_CGROUP = Path("/sys/fs/cgroup")


def detect_worker_memory(cascade: object, settings: Settings) -> WorkerMemory:
    """This worker's `WorkerMemory`: its models' profile and the bytes an estimate may reach here."""
    import torch

    device: torch.device = cascade.device  # type: ignore[attr-defined]
    configured = int(settings.worker_memory_gb * GB) if settings.worker_memory_gb else None
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        # Device memory estimates count the weights, which are already allocated here.
        total = configured or free + torch.cuda.memory_allocated(device)
        budget = int(total * (1 - RESERVE))
    else:
        # A CPU estimate is what a job adds to the loaded process.
        held = resident_bytes()
        total = configured or available_ram() + held
        budget = int(total * (1 - RESERVE)) - held
    memory = WorkerMemory(max(budget, 0), cascade.memory_mode, cascade.memory_profile())  # type: ignore[attr-defined]
    source = "configured" if configured else "detected"
    log.info("memory for jobs: %.2f GB (%s %.2f GB in all)", memory.budget_bytes / GB, source, total / GB)
    return memory


def resident_bytes() -> int:
    """This process's resident memory, as the kernel counts it."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def peak_resident_bytes() -> int:
    """The most this process has had resident since it started (VmHWM). Not `ru_maxrss`: Linux carries
    that across fork and exec, so a child of a large process would report its parent's size."""
    return _proc_kilobytes(Path("/proc/self/status"), "VmHWM")


def available_ram() -> int:
    """RAM this process could still take: the kernel's MemAvailable, within the cgroup's limit."""
    available = _proc_kilobytes(Path("/proc/meminfo"), "MemAvailable")
    limit, current = _read_int(_CGROUP / "memory.max"), _read_int(_CGROUP / "memory.current")
    if limit is not None and current is not None:
        available = min(available, max(limit - current, 0))
    return available


def _proc_kilobytes(path: Path, field: str) -> int:
    """A `Field:  N kB` line of a /proc file, in bytes."""
    for line in path.read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{path} has no {field}")


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max": no limit
