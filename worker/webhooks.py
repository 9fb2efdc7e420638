"""Webhook delivery: signed POSTs, retried with backoff, never failing the job.

Deliveries wait in a Redis sorted set scored by their due time, so they survive a worker restart;
every worker process runs a small sender thread that claims due deliveries (ZREM decides who).

Signed per the Standard Webhooks specification (https://www.standardwebhooks.com), by the
`standardwebhooks` package: headers `webhook-id` (the same on every retry of one delivery, so receivers
can deduplicate), `webhook-timestamp` (unix seconds of this attempt) and `webhook-signature`
(`v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">` keyed by the `whsec_` secret). Any Standard
Webhooks library verifies them, and so does the OpenAI SDK's `client.webhooks.verify_signature`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import httpx
import redis
from standardwebhooks import Webhook

log = logging.getLogger("show1.webhooks")

BACKOFF_SECONDS = (2, 10, 30, 120, 600, 1800)


def signed_headers(delivery_id: str, body: str, secret: str, now: float | None = None) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt; without a secret, the same headers unsigned."""
    timestamp = datetime.fromtimestamp(int(now if now is not None else time.time()), tz=timezone.utc)
    headers = {"webhook-id": delivery_id, "webhook-timestamp": str(int(timestamp.timestamp()))}
    if secret:
        headers["webhook-signature"] = Webhook(secret).sign(delivery_id, timestamp, body)
    return headers


class WebhookQueue:
    def __init__(self, connection: redis.Redis, prefix: str) -> None:
        self.redis = connection
        self.due_key = f"{prefix}:webhooks:due"
        self.prefix = prefix

    def _delivery_key(self, delivery_id: str) -> str:
        return f"{self.prefix}:webhook:{delivery_id}"

    def schedule(self, url: str, payload: dict[str, Any]) -> str:
        """Queue one event for delivery; its id is the `webhook-id` of every attempt."""
        delivery_id = f"msg_{uuid.uuid4().hex}"
        body = json.dumps(payload, separators=(",", ":"))
        pipe = self.redis.pipeline()
        pipe.hset(self._delivery_key(delivery_id), mapping={"url": url, "body": body, "attempts": 0})
        pipe.expire(self._delivery_key(delivery_id), 7 * 24 * 3600)
        pipe.zadd(self.due_key, {delivery_id: time.time()})
        pipe.execute()
        return delivery_id

    def claim_due(self, limit: int = 10) -> list[str]:
        claimed = []
        for delivery_id in self.redis.zrangebyscore(self.due_key, 0, time.time(), start=0, num=limit):
            if self.redis.zrem(self.due_key, delivery_id):
                claimed.append(delivery_id.decode())
        return claimed

    def deliver(self, delivery_id: str, secret: str, timeout: float, max_attempts: int) -> bool:
        key = self._delivery_key(delivery_id)
        delivery = {k.decode(): v.decode() for k, v in self.redis.hgetall(key).items()}
        if not delivery:
            return False
        body = delivery["body"]
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "show1-webhooks/2",
            **signed_headers(delivery_id, body, secret),
        }
        attempts = int(delivery["attempts"]) + 1
        try:
            response = httpx.post(delivery["url"], content=body.encode(), headers=headers, timeout=timeout)
            delivered = response.status_code < 300
            reason = f"HTTP {response.status_code}"
        except httpx.HTTPError as error:
            delivered, reason = False, str(error) or type(error).__name__
        if delivered:
            self.redis.delete(key)
            return True
        if attempts >= max_attempts:
            log.warning("webhook to %s dropped after %d attempts: %s", delivery["url"], attempts, reason)
            self.redis.delete(key)
            return False
        delay = BACKOFF_SECONDS[min(attempts - 1, len(BACKOFF_SECONDS) - 1)]
        log.info("webhook to %s failed (%s); retry %d in %ds", delivery["url"], reason, attempts, delay)
        self.redis.hset(key, "attempts", attempts)
        self.redis.zadd(self.due_key, {delivery_id: time.time() + delay})
        return False


class WebhookSender(threading.Thread):
    """Background thread of a worker process: delivers due webhooks until stopped."""

    def __init__(self, queue: WebhookQueue, secret: str, timeout: float, max_attempts: int) -> None:
        super().__init__(name="webhook-sender", daemon=True)
        self.queue, self.secret, self.timeout, self.max_attempts = queue, secret, timeout, max_attempts
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.5):
            try:
                for delivery_id in self.queue.claim_due():
                    self.queue.deliver(delivery_id, self.secret, self.timeout, self.max_attempts)
            except redis.RedisError as error:
                log.warning("webhook sender cannot reach Redis: %s", error)
