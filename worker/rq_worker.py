"""The RQ worker: models resident in the worker process, fast recovery of jobs whose worker died.

RQ's SimpleWorker runs jobs in its own process (a forked work horse could not keep CUDA models), but
it never heartbeats during a job, and its started-job entry lasts the job timeout + 60 s, so a
SIGKILLed worker's job would sit "running" for an hour. Here a thread keeps the heartbeat alive on a
short TTL while a job runs, and a janitor thread in every worker re-queues jobs whose worker went
silent (RQ's StartedJobRegistry.cleanup, which also calls our on_failure callback).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import redis
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.registry import StartedJobRegistry
from rq.timeouts import TimerDeathPenalty

from app.actions import settle_pending_admissions, sweep_stage_outputs
from app.egress import EgressPolicy
from app.estimates import announce_worker
from app.memory import remember as remember_worker_memory
from app.retention import sweep_expired_files
from app.settings import Settings
from worker import runtime
from worker.webhooks import WebhookSender

log = logging.getLogger("show1.worker")

# How often a worker's janitor heals the job store's indexes (JobStore.heal): a scan of the queued and
# in-flight jobs, so rare; what it heals (a record expired while active) is rare too.
HEAL_INTERVAL_SECONDS = 60.0


class Show1Worker(SimpleWorker):
    """`show1 worker`: loads the cascade once in bootstrap(), then runs video jobs in-process."""

    settings: Settings

    def bootstrap(self, *args: object, **kwargs: object) -> None:
        super().bootstrap(*args, **kwargs)
        if runtime._runtime is None:
            runtime.install(runtime.load_runtime(self.settings))
        rt = runtime.current()
        with contextlib.suppress(redis.RedisError):  # the heartbeat announces it too
            remember_worker_memory(rt.store, rt.memory)
        self._sender = WebhookSender(
            rt.webhooks,
            self.settings.webhook_secret,
            self.settings.webhook_timeout_seconds,
            self.settings.webhook_max_attempts,
            EgressPolicy.from_hosts(self.settings.webhook_allowed_hosts),
        )
        self._sender.start()
        self._healed_at = float("-inf")
        self._janitor = Janitor(
            self.queues, self.settings.heartbeat_seconds, self.settings.worker_alive_file, self._announce
        )
        self._janitor.start()
        self._report_gpu_memory()

    def _announce(self) -> None:
        """This worker's entry in the registry the API reads for queued jobs' ETAs; and, as any
        worker's janitor may, settle admissions an API process left pending when it died and, now and
        then, drop index entries of jobs whose record expired while active and delete the stage
        outputs whose time is up."""
        rt = runtime.current()
        announce_worker(rt.store, rt.name, rt.throughput.seconds_per_unit, rt.memory.to_dict())
        for queue in self.queues:
            if abandoned := settle_pending_admissions(rt.store, queue):
                log.warning("abandoned %d admissions left pending by a failed API process", abandoned)
        now = time.monotonic()
        if now - self._healed_at >= HEAL_INTERVAL_SECONDS:
            self._healed_at = now
            if dropped := rt.store.heal():
                log.warning("dropped %d index entries of jobs that ended or expired unseen", dropped)
            if expired := sweep_stage_outputs(rt.store, rt.storage):
                log.info("deleted %d expired stage outputs", expired)
            if expired := sweep_expired_files(rt.store, rt.storage, self.settings.job_record_ttl_seconds):
                log.info("deleted %d files of jobs whose record expired", expired)

    def get_heartbeat_ttl(self, job: Job) -> int:
        # Short: the heartbeat thread renews it; a dead worker's job is found within about 3 beats.
        return 3 * self.settings.heartbeat_seconds

    def execute_job(self, job: Job, queue: Queue) -> None:
        stop = threading.Event()
        beat = threading.Thread(target=self._beat, args=(job, stop), name="job-heartbeat", daemon=True)
        beat.start()
        try:
            super().execute_job(job, queue)
        finally:
            stop.set()
            beat.join()
            self._report_gpu_memory()

    def _beat(self, job: Job, stop: threading.Event) -> None:
        while not stop.wait(self.settings.heartbeat_seconds):
            try:
                self.maintain_heartbeats(job)
            except redis.RedisError as error:
                log.warning("heartbeat not sent: %s", error)

    def _report_gpu_memory(self) -> None:
        import torch

        if not torch.cuda.is_available():
            return
        key = runtime.current().store.keys.gpu_metrics(runtime.current().name)
        pipe = self.connection.pipeline()
        pipe.hset(
            key,
            mapping={
                "allocated": torch.cuda.memory_allocated(),
                "reserved": torch.cuda.memory_reserved(),
                "peak_allocated": torch.cuda.max_memory_allocated(),
            },
        )
        pipe.expire(key, 600)
        pipe.execute()


class Janitor(threading.Thread):
    """Re-queues (or fails) jobs of workers that stopped heartbeating, every few seconds, and touches
    the alive file that a liveness probe checks."""

    def __init__(
        self, queues: list[Queue], interval: float, alive_file: Path, announce: Callable[[], None]
    ) -> None:
        super().__init__(name="janitor", daemon=True)
        self.queues, self.interval, self.alive_file = queues, interval, alive_file
        self.announce = announce
        self.stopped = threading.Event()

    def run(self) -> None:
        self._announce()
        while not self.stopped.wait(self.interval):
            with contextlib.suppress(OSError):
                self.alive_file.touch()
            self._announce()
            for queue in self.queues:
                try:
                    # cleanup() runs failure callbacks under a timeout; SIGALRM works in the main thread only.
                    StartedJobRegistry(queue=queue, death_penalty_class=TimerDeathPenalty).cleanup()
                except redis.RedisError as error:
                    log.warning("janitor cannot reach Redis: %s", error)
                except Exception:
                    log.exception("janitor failed on %s", queue.name)

    def _announce(self) -> None:
        try:
            self.announce()
        except redis.RedisError as error:
            log.warning("worker not announced: %s", error)


def run_worker(settings: Settings, *, burst: bool = False) -> bool:
    """Load the cascade, then work the queue until stopped (or until empty with `burst`)."""
    connection = redis.Redis.from_url(settings.redis_url)
    queue = Queue(settings.queue_name, connection=connection)
    worker = Show1Worker([queue], connection=connection)
    worker.settings = settings
    return worker.work(burst=burst, logging_level=settings.log_level.upper(), with_scheduler=False)
