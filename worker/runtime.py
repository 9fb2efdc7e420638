"""What a worker process holds for its whole life: the resident cascade and its connections."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

import redis

from app.jobs import JobStore, Keys
from app.memory import WorkerMemory
from app.settings import Settings
from app.storage import Storage, make_storage
from models.weights import CHECKPOINT_FOLDERS
from worker.reporting import Throughput, warm_up
from worker.webhooks import WebhookQueue

log = logging.getLogger("show1.worker")


@dataclass
class WorkerRuntime:
    settings: Settings
    redis: redis.Redis
    store: JobStore
    storage: Storage
    webhooks: WebhookQueue
    cascade: object  # models.Show1Cascade; typed loosely so this module imports without torch
    name: str
    memory: WorkerMemory
    throughput: Throughput = field(default_factory=Throughput)


_runtime: WorkerRuntime | None = None


def current() -> WorkerRuntime:
    if _runtime is None:
        raise RuntimeError("no worker runtime: jobs run inside `show1 worker`")
    return _runtime


def install(runtime: WorkerRuntime) -> None:
    global _runtime
    _runtime = runtime


def has_real_checkpoints(models_dir: Path | None) -> bool:
    return models_dir is not None and all((Path(models_dir) / name).is_dir() for name in CHECKPOINT_FOLDERS)


def models_dir_for(settings: Settings) -> Path:
    """The configured checkpoints, or with none configured the tiny random-weights preset, loudly.

    A configured folder is used as it is: when it is incomplete or broken, loading fails and the
    worker stops before taking a job, rather than serving the noise of the tiny preset.
    """
    if settings.models_dir is not None:
        return Path(settings.models_dir)
    from models.tiny import ensure_tiny_preset

    log.warning(
        "USING THE TINY RANDOM-WEIGHTS PRESET: videos will be noise. "
        "Run `show1 download-weights --dir DIR` and set SHOW1_MODELS_DIR=DIR for real videos."
    )
    return ensure_tiny_preset()


def load_runtime(settings: Settings) -> WorkerRuntime:
    import torch

    from models import Show1Cascade
    from models.chunking import WorkingMemory
    from worker.memory import detect_worker_memory

    dtype = getattr(torch, settings.dtype) if settings.dtype else None
    models_dir = models_dir_for(settings)
    log.info("loading the cascade from %s", models_dir)
    cascade = Show1Cascade.from_pretrained(
        models_dir,
        device=settings.device or None,
        dtype=dtype,
        memory_mode=settings.memory_mode,
        working_memory=WorkingMemory(settings.working_memory_mb * 2**20),
    )
    log.info("cascade resident on %s (%s, %s)", cascade.device, cascade.dtype, cascade.memory_mode)
    throughput = Throughput()
    log.info("warm-up run done in %.1fs", warm_up(cascade, throughput))
    memory = detect_worker_memory(cascade, settings)  # after the warm-up: its baseline is the loaded one
    connection = redis.Redis.from_url(settings.redis_url, socket_timeout=30, socket_connect_timeout=5)
    return WorkerRuntime(
        settings=settings,
        redis=connection,
        store=JobStore(connection, settings.key_prefix, settings.job_record_ttl_seconds),
        storage=make_storage(settings),
        webhooks=WebhookQueue(connection, Keys(settings.key_prefix)),
        cascade=cascade,
        memory=memory,
        throughput=throughput,
        name=f"{socket.gethostname()}-{os.getpid()}",
    )
