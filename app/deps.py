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

from app.jobs import JobStore, owner_of
from app.queue import video_queue
from app.settings import Settings
from app.storage import Storage, make_storage


@dataclass
class Services:
    settings: Settings
    redis: redis.Redis
    store: JobStore
    queue: Queue
    storage: Storage
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
            # Blocking stream reads wait up to app.events.BLOCK_MILLISECONDS; the timeout must outlast them.
            async_redis=redis.asyncio.Redis.from_url(
                settings.redis_url, socket_timeout=30, socket_connect_timeout=3
            ),
        )


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]

_bearer = HTTPBearer(auto_error=False, description="An API key from SHOW1_API_KEYS.")


def get_owner(
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The caller's identity (a hash of its key); 401 unless the key is configured."""
    if not services.settings.auth_enabled:
        return owner_of(None)
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "missing bearer API key", headers={"WWW-Authenticate": "Bearer"}
        )
    presented = credentials.credentials.encode()
    if not any(secrets.compare_digest(presented, key.encode()) for key in services.settings.api_keys):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "unknown API key", headers={"WWW-Authenticate": "Bearer"}
        )
    return owner_of(credentials.credentials)


OwnerDep = Annotated[str, Depends(get_owner)]


def enforce_rate_limit(services: ServicesDep, owner: OwnerDep) -> str:
    """Fixed one-minute windows per key in Redis: shared by every API replica."""
    window = int(time.time() // 60)
    key = f"{services.settings.key_prefix}:rate:{owner}:{window}"
    pipe = services.redis.pipeline()
    pipe.incr(key)
    pipe.expire(key, 120)
    count, _ = pipe.execute()
    if count > services.settings.rate_limit_per_minute:
        retry_after = 60 - int(time.time() % 60)
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"rate limit of {services.settings.rate_limit_per_minute} requests per minute exceeded",
            headers={"Retry-After": str(max(retry_after, 1))},
        )
    return owner


RateLimitedOwnerDep = Annotated[str, Depends(enforce_rate_limit)]
