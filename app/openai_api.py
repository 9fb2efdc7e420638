"""The OpenAI-compatible face: `/openai/v1/videos`, so OpenAI's SDKs work with `base_url=".../openai/v1"`.

Routes are thin: parse, translate (app/openai_translate.py), call the shared actions (app/actions.py)
over the same job store, queue, auth and limits as `/v1`, and answer errors as OpenAI's error object.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Response, status
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import actions
from app.deps import OwnerDep, RateLimitedOwnerDep, Services, ServicesDep, public_base_url
from app.inputs import RequestBody, UnreadableBody, read_request
from app.jobs import QUEUED, SUCCEEDED, JobRecord
from app.json_input import UnstorableValue
from app.openai_schemas import ErrorResponse, Video, VideoDeleted, VideoList
from app.openai_translate import (
    INPUT_REFERENCE_MESSAGE,
    InvalidRequest,
    param_name,
    poll_after_ms,
    render_video,
    to_video_request,
)
from app.storage import spritesheet_key, thumbnail_key, video_key

PREFIX = "/openai/v1"
router = APIRouter(prefix=PREFIX, tags=["openai"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Invalid request; `error.param` names the field."},
    401: {"model": ErrorResponse, "description": "Missing or unknown API key."},
    404: {"model": ErrorResponse, "description": "No such video for this API key."},
    429: {"model": ErrorResponse, "description": "Rate or in-flight limit reached; see Retry-After."},
    503: {"model": ErrorResponse, "description": "Redis or storage is unavailable (named); see Retry-After."},
}
# OpenAI's `error.type` per status; `code` says more where we know more.
_TYPES = {401: "invalid_request_error", 429: "rate_limit_error"}
_CODES = {
    401: "invalid_api_key",
    404: "not_found",
    409: "conflict",
    410: "gone",
    413: "request_too_large",
}
_VARIANTS = {
    "video": (video_key, "video/mp4"),
    "thumbnail": (thumbnail_key, "image/jpeg"),
    "spritesheet": (spritesheet_key, "image/jpeg"),
}


class OpenAIError(Exception):
    """Answered as OpenAI's error object by the handler `install` registers."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code, self.message, self.param, self.code = status_code, message, param, code
        self.headers = headers or {}


