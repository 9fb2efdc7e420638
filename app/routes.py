"""HTTP routes: thin; the rules live in the job store, the queue and the schemas."""

from __future__ import annotations

import hashlib
import json
import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse

from app import metrics
from app.deps import OwnerDep, RateLimitedOwnerDep, Services, ServicesDep
from app.jobs import CANCELED, QUEUED, RUNNING, SUCCEEDED, JobRecord, new_job_id
from app.queue import enqueue_video, queue_position, remove_queued
from app.schemas import Job, JobList, Problem, VideoRequest
from app.settings import Settings
from app.storage import LocalStorage, StorageError, preview_key, video_key
from app.views import render_job
from models.params import GenerationParams, StageGuidance, StageSteps

router = APIRouter(prefix="/v1", tags=["videos"])
ops = APIRouter(tags=["operations"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing or unknown API key."},
    404: {"model": Problem, "description": "No such job for this API key."},
    429: {"model": Problem, "description": "Rate or in-flight limit reached; see Retry-After."},
}
IDEMPOTENCY_TTL_SECONDS = 24 * 3600


def _field_error(field: str, message: str, value: Any) -> RequestValidationError:
    return RequestValidationError(
        [{"type": "value_error", "loc": ["body", field], "msg": message, "input": value}]
    )


def _generation_params(body: VideoRequest, seed: int, settings: Settings) -> GenerationParams:
    try:
        return GenerationParams(
            prompt=body.prompt,
            seed=seed,
            negative_prompt=body.negative_prompt,
            num_keyframes=body.num_keyframes,
            keyframe_size=(body.keyframe_size.height, body.keyframe_size.width),
            output_size=(body.output_size.height, body.output_size.width),
            steps=StageSteps(**body.steps.model_dump()),
            guidance=StageGuidance(**body.guidance.model_dump()),
            fps=body.fps,
            keyframe_dropout=body.keyframe_dropout or settings.keyframe_dropout,
        )
    except ValueError as error:
        raise _field_error("params", str(error), body.model_dump(mode="json")) from error


def job_view(services: Services, record: JobRecord, request: Request) -> Job:
    position = queue_position(services.queue, record.id) if record.status == QUEUED else None
    base = services.settings.public_base_url or str(request.base_url)
    return render_job(record, services.storage, base, position)


def _owned_record(services: Services, owner: str, job_id: str) -> JobRecord:
    record = services.store.get(job_id)
    if record is None or record["owner"] != owner:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no video job {job_id}")
    return record


@router.post(
    "/videos",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Job,
    responses={**_ERRORS, 409: {"model": Problem, "description": "Idempotency-Key reused meanwhile."}},
    summary="Submit a prompt; returns the queued job",
)
def create_video(
    body: VideoRequest,
    request: Request,
    response: Response,
    services: ServicesDep,
    owner: RateLimitedOwnerDep,
    idempotency_key: Annotated[
        str | None,
        Header(max_length=200, description="Same key and body: the same job is returned, not a new one."),
    ] = None,
) -> Job:
    settings = services.settings
    if len(body.prompt) > settings.max_prompt_chars:
        raise _field_error("prompt", f"prompt is longer than {settings.max_prompt_chars} characters", None)
    if body.num_keyframes > settings.max_keyframes:
        raise _field_error("num_keyframes", f"at most {settings.max_keyframes} keyframes", body.num_keyframes)

    body_hash = hashlib.sha256(body.model_dump_json().encode()).hexdigest()
    idempotency_slot = None
    if idempotency_key is not None:
        digest = hashlib.sha256(idempotency_key.encode()).hexdigest()
        idempotency_slot = f"{settings.key_prefix}:idempotency:{owner}:{digest}"
        replay = _replay(services, request, response, idempotency_slot, body_hash)
        if replay is not None:
            return replay

    in_flight = services.store.count_in_flight(owner)
    if in_flight >= settings.max_jobs_in_flight_per_key:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"{in_flight} jobs queued or running for this key; "
            f"the limit is {settings.max_jobs_in_flight_per_key}",
            headers={"Retry-After": "30"},
        )

    seed = body.seed if body.seed is not None else secrets.randbelow(2**63)
    params = _generation_params(body, seed, settings)
    job_id = new_job_id()
    if idempotency_slot is not None:
        claim = json.dumps({"job_id": job_id, "body": body_hash})
        if not services.redis.set(idempotency_slot, claim, nx=True, ex=IDEMPOTENCY_TTL_SECONDS):
            replay = _replay(services, request, response, idempotency_slot, body_hash)
            if replay is not None:
                return replay
            raise HTTPException(
                status.HTTP_409_CONFLICT, "a request with this Idempotency-Key is in progress"
            )

    record = services.store.create(
        owner,
        {
            "params": params.to_dict(),
            "webhook_url": str(body.webhook_url) if body.webhook_url else None,
            "webhook_on_start": body.webhook_on_start,
        },
        job_id=job_id,
    )
    enqueue_video(services.queue, job_id, settings)
    metrics.JOBS_SUBMITTED.inc()
    response.headers["Location"] = f"/v1/videos/{job_id}"
    return job_view(services, record, request)


