"""HTTP routes: thin; the rules live in the job store, the queue and the schemas."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, Callable, Coroutine
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from app import actions, metrics
from app.deps import (
    DEPENDENCY_RETRY_AFTER_SECONDS,
    REDIS,
    STORAGE,
    RateLimitedOwnerDep,
    Services,
    ServicesDep,
    public_base_url,
)
from app.estimates import queue_places
from app.events import InvalidEventId, check_event_id, job_events
from app.inputs import RequestBody, UnreadableBody, read_request
from app.jobs import SUCCEEDED, JobRecord
from app.json_input import UnstorableValue, parse_json_body
from app.schemas import Job, JobList, Problem, VideoRequest
from app.storage import StorageError, preview_key, video_key
from app.views import render_job

log = logging.getLogger("show1.api")


class StorableJSONRoute(APIRoute):
    """A JSON body is read as app/json_input.py allows before FastAPI validates it: a value that no
    response or record could carry (NaN, Infinity, a lone surrogate) is a 422 naming its field."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            body = await request.body()  # kept by the request: FastAPI reads it again for free
            if body:
                try:
                    parse_json_body(body)
                except UnstorableValue as error:
                    loc = ["body", *error.loc]
                    raise RequestValidationError(
                        [{"type": "value_error", "loc": loc, "msg": error.message, "input": None}]
                    ) from error
                except ValueError:
                    pass  # not JSON at all: FastAPI answers that itself
            return await handler(request)

        return checked


router = APIRouter(prefix="/v1", tags=["videos"], route_class=StorableJSONRoute)
ops = APIRouter(tags=["operations"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing or unknown API key."},
    404: {"model": Problem, "description": "No such job for this API key."},
    429: {"model": Problem, "description": "Rate or in-flight limit reached; see Retry-After."},
    503: {"model": Problem, "description": "Redis or storage is unavailable (named); see Retry-After."},
}


def _v1_error(error: actions.ActionError) -> Exception:
    """This face's wire format for the shared rules' errors: FastAPI's 422 list, or `detail`."""
    if isinstance(error, actions.InvalidField):
        return RequestValidationError(
            [{"type": "value_error", "loc": list(error.loc), "msg": error.message, "input": error.value}]
        )
    headers = None
    if isinstance(error, actions.TooManyInFlight | actions.QueueUnavailable):
        headers = {"Retry-After": str(error.retry_after_seconds)}
    return HTTPException(error.status_code, error.message, headers=headers)


def job_views(services: Services, records: list[JobRecord], request: Request) -> list[Job]:
    """The job objects for this request's client: queue position and ETA while queued."""
    places = queue_places(services.store, records, services.settings.heartbeat_seconds)
    base = public_base_url(services, request)
    views = []
    for record in records:
        place = places.get(record.id)
        position, eta = (place.position, place.eta_seconds) if place else (None, None)
        views.append(render_job(record, services.storage, base, position, eta))
    return views


def job_view(services: Services, record: JobRecord, request: Request) -> Job:
    return job_views(services, [record], request)[0]


def _owned_record(services: Services, owner: str, job_id: str) -> JobRecord:
    try:
        return actions.owned_record(services, owner, job_id)
    except actions.ActionError as error:
        raise _v1_error(error) from error


async def _request_body(request: Request) -> RequestBody:
    try:
        return await read_request(request)
    except UnstorableValue as error:  # in a form field (JSON bodies: StorableJSONRoute)
        raise RequestValidationError(
            [{"type": "value_error", "loc": ["body", *error.loc], "msg": error.message, "input": None}]
        ) from error
    except UnreadableBody as error:
        limit = request.app.state.services.settings.max_request_bytes
        if error.size > limit:
            raise HTTPException(413, f"request body larger than {limit} bytes") from error
        raise RequestValidationError(
            [{"type": "value_error", "loc": ["body"], "msg": str(error), "input": None}]
        ) from error


def _video_request(received: RequestBody) -> VideoRequest:
    try:
        return VideoRequest.model_validate(received.fields)
    except ValidationError as error:
        raise RequestValidationError(
            [{**detail, "loc": ("body", *detail["loc"])} for detail in error.errors(include_url=False)]
        ) from error


# JSON (VideoRequest), or the same fields as a multipart form whose file parts are the inputs.
_CREATE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/VideoRequest"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "prompt": {"type": "string"},
                        "keyframe_images": {"type": "array", "items": {"type": "string", "format": "binary"}},
                        "input_video": {"type": "string", "format": "binary"},
                    },
                    "description": "Any field of VideoRequest; nested ones bracketed (steps[sr2]=3).",
                }
            },
        },
    }
}


