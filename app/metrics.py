"""Prometheus metrics.

HTTP metrics are counted in the API process. Job, queue and worker metrics are read from Redis at
scrape time: workers write stage durations and GPU memory there (see `worker.reporting`), so one
scrape of any API replica shows the whole fleet without scraping GPU pods.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from app.jobs import ACTIVE

if TYPE_CHECKING:
    from app.deps import Services

REGISTRY = CollectorRegistry()
HTTP_REQUESTS = Counter(
    "show1_http_requests",
    "HTTP requests by route and status.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_LATENCY = Histogram(
    "show1_http_request_seconds", "HTTP request latency.", ["method", "route"], registry=REGISTRY
)
JOBS_SUBMITTED = Counter(
    "show1_jobs_submitted", "Video jobs accepted by this API process.", registry=REGISTRY
)


class FleetCollector:
    """Reads the shared state in Redis on every scrape."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def collect(self):  # noqa: ANN201 - prometheus_client's collector protocol
        store = self.services.store
        counts = store.status_counts()
        active = GaugeMetricFamily("show1_jobs", "Jobs now queued or running.", labels=["status"])
        finished = CounterMetricFamily("show1_jobs_finished", "Jobs finished, by status.", labels=["status"])
        for status, value in counts.items():
            (active if status in ACTIVE else finished).add_metric([status], value)
        yield active
        yield finished
        yield GaugeMetricFamily(
            "show1_queue_depth", "Jobs waiting in the RQ queue.", value=len(self.services.queue)
        )
        stored, stored_bytes = store.stage_output_totals()
        yield GaugeMetricFamily(
            "show1_stage_outputs", "Stage outputs kept in storage (resume points, drafts).", value=stored
        )
        yield GaugeMetricFamily(
            "show1_stage_output_bytes", "Bytes of the stage outputs kept in storage.", value=stored_bytes
        )
        yield CounterMetricFamily(
            "show1_work_computed",
            "Cost units (PFLOP of the full-size models, models/cost.py) the workers computed, re-done "
            "work after faults included.",
            value=store.work(),
        )

        seconds = CounterMetricFamily(
            "show1_stage_seconds", "Seconds spent per cascade stage.", labels=["stage"]
        )
        runs = CounterMetricFamily("show1_stage_runs", "Cascade stage runs completed.", labels=["stage"])
        for key in self.services.redis.scan_iter(match=store.keys.stage_metrics("*")):
            stage = key.decode().rsplit(":", 1)[-1]
            values = self.services.redis.hgetall(key)
            seconds.add_metric([stage], float(values.get(b"seconds", 0)))
            runs.add_metric([stage], float(values.get(b"count", 0)))
        yield seconds
        yield runs

        gpu = GaugeMetricFamily(
            "show1_worker_gpu_memory_bytes", "GPU memory per worker.", labels=["worker", "kind"]
        )
        for key in self.services.redis.scan_iter(match=store.keys.gpu_metrics("*")):
            worker = key.decode().split(":gpu:", 1)[-1]
            for kind, value in self.services.redis.hgetall(key).items():
                gpu.add_metric([worker, kind.decode()], float(value))
        yield gpu


def render(services: Services) -> tuple[bytes, str]:
    registry = CollectorRegistry()
    registry.register(FleetCollector(services))
    return generate_latest(REGISTRY) + generate_latest(registry), CONTENT_TYPE_LATEST