def _replay(
    services: Services, request: Request, response: Response, slot: str, body_hash: str
) -> Job | None:
    stored = services.redis.get(slot)
    if stored is None:
        return None
    claim = json.loads(stored)
    if claim["body"] != body_hash:
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ["header", "idempotency-key"],
                    "msg": "Idempotency-Key was already used with a different request body",
                    "input": None,
                }
            ]
        )
    record = services.store.get(claim["job_id"])
    if record is None:
        return None
    response.status_code = status.HTTP_200_OK
    response.headers["Location"] = f"/v1/videos/{record.id}"
    return job_view(services, record, request)


@router.get("/videos/{job_id}", response_model=Job, responses=_ERRORS, summary="A job's status and result")
def get_video(job_id: str, request: Request, services: ServicesDep, owner: RateLimitedOwnerDep) -> Job:
    return job_view(services, _owned_record(services, owner, job_id), request)


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
        items=[job_view(services, record, request) for record in records],
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
    if record.status not in (QUEUED, RUNNING):
        raise HTTPException(status.HTTP_409_CONFLICT, f"job {job_id} already {record.status}")
    services.store.request_cancel(job_id)
    if record.status == QUEUED and remove_queued(services.queue, job_id):
        services.store.finish(job_id, CANCELED)
    return job_view(services, _owned_record(services, owner, job_id), request)


@router.get(
    "/videos/{job_id}/content",
    responses={
        **_ERRORS,
        302: {"description": "Redirect to a presigned download URL (S3 storage)."},
        200: {"content": {"video/mp4": {}}, "description": "The MP4 (local storage)."},
        409: {"model": Problem, "description": "No video yet."},
    },
    response_class=Response,
    summary="Download the MP4",
)
def video_content(job_id: str, services: ServicesDep, owner: OwnerDep) -> Response:
    record = _owned_record(services, owner, job_id)
    if record.status != SUCCEEDED:
        raise HTTPException(status.HTTP_409_CONFLICT, f"job {job_id} is {record.status}, not succeeded")
    return _stored_file(services, video_key(job_id), "video/mp4")


@router.get(
    "/videos/{job_id}/preview",
    responses={
        **_ERRORS,
        302: {"description": "Redirect to a presigned URL of the PNG (S3 storage)."},
        200: {"content": {"image/png": {}}, "description": "The keyframes side by side (local storage)."},
        409: {"model": Problem, "description": "No keyframes yet."},
    },
    response_class=Response,
    summary="Keyframe preview, available once the keyframes exist",
)
def video_preview(job_id: str, services: ServicesDep, owner: OwnerDep) -> Response:
    record = _owned_record(services, owner, job_id)
    if not record["preview_url"]:
        raise HTTPException(status.HTTP_409_CONFLICT, f"job {job_id} has no keyframes yet")
    return _stored_file(services, preview_key(job_id), "image/png")


def _stored_file(services: Services, key: str, media_type: str) -> Response:
    if isinstance(services.storage, LocalStorage):
        return FileResponse(services.storage.file_path(key), media_type=media_type)
    return RedirectResponse(services.storage.download_url(key), status_code=status.HTTP_302_FOUND)


@ops.get("/healthz", summary="The process is up")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@ops.get("/readyz", summary="Redis and storage are reachable", responses={503: {"model": Problem}})
def readyz(services: ServicesDep) -> JSONResponse:
    problems = {}
    try:
        services.redis.ping()
    except Exception as error:  # noqa: BLE001 - any failure means not ready, and says why
        problems["redis"] = str(error)
    try:
        services.storage.ping()
    except StorageError as error:
        problems["storage"] = str(error)
    if problems:
        return JSONResponse({"status": "unavailable", "detail": problems}, status_code=503)
    return JSONResponse({"status": "ready"})


@ops.get("/metrics", summary="Prometheus metrics", response_class=Response)
def prometheus_metrics(services: ServicesDep) -> Response:
    body, content_type = metrics.render(services)
    return Response(body, media_type=content_type)
