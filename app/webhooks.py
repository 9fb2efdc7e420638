"""The webhook outbox: events about jobs, queued in Redis for the workers' senders (worker/webhooks.py).

Both the API (a queued job canceled) and the workers (a job started, ended) put events here; what a
receiver gets depends on the face that made the job: our job object under `/v1`, OpenAI's video event
under `/openai/v1`. A delivery's id is the `webhook-id` of every attempt, so receivers deduplicate.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

import redis

from app.jobs import JobRecord, JobStore, Keys
from app.openai_translate import video_event
from app.storage import Storage
from app.views import render_job

log = logging.getLogger("show1.webhooks")

DELIVERY_TTL_SECONDS = 7 * 24 * 3600


class WebhookOutbox:
    def __init__(self, connection: redis.Redis, keys: Keys) -> None:
        self.redis = connection
        self.keys = keys
        self.due_key = keys.webhooks_due()

    def delivery_key(self, delivery_id: str) -> str:
        return self.keys.webhook(delivery_id)

    def schedule(self, url: str, payload: dict[str, Any]) -> str:
        """Queue one event for delivery; its id is the `webhook-id` of every attempt."""
        delivery_id = f"msg_{uuid.uuid4().hex}"
        body = json.dumps(payload, separators=(",", ":"))
        pipe = self.redis.pipeline()
        pipe.hset(self.delivery_key(delivery_id), mapping={"url": url, "body": body, "attempts": 0})
        pipe.expire(self.delivery_key(delivery_id), DELIVERY_TTL_SECONDS)
        pipe.zadd(self.due_key, {delivery_id: time.time()})
        pipe.execute()
        return delivery_id


def notify(
    outbox: WebhookOutbox,
    store: JobStore,
    storage: Storage,
    public_base_url: str,
    job_id: str,
    event: str,
    only_if: str | None = None,
) -> None:
    """Queue `event` for the job's webhook, if it has one; a webhook never fails the job.

    The payload's URLs start with `public_base_url` (SHOW1_PUBLIC_BASE_URL), else with the base URL of
    the request that made the job (stored with it): a worker has no request of its own to go by.
    """
    try:
        record = store.get(job_id)
        if record is None or not record["webhook_url"] or (only_if and not record[only_if]):
            return
        payload = _payload(record, storage, public_base_url or record["base_url"] or "", event)
        if payload is not None:
            outbox.schedule(record["webhook_url"], payload)
    except redis.RedisError as error:
        log.warning("webhook %s not scheduled: %s", event, error)


def _payload(record: JobRecord, storage: Storage, base_url: str, event: str) -> dict[str, Any] | None:
    if record["api"] == "openai":
        # Created through /openai/v1: OpenAI's event, which carries only the id (clients retrieve).
        return video_event(record.id, record.status)
    job = render_job(record, storage, base_url).model_dump(mode="json")
    return {"event": event, "job": job}