def error_response(
    status_code: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    kind = _TYPES.get(status_code, "server_error" if status_code >= 500 else "invalid_request_error")
    body = {
        "error": {"message": message, "type": kind, "param": param, "code": code or _CODES.get(status_code)}
    }
    return JSONResponse(body, status_code=status_code, headers=headers)


def _from_action(error: actions.ActionError) -> OpenAIError:
    """The shared rules' errors in OpenAI's terms: their status codes kept, validation as 400."""
    if isinstance(error, actions.InvalidField):
        return OpenAIError(status.HTTP_400_BAD_REQUEST, error.message, param=param_name(error.loc[1:]))
    if isinstance(error, actions.TooManyInFlight):
        headers = {"Retry-After": str(error.retry_after_seconds)}
        return OpenAIError(error.status_code, error.message, code="too_many_jobs_in_flight", headers=headers)
    if isinstance(error, actions.QueueUnavailable):
        headers = {"Retry-After": str(error.retry_after_seconds)}
        return OpenAIError(error.status_code, error.message, code="queue_unavailable", headers=headers)
    return OpenAIError(error.status_code, error.message)


def _owned(services: Services, owner: str, video_id: str) -> JobRecord:
    try:
        return actions.owned_record(services, owner, video_id)
    except actions.ActionError as error:
        raise _from_action(error) from error


def _videos(services: Services, records: list[JobRecord], request: Request) -> list[Video]:
    """Queue positions come from the job store's waiting line: one rank lookup per queued job."""
    queued = [record.id for record in records if record.status == QUEUED]
    positions = dict(zip(queued, services.store.queue_positions(queued), strict=True))
    base = public_base_url(services, request)
    return [render_video(record, services.settings, base, positions.get(record.id)) for record in records]


def _video(services: Services, record: JobRecord, request: Request) -> Video:
    return _videos(services, [record], request)[0]


async def create_fields(request: Request) -> RequestBody:
    """The create body as a nested object: JSON, or multipart/urlencoded form with bracketed names;
    file parts are the inputs of the same name (keyframe_images, input_video)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        received = await read_request(request)
    except UnstorableValue as error:
        raise _unstorable(error) from error
    except UnreadableBody as error:
        limit = request.app.state.services.settings.max_request_bytes
        if error.size > limit:
            raise OpenAIError(413, f"request body larger than {limit} bytes") from error
        param = None if content_type.endswith("form-data") else "prompt"
        raise OpenAIError(status.HTTP_400_BAD_REQUEST, str(error), param=param) from error
    if "input_reference" in received.fields:  # the SDK uploads it as a file part
        raise OpenAIError(400, INPUT_REFERENCE_MESSAGE, param="input_reference", code="unsupported")
    return received


def _unstorable(error: UnstorableValue) -> OpenAIError:
    param = param_name(error.loc) if error.loc else None
    return OpenAIError(status.HTTP_400_BAD_REQUEST, f"{param or 'body'} {error.message}", param=param)


_CREATE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            media: {
                "schema": {
                    "type": "object",
                    "required": ["prompt"],
                    "properties": {
                        "prompt": {"type": "string"},
                        "model": {"type": "string", "enum": ["show-1"]},
                        "seconds": {"type": "string", "examples": ["4"]},
                        "size": {"type": "string", "examples": ["1280x720"]},
                        "seed": {"type": "integer"},
                        "negative_prompt": {"type": "string"},
                        "fps": {"type": "integer"},
                        "webhook_url": {"type": "string"},
                        "keyframe_images": {"type": "array", "items": {"type": "string"}},
                        "input_video": {"type": "string"},
                    },
                    "description": "Also any field of VideoRequest (steps[sr1]=... in forms).",
                }
            }
            for media in ("application/json", "multipart/form-data")
        },
    }
}


@router.post(
    "/videos",
    response_model=Video,
    responses=_ERRORS,
    openapi_extra=_CREATE_BODY,
    summary="Create a video (OpenAI's videos.create)",
)
async def create_video(
    request: Request,
    response: Response,
    services: ServicesDep,
    owner: RateLimitedOwnerDep,
    received: Annotated[RequestBody, Depends(create_fields)],
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Video:
    try:
        body = to_video_request(received.fields, services.settings)
        made_by = {"api": "openai", "base_url": public_base_url(services, request)}
        submitted = await actions.create(
            services, owner, body, received.bytes_besides_inputs, idempotency_key, made_by
        )
    except InvalidRequest as error:
        raise OpenAIError(400, error.message, param=error.param, code=error.code) from error
    except actions.ActionError as error:
        raise _from_action(error) from error
    response.headers["Location"] = f"{PREFIX}/videos/{submitted.record.id}"
    response.headers["openai-poll-after-ms"] = str(poll_after_ms(submitted.record))
    return await run_in_threadpool(_video, services, submitted.record, request)


@router.get("/videos/{video_id}", response_model=Video, responses=_ERRORS, summary="Retrieve a video")
def retrieve_video(
    video_id: str, request: Request, response: Response, services: ServicesDep, owner: RateLimitedOwnerDep
) -> Video:
    record = _owned(services, owner, video_id)
    if record.status != SUCCEEDED:
        response.headers["openai-poll-after-ms"] = str(poll_after_ms(record))
    return _video(services, record, request)


@router.get("/videos", response_model=VideoList, responses=_ERRORS, summary="List videos")
def list_videos(
    request: Request,
    services: ServicesDep,
    owner: RateLimitedOwnerDep,
    after: Annotated[
        str | None, Query(max_length=100, description="The last id of the previous page.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Annotated[Literal["asc", "desc"], Query(description="By creation time.")] = "desc",
) -> VideoList:
    oldest_first = order == "asc"
    offset = 0
    if after is not None:
        position = services.store.position_for_owner(owner, after, oldest_first=oldest_first)
        if position is None:
            raise OpenAIError(status.HTTP_400_BAD_REQUEST, f"no video {after} to list after", param="after")
        offset = position + 1
    # One more than asked: whether another page exists, without handing out an empty one.
    records, _ = services.store.list_for_owner(
        owner, status=None, offset=offset, limit=limit + 1, oldest_first=oldest_first
    )
    page = _videos(services, records[:limit], request)
    return VideoList(
        data=page,
        first_id=page[0].id if page else None,
        last_id=page[-1].id if page else None,
        has_more=len(records) > limit,
    )


@router.delete("/videos/{video_id}", response_model=VideoDeleted, responses=_ERRORS, summary="Delete a video")
def delete_video(video_id: str, services: ServicesDep, owner: RateLimitedOwnerDep) -> VideoDeleted:
    """A live job is canceled (its record stays, as failed with code `canceled`, until it stops); a
    finished one is removed with its files."""
    record = _owned(services, owner, video_id)
    actions.delete(services, record)
    return VideoDeleted(id=video_id)


@router.get(
    "/videos/{video_id}/content",
    responses={
        **_ERRORS,
        200: {"content": {"video/mp4": {}, "image/jpeg": {}}, "description": "The file (local storage)."},
        302: {"description": "Redirect to a presigned download URL (S3 storage)."},
        409: {"model": ErrorResponse, "description": "The video is not completed."},
        410: {"model": ErrorResponse, "description": "The file expired with its video, or was deleted."},
    },
    response_class=Response,
    summary="Download the video, its thumbnail or its sprite sheet",
)
def download_content(
    video_id: str,
    services: ServicesDep,
    owner: RateLimitedOwnerDep,
    variant: Annotated[Literal["video", "thumbnail", "spritesheet"], Query()] = "video",
) -> Response:
    record = _owned(services, owner, video_id)
    if record.status != SUCCEEDED:
        raise OpenAIError(
            status.HTTP_409_CONFLICT, f"video {video_id} is not completed", code="video_not_ready"
        )
    key, media_type = _VARIANTS[variant]
    try:
        stored = key(video_id, record.published_attempt)
        return actions.stored_file(services, record, stored, media_type, variant)
    except actions.ActionError as error:
        raise _from_action(error) from error


def _unsupported(what: str) -> None:
    raise OpenAIError(
        status.HTTP_400_BAD_REQUEST,
        f"{what} is not supported: Show-1 makes videos from text prompts only",
        code="unsupported",
    )


@router.post("/videos/{video_id}/remix", responses=_ERRORS, summary="Not supported (400)")
def remix_video(video_id: str, owner: OwnerDep) -> None:
    _unsupported("remix")


@router.post("/videos/edits", responses=_ERRORS, summary="Not supported (400)")
def edit_video(owner: OwnerDep) -> None:
    _unsupported("editing a video")


@router.post("/videos/extensions", responses=_ERRORS, summary="Not supported (400)")
def extend_video(owner: OwnerDep) -> None:
    _unsupported("extending a video")


@router.post("/videos/characters", responses=_ERRORS, summary="Not supported (400)")
def create_character(owner: OwnerDep) -> None:
    _unsupported("characters")


@router.get("/videos/characters/{character_id}", responses=_ERRORS, summary="Not supported (400)")
def get_character(character_id: str, owner: OwnerDep) -> None:
    _unsupported("characters")


def _is_openai(request: Request) -> bool:
    return request.url.path.startswith(PREFIX + "/") or request.url.path == PREFIX


def install(app: FastAPI) -> None:
    """Mount the face and make every error under its prefix OpenAI's error object (auth, limits and
    validation included); errors elsewhere keep FastAPI's format."""
    app.include_router(router)

    @app.exception_handler(OpenAIError)
    async def openai_error(request: Request, error: OpenAIError) -> JSONResponse:
        return error_response(
            error.status_code, error.message, param=error.param, code=error.code, headers=error.headers
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        if not _is_openai(request):
            return await http_exception_handler(request, error)
        message = error.detail if isinstance(error.detail, str) else json.dumps(error.detail)
        return error_response(error.status_code, message, headers=getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> Response:
        if not _is_openai(request):
            return await request_validation_exception_handler(request, error)
        first = error.errors()[0]
        loc = [part for part in first["loc"] if part not in ("body", "query", "path", "header")]
        return error_response(
            status.HTTP_400_BAD_REQUEST, first["msg"], param=param_name(loc) if loc else None
        )
