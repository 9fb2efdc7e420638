"""The FastAPI application: `uvicorn app.main:create_app --factory`."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import metrics, openai_api, web
from app.deps import DEPENDENCY_RETRY_AFTER_SECONDS, REDIS, STORAGE, Services
from app.proxies import ForwardedHeaders
from app.routes import ops, router
from app.schemas import VideoRequest
from app.settings import Settings, get_settings
from app.storage import StorageError

log = logging.getLogger("show1.api")

DESCRIPTION = """
Text-to-video with the Show-1 cascade (pixel keyframes, interpolation, pixel and latent
super-resolution). POST a prompt, poll the job, download the MP4.

The same jobs also speak OpenAI's Videos API under `/openai/v1` (use OpenAI's SDKs with
`base_url=".../openai/v1"`).

Authenticate with `Authorization: Bearer <API key>`.
"""


# Where a body may carry input files (app/inputs.py); the route holds the rest of it to the usual limit.
CREATE_PATHS = ("/v1/videos", openai_api.PREFIX + "/videos")


class BodySizeLimit:
    """413 for bodies over the limit, by Content-Length or by counting a streamed body. Creating a job
    may carry input files: there the limit is `max_bytes` plus `max_input_bytes` (as base64 would take
    them, with room for a form's part headers)."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_input_bytes: int = 0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_create_bytes = max_bytes + max_input_bytes * 4 // 3 + 64 * 1024

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_create_bytes if scope["path"] in CREATE_PATHS else self.max_bytes
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._reject(scope, receive, send, limit)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, counting_receive, send)
        except _TooLarge:
            await self._reject(scope, receive, send, limit)

    async def _reject(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        message = f"request body larger than {limit} bytes"
        if scope["path"].startswith(openai_api.PREFIX + "/"):
            response = openai_api.error_response(413, message)
        else:
            response = JSONResponse({"detail": message}, status_code=413)
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass


class RequestMetrics:
    """Counts and times every request by route, and turns an exception no handler took into a 500
    with a body, logged once: the client always gets an answer, never a dropped connection."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status_code = time.perf_counter(), None

        async def recording_send(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        except Exception:
            if status_code is not None:
                raise  # the response has begun: only the server can end it now
            status_code = 500
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            await _internal_error(scope)(scope, receive, send)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            metrics.HTTP_REQUESTS.labels(scope["method"], path, str(status_code)).inc()
            metrics.HTTP_LATENCY.labels(scope["method"], path).observe(time.perf_counter() - started)


# Failures that mean a dependency is away, not that the request is wrong: Redis unreachable, timing out,
# loading its data after a restart, or a replica during a failover.
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ReadOnlyError)


def _dependency_down(request: Request, dependency: str, error: Exception) -> Response:
    """503 with Retry-After naming the dependency as /readyz names it (the why stays in the log)."""
    log.warning("%s %s: %s unavailable: %s", request.method, request.url.path, dependency, error)
    message = f"{dependency} is unavailable; retry in a few seconds"
    headers = {"Retry-After": str(DEPENDENCY_RETRY_AFTER_SECONDS)}
    if request.url.path.startswith(openai_api.PREFIX + "/"):
        return openai_api.error_response(503, message, code=f"{dependency}_unavailable", headers=headers)
    return JSONResponse({"detail": message}, status_code=503, headers=headers)


def _install_dependency_errors(app: FastAPI) -> None:
    """Any route that meets Redis or storage down answers 503 on both faces, never a 500."""

    async def redis_down(request: Request, error: Exception) -> Response:
        return _dependency_down(request, REDIS, error)

    async def storage_down(request: Request, error: Exception) -> Response:
        return _dependency_down(request, STORAGE, error)

    for kind in REDIS_DOWN:
        app.add_exception_handler(kind, redis_down)
    app.add_exception_handler(StorageError, storage_down)


def _internal_error(scope: Scope) -> JSONResponse:
    message = "internal error; the request may be retried"
    if scope["path"].startswith(openai_api.PREFIX + "/"):
        return openai_api.error_response(500, message)
    return JSONResponse({"detail": message}, status_code=500)


def _document_request_schemas(app: FastAPI) -> None:
    """The create route reads its body itself (JSON or multipart): its JSON schema is added by hand."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is not None:
            return app.openapi_schema
        spec = generate()
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        request = VideoRequest.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(request.pop("$defs", {}))
        schemas["VideoRequest"] = request
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not settings.auth_enabled:
            log.warning(
                "NO API KEYS CONFIGURED: the API is open to anyone who can reach it. "
                "Set SHOW1_API_KEYS for any deployment."
            )
        yield

    app = FastAPI(
        title="Show-1 video API",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.services = Services.from_settings(settings)
    app.include_router(router)
    app.include_router(ops)
    openai_api.install(app)
    web.install(app)
    _install_dependency_errors(app)

    _document_request_schemas(app)
    app.add_middleware(
        BodySizeLimit, max_bytes=settings.max_request_bytes, max_input_bytes=settings.max_inputs_bytes
    )
    app.add_middleware(ForwardedHeaders, trusted=settings.trusted_proxies)
    app.add_middleware(RequestMetrics)  # outermost: it sees every answer, the 413s included
    return app
