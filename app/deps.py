"""What a request handler gets injected: settings, the job store, the queue, storage, the caller."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Annotated

import redis
import redis.asyncio
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from rq import Queue

from app.jobs import JobStore, Keys, owner_of
from app.queue import video_queue
from app.settings import Settings
from app.storage import Storage, make_storage
from app.webhooks import WebhookOutbox

# The dependencies as /readyz and the 503s of every route name them.
REDIS, STORAGE = "redis", "storage"
DEPENDENCY_RETRY_AFTER_SECONDS = 5


@dataclass
class Services:
    settings: Settings
    redis: redis.Redis
    store: JobStore
    queue: Queue
    storage: Storage
    webhooks: WebhookOutbox
    # For blocking stream reads (live events) without holding a thread per client.
    async_redis: redis.asyncio.Redis

    @classmethod
    def from_settings(cls, settings: Settings) -> Services:
        connection = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=3)
        return cls(
            settings=settings,
            redis=connection,
            store=JobStore(connection, settings.key_prefix, settings.job_record_ttl_seconds),
            queue=video_queue(connection, settings),
            storage=make_storage(settings),
            webhooks=WebhookOutbox(connection, Keys(settings.key_prefix)),
            # Blocking stream reads wait up to app.events.BLOCK_MILLISECONDS; the timeout must outlast them.
            async_redis=redis.asyncio.Redis.from_url(
                settings.redis_url, socket_timeout=30, socket_connect_timeout=3
            ),
        )


def public_base_url(services: Services, request: Request) -> str:
    """Where this request's client reaches the API: SHOW1_PUBLIC_BASE_URL, else the request's own scheme
    and host (behind a trusted proxy, its forwarded ones: app/proxies.py); never a bind address."""
    return (services.settings.public_base_url or str(request.base_url)).rstrip("/")


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]

_bearer = HTTPBearer(auto_error=False, description="An API key from SHOW1_API_KEYS.")


def get_owner(
    request: Request,
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The caller's identity (a hash of its key); 401 unless the key is configured.

    Failed attempts are counted per client address: past SHOW1_AUTH_FAILURES_PER_MINUTE, that address
    gets 429 for the rest of the minute, whatever key it tries, so keys cannot be guessed at speed.
    """
    if not services.settings.auth_enabled:
        return owner_of(None)
    client = request.client.host if request.client else "unknown"
    failures_key = services.store.keys.auth_failures(client, int(time.time() // 60))
    limit = services.settings.auth_failures_per_minute
    if int(services.redis.get(failures_key) or 0) >= limit:
        raise _too_many(f"more than {limit} failed authentications from this address this minute")
    problem = None
    if credentials is None or credentials.scheme.lower() != "bearer":
        problem = "missing bearer API key"
    else:
        presented = credentials.credentials.encode()
        if not any(secrets.compare_digest(presented, key.encode()) for key in services.settings.api_keys):
            problem = "unknown API key"
    if problem is not None:
        pipe = services.redis.pipeline()
        pipe.incr(failures_key)
        pipe.expire(failures_key, 120)
        pipe.execute()
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, problem, headers={"WWW-Authenticate": "Bearer"})
    return owner_of(credentials.credentials)


def _too_many(message: str) -> HTTPException:
    retry_after = max(60 - int(time.time() % 60), 1)
    headers = {"Retry-After": str(retry_after)}
    return HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, message, headers=headers)


OwnerDep = Annotated[str, Depends(get_owner)]


def enforce_rate_limit(services: ServicesDep, owner: OwnerDep) -> str:
    """Fixed one-minute windows per key in Redis: shared by every API replica."""
    window = int(time.time() // 60)
    key = services.store.keys.requests(owner, window)
    pipe = services.redis.pipeline()
    pipe.incr(key)
    pipe.expire(key, 120)
    count, _ = pipe.execute()
    if count > services.settings.rate_limit_per_minute:
        limit = services.settings.rate_limit_per_minute
        raise _too_many(f"rate limit of {limit} requests per minute exceeded")
    return owner


RateLimitedOwnerDep = Annotated[str, Depends(enforce_rate_limit)]