@router.post(
    "/videos",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Job,
    responses={
        **_ERRORS,
        409: {"model": Problem, "description": "Idempotency-Key reused meanwhile."},
        413: {"model": Problem, "description": "Body over the limits."},
        422: {"description": "Invalid input; `detail[].loc` names the field (and the item)."},
    },
    openapi_extra=_CREATE_BODY,
    summary="Submit a prompt (or keyframe images, or a clip to upscale); returns the queued job",
)
async def create_video(
    request: Request,
    response: Response,
    services: ServicesDep,
    owner: RateLimitedOwnerDep,
    received: Annotated[RequestBody, Depends(_request_body)],
    idempotency_key: Annotated[
        str | None,
        Header(max_length=200, description="Same key and body: the same job is returned, not a new one."),
    ] = None,
) -> Job:
    body = _video_request(received)
    try:
        made_by = {"api": "v1", "base_url": public_base_url(services, request)}
        submitted = await actions.create(
            services, owner, body, received.bytes_besides_inputs, idempotency_key, made_by
        )
    except actions.ActionError as error:
        raise _v1_error(error) from error
    if submitted.replayed:
        response.status_code = status.HTTP_200_OK
    response.headers["Location"] = f"/v1/videos/{submitted.record.id}"
    return await run_in_threadpool(job_view, services, submitted.record, request)


@router.get("/videos/{job_id}", response_model=Job, responses=_ERRORS, summary="A job's status and result")
def get_video(job_id: str, request: Request, services: ServicesDep, owner: RateLimitedOwnerDep) -> Job:
    return job_view(services, _owned_record(services, owner, job_id), request)


def _stream_start(
    job_id: str,
    services: ServicesDep,
    owner: RateLimitedOwnerDep,
    last_event_id: Annotated[str | None, Header(description="Resume after this event id.")] = None,
) -> tuple[JobRecord, str | None]:
    """Checked before the stream starts: once it has, an error can no longer be an HTTP status."""
    try:
        check_event_id(last_event_id)
    except InvalidEventId as error:
        invalid = actions.InvalidField(("header", "last-event-id"), str(error), last_event_id)
        raise _v1_error(invalid) from error
    return _owned_record(services, owner, job_id), last_event_id


@router.get(
    "/videos/{job_id}/events",
    response_class=EventSourceResponse,
    responses={
        **_ERRORS,
        200: {
            "description": (
                "Server-Sent Events: `snapshot` (the job), then `status`, `progress` and `preview` "
                "(the changed fields), and `done` (the final job) before the stream ends. Reconnect "
                "with `Last-Event-ID` to resume after the last event received."
            )
        },
    },
    summary="Live progress of a job",
)
async def video_events(
    request: Request,
    services: ServicesDep,
    start: Annotated[tuple[JobRecord, str | None], Depends(_stream_start)],
) -> AsyncIterable[ServerSentEvent]:
    record, last_event_id = start
    render = partial(job_view, services, request=request)
    base_url = public_base_url(services, request)
    events = job_events(services.store, services.async_redis, record, render, last_event_id, base_url)
    async for event in events:
        yield event


