"""Webhook delivery: signed POSTs, retried with backoff, never failing the job.

Deliveries wait in a Redis sorted set scored by their due time, so they survive a worker restart.
Every worker process runs a sender thread that leases due deliveries rather than popping them: a
lease pushes the entry's due time past the delivery's deadline, in one atomic step, so no two senders
take the same delivery and one whose sender dies (a killed worker) comes due again: at least once.
The sender runs up to SENDER_CONCURRENCY deliveries at a time, each under one total deadline
(`SHOW1_WEBHOOK_TIMEOUT_SECONDS`), so a receiver that answers slowly, or drips its answer, delays no
other delivery. Targets are checked by app/egress.py again at delivery, and the connection goes to the
address that was checked; redirects are not followed.

Signed per the Standard Webhooks specification (https://www.standardwebhooks.com), by the
`standardwebhooks` package: headers `webhook-id` (the same on every retry of one delivery, so receivers
can deduplicate), `webhook-timestamp` (unix seconds of this attempt) and `webhook-signature`
(`v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">` keyed by the `whsec_` secret). Any Standard
Webhooks library verifies them, and so does the OpenAI SDK's `client.webhooks.verify_signature`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import datetime, timezone

import anyio.to_thread
import httpx
import redis
from standardwebhooks import Webhook

from app.egress import EgressPolicy, ForbiddenTarget, GuardedTransport
from app.jobs import Keys
from app.webhooks import WebhookOutbox

log = logging.getLogger("show1.webhooks")

BACKOFF_SECONDS = (2, 10, 30, 120, 600, 1800)
SENDER_CONCURRENCY = 8
# A lease outlasts the delivery's deadline by this much before the delivery is due again.
LEASE_MARGIN_SECONDS = 10.0

# KEYS[1]: the due set. ARGV: now, lease seconds, most to take. Due entries are leased by moving their
# due time to the lease's end, so they come back by themselves if their sender never reports.
_LEASE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], 0, ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(due) do redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), id) end
return due
"""


def signed_headers(delivery_id: str, body: str, secret: str, now: float | None = None) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt; without a secret, the same headers unsigned."""
    timestamp = datetime.fromtimestamp(int(now if now is not None else time.time()), tz=timezone.utc)
    headers = {"webhook-id": delivery_id, "webhook-timestamp": str(int(timestamp.timestamp()))}
    if secret:
        headers["webhook-signature"] = Webhook(secret).sign(delivery_id, timestamp, body)
    return headers


class WebhookQueue(WebhookOutbox):
    """The outbox as the workers' senders see it: leasing, delivering, rescheduling."""

    def __init__(self, connection: redis.Redis, keys: Keys) -> None:
        super().__init__(connection, keys)
        self._lease = connection.register_script(_LEASE)

    def lease_due(self, limit: int, lease_seconds: float) -> list[str]:
        """Take up to `limit` due deliveries for `lease_seconds`; each is due again after that."""
        leased = self._lease(keys=[self.due_key], args=[time.time(), lease_seconds, limit])
        return [_text(delivery_id) for delivery_id in leased]

    async def deliver(
        self,
        client: httpx.AsyncClient,
        policy: EgressPolicy,
        delivery_id: str,
        secret: str,
        deadline: float,
        max_attempts: int,
    ) -> bool:
        """One attempt at a leased delivery; reschedules it with backoff or drops it on failure."""
        key = self.delivery_key(delivery_id)
        delivery = {_text(k): _text(v) for k, v in self.redis.hgetall(key).items()}
        if not delivery:
            self.redis.zrem(self.due_key, delivery_id)
            return False
        url, body = delivery["url"], delivery["body"]
        try:
            # The target was checked at submit; its name may point elsewhere now.
            await anyio.to_thread.run_sync(policy.check_url, url)
        except ForbiddenTarget as error:
            log.warning("webhook to %s dropped: %s", url, error)
            self._forget(delivery_id)
            return False
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "show1-webhooks/2",
            **signed_headers(delivery_id, body, secret),
        }
        attempts = int(delivery["attempts"]) + 1
        try:
            response = await asyncio.wait_for(
                client.post(url, content=body.encode(), headers=headers), deadline
            )
            delivered = response.status_code < 300
            reason = f"HTTP {response.status_code}"
        except TimeoutError:
            delivered, reason = False, f"no answer within {deadline:g}s"
        except httpx.HTTPError as error:
            delivered, reason = False, str(error) or type(error).__name__
        if delivered:
            self._forget(delivery_id)
            return True
        if attempts >= max_attempts:
            log.warning("webhook to %s dropped after %d attempts: %s", url, attempts, reason)
            self._forget(delivery_id)
            return False
        delay = BACKOFF_SECONDS[min(attempts - 1, len(BACKOFF_SECONDS) - 1)]
        log.info("webhook to %s failed (%s); retry %d in %ds", url, reason, attempts, delay)
        pipe = self.redis.pipeline()
        pipe.hset(key, "attempts", attempts)
        pipe.zadd(self.due_key, {delivery_id: time.time() + delay})
        pipe.execute()
        return False

    def _forget(self, delivery_id: str) -> None:
        pipe = self.redis.pipeline()
        pipe.delete(self.delivery_key(delivery_id))
        pipe.zrem(self.due_key, delivery_id)
        pipe.execute()


class WebhookSender(threading.Thread):
    """Background thread of a worker process: delivers due webhooks, several at a time, until stopped."""

    def __init__(
        self,
        queue: WebhookQueue,
        secret: str,
        deadline: float,
        max_attempts: int,
        policy: EgressPolicy,
        concurrency: int = SENDER_CONCURRENCY,
    ) -> None:
        super().__init__(name="webhook-sender", daemon=True)
        self.queue, self.secret, self.deadline, self.max_attempts = queue, secret, deadline, max_attempts
        self.policy, self.concurrency = policy, concurrency
        self.stopped = threading.Event()

    def run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        running: set[asyncio.Task] = set()
        transport = GuardedTransport(self.policy)
        async with httpx.AsyncClient(
            transport=transport, follow_redirects=False, timeout=self.deadline
        ) as client:
            while not self.stopped.is_set():
                free = self.concurrency - len(running)
                if free > 0:
                    try:
                        leased = self.queue.lease_due(free, self.deadline + LEASE_MARGIN_SECONDS)
                    except redis.RedisError as error:
                        log.warning("webhook sender cannot reach Redis: %s", error)
                        leased = []
                    for delivery_id in leased:
                        task = asyncio.create_task(self._deliver(client, delivery_id))
                        running.add(task)
                        task.add_done_callback(running.discard)
                await asyncio.sleep(0.2)
            for task in running:
                task.cancel()

    async def _deliver(self, client: httpx.AsyncClient, delivery_id: str) -> None:
        try:
            await self.queue.deliver(
                client, self.policy, delivery_id, self.secret, self.deadline, self.max_attempts
            )
        except redis.RedisError as error:
            # The lease runs out and another sender (or this one) tries again.
            log.warning("webhook %s not settled: %s", delivery_id, error)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