@router.get("/videos", response_model=JobList, responses=_ERRORS, summary="Your jobs, newest first")
def list_videos(
    request: Request,
    services: ServicesDep,
    owner: RateLimitedOwnerDep,
    status_filter: Annotated[
        str | None,
        Query(
            alias="status",
            pattern="^(queued|running|succeeded|failed|canceled)$",
            description="Only this status.",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[
        str | None, Query(pattern="^[0-9]{1,9}$", description="From the previous page.")
    ] = None,
) -> JobList:
    records, next_offset = services.store.list_for_owner(
        owner, status=status_filter, offset=int(cursor or 0), limit=limit
    )
    return JobList(
        items=job_views(services, records, request),
        next_cursor=None if next_offset is None else str(next_offset),
    )


@router.delete(
    "/videos/{job_id}",
    response_model=Job,
    responses={**_ERRORS, 409: {"model": Problem, "description": "The job already finished."}},
    summary="Cancel: a queued job at once, a running one between denoising steps",
)
def cancel_video(job_id: str, request: Request, services: ServicesDep, owner: RateLimitedOwnerDep) -> Job:
    record = _owned_record(services, owner, job_id)
    try:
        return job_view(services, actions.cancel(services, record), request)
    except actions.ActionError as error:
        raise _v1_error(error) from error


@router.get(
    "/videos/{job_id}/content",
    responses={
        **_ERRORS,
        302: {"description": "Redirect to a presigned download URL (S3 storage)."},
        200: {"content": {"video/mp4": {}}, "description": "The MP4 (local storage)."},
        409: {"model": Problem, "description": "No video yet."},
        410: {"model": Problem, "description": "The video expired with its job, or was deleted."},
    },
    response_class=Response,
    summary="Download the MP4",
)
def video_content(job_id: str, services: ServicesDep, owner: RateLimitedOwnerDep) -> Response:
    record = _owned_record(services, owner, job_id)
    if record.status != SUCCEEDED:
        raise HTTPException(status.HTTP_409_CONFLICT, f"job {job_id} is {record.status}, not succeeded")
    return _stored_file(services, record, video_key(job_id, record.published_attempt), "video/mp4", "video")


@router.get(
    "/videos/{job_id}/preview",
    responses={
        **_ERRORS,
        302: {"description": "Redirect to a presigned URL of the PNG (S3 storage)."},
        200: {"content": {"image/png": {}}, "description": "The keyframes side by side (local storage)."},
        409: {"model": Problem, "description": "No keyframes yet."},
        410: {"model": Problem, "description": "The preview expired with its job, or was deleted."},
    },
    response_class=Response,
    summary="Keyframe preview, available once the keyframes exist",
)
def video_preview(job_id: str, services: ServicesDep, owner: RateLimitedOwnerDep) -> Response:
    record = _owned_record(services, owner, job_id)
    if not record["preview_url"]:
        raise HTTPException(status.HTTP_409_CONFLICT, f"job {job_id} has no keyframes yet")
    return _stored_file(services, record, preview_key(job_id, record.preview_attempt), "image/png", "preview")


def _stored_file(services: Services, record: JobRecord, key: str, media_type: str, what: str) -> Response:
    try:
        return actions.stored_file(services, record, key, media_type, what)
    except actions.ActionError as error:
        raise _v1_error(error) from error


@ops.get("/healthz", summary="The process is up")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@ops.get("/readyz", summary="Redis and storage are reachable", responses={503: {"model": Problem}})
def readyz(services: ServicesDep) -> JSONResponse:
    """Up or down per dependency, for anyone; why (addresses included) only in the log."""
    down = {}
    try:
        services.redis.ping()
    except Exception as error:  # noqa: BLE001 - any failure means not ready
        down[REDIS] = error
    try:
        services.storage.ping()
    except StorageError as error:
        down[STORAGE] = error
    for name, error in down.items():
        log.warning("not ready: %s: %s", name, error)
    if down:
        return JSONResponse(
            {"status": "unavailable", "detail": dict.fromkeys(down, "down")},
            status_code=503,
            headers={"Retry-After": str(DEPENDENCY_RETRY_AFTER_SECONDS)},
        )
    return JSONResponse({"status": "ready"})


@ops.get("/metrics", summary="Prometheus metrics", response_class=Response)
def prometheus_metrics(services: ServicesDep) -> Response:
    body, content_type = metrics.render(services)
    return Response(body, media_type=content_type)
