"""Translation between OpenAI's Videos API and Show-1's jobs: requests in, job records out.

Pure functions: no Redis, no HTTP. The mapping (README, "OpenAI-compatible API"):
- `model` must be `show-1`;
- `seconds` -> keyframes: a video of k keyframes has 4k - 3 frames, so k = round((seconds x fps + 3) / 4),
  and `seconds` in responses is the duration produced, frames / fps;
- `size` "WxH" -> the output size, among the supported sizes (settings may add more); in responses
  `size` is the SDKs' size nearest to the output size (`sdk_size`) and `output_size` the exact one;
- job statuses: queued -> queued, running -> in_progress, succeeded -> completed, failed and canceled ->
  failed (canceled with `error.code` "canceled").
"""

from __future__ import annotations

import math
import re
import time
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from app.jobs import CANCELED, FAILED, QUEUED, RUNNING, SUCCEEDED, TERMINAL, JobRecord
from app.openai_schemas import MODEL, SDK_SIZES, EventData, Video, VideoError, VideoEvent
from app.schemas import VideoRequest
from app.settings import Settings
from app.views import absolute_url

STATUS = {
    QUEUED: "queued",
    RUNNING: "in_progress",
    SUCCEEDED: "completed",
    FAILED: "failed",
    CANCELED: "failed",
}
# Show-1's published output size joins the SDKs' four; a strict SDK client parses only those four.
SUPPORTED_SIZES = (*SDK_SIZES, "576x320")
DEFAULT_SECONDS = 4.0  # OpenAI's default clip length
# Show-1's drafts speak the /v1 face only: an OpenAI `Video` has no low-resolution state to show.
DRAFT_FIELDS = ("draft", "draft_id")
UNSUPPORTED_FIELDS = ("character_ids", "remix_video_id", "video", "extend_video_id")
# OpenAI's one image, meant as the first frame: Show-1 has no stage that takes a single image.
INPUT_REFERENCE_MESSAGE = (
    "input_reference is not supported: Show-1 cannot start a video from one image; it needs two or more "
    "keyframe images (keyframe_images, in order: the interpolation model fills the frames between them)"
)
_SIZE = re.compile(r"^([0-9]{1,5})x([0-9]{1,5})$")
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\[[A-Za-z0-9_]*\])*$")
_BRACKETS = re.compile(r"\[([^\[\]]*)\]")
_DEFAULT_FPS = VideoRequest.model_fields["fps"].default


class InvalidRequest(Exception):
    """A request OpenAI's clients would see as a 400 `invalid_request_error` naming `param`."""

    def __init__(self, param: str | None, message: str, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.param, self.message, self.code = param, message, code


def nest_form_fields(items: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """Form fields with bracketed names (`steps[sr1]=2`, as the SDKs flatten `extra_body` into a
    multipart body) as the nested object a JSON body would have (`{"steps": {"sr1": "2"}}`)."""
    nested: dict[str, Any] = {}
    for name, value in items:
        if not _FIELD_NAME.match(name):
            raise InvalidRequest(name or None, f"malformed form field name {name!r}")
        head = name.split("[", 1)[0]
        path = [head, *_BRACKETS.findall(name[len(head) :])]
        if path[-1] == "":  # `tags[]=a&tags[]=b`: a list
            path.pop()
            target = _descend(nested, path[:-1], name)
            target.setdefault(path[-1], [])
            if not isinstance(target[path[-1]], list):
                raise InvalidRequest(name, f"{path[-1]} given both as a list and otherwise")
            target[path[-1]].append(value)
            continue
        target = _descend(nested, path[:-1], name)
        if isinstance(target.get(path[-1]), dict):
            raise InvalidRequest(name, f"{name} given both as an object and as a value")
        target[path[-1]] = value
    return nested


def _descend(nested: dict[str, Any], path: list[str], name: str) -> dict[str, Any]:
    for part in path:
        nested = nested.setdefault(part, {})
        if not isinstance(nested, dict):
            raise InvalidRequest(name, f"{name} given both as an object and as a value")
    return nested


def param_name(loc: Iterable[Any]) -> str:
    """A pydantic location as OpenAI names parameters: `steps[sr1]`."""
    head, *rest = [str(part) for part in loc if part != "body"] or ["body"]
    return head + "".join(f"[{part}]" for part in rest)


def allowed_sizes(settings: Settings) -> tuple[str, ...] | None:
    """The `size` values accepted; None: any size the cascade can make."""
    if "*" in settings.openai_extra_sizes:
        return None
    return (*SUPPORTED_SIZES, *settings.openai_extra_sizes)


def to_video_request(fields: dict[str, Any], settings: Settings) -> VideoRequest:
    """An OpenAI create body (plus Show-1's fields beside it) as the /v1 request, validated by the same
    schema; raises InvalidRequest naming the offending parameter."""
    fields = dict(fields)
    if "input_reference" in fields:
        raise InvalidRequest("input_reference", INPUT_REFERENCE_MESSAGE, "unsupported")
    for name in UNSUPPORTED_FIELDS:
        if name in fields:
            message = f"{name} is not supported: Show-1 makes videos from text only"
            raise InvalidRequest(name, message, "unsupported")
    for name in DRAFT_FIELDS:
        if name in fields:
            raise InvalidRequest(
                name, f"{name}: drafts are made and finished through /v1/videos", "unsupported"
            )
    model = fields.pop("model", MODEL)
    if model != MODEL:
        raise InvalidRequest("model", f"model must be {MODEL!r}, got {model!r}", "model_not_found")
    seconds, size = fields.pop("seconds", None), fields.pop("size", None)

    if size is not None and "output_size" in fields:
        raise InvalidRequest("size", "give size or output_size, not both")
    if size is None and "output_size" not in fields:
        size = settings.openai_default_size
    if size is not None:
        fields["output_size"] = _output_size(size, settings)
        height, width = fields["output_size"]["height"], fields["output_size"]["width"]
        if "keyframe_size" not in fields and height > width:
            # Portrait: keyframes in the same orientation rather than stretched.
            fields["keyframe_size"] = {"height": 64, "width": 40}

    if seconds is not None and "num_keyframes" in fields:
        raise InvalidRequest("seconds", "give seconds or num_keyframes, not both")
    if seconds is not None and "input_video" in fields:
        raise InvalidRequest("seconds", "an upscale keeps the clip's length: give no seconds")
    # A storyboard's images, an upscale's clip, say how long the video is, unless seconds are given.
    carries_length = "keyframe_images" in fields or "input_video" in fields
    if "num_keyframes" not in fields and (seconds is not None or not carries_length):
        fields["num_keyframes"] = 8  # a placeholder until fps is known
        fps = _validate(fields).fps
        fields["num_keyframes"] = _keyframes(DEFAULT_SECONDS if seconds is None else seconds, fps, settings)
    request = _validate(fields)
    if request.num_keyframes > settings.max_keyframes:
        raise InvalidRequest("num_keyframes", f"at most {settings.max_keyframes} keyframes")
    return request


def _validate(fields: dict[str, Any]) -> VideoRequest:
    try:
        return VideoRequest.model_validate(fields)
    except ValidationError as error:
        first = error.errors()[0]
        raise InvalidRequest(param_name(first["loc"]), first["msg"]) from error


def _output_size(size: Any, settings: Settings) -> dict[str, int]:
    match = _SIZE.match(size) if isinstance(size, str) else None
    if match is None:
        raise InvalidRequest("size", f"size must be WIDTHxHEIGHT such as 1280x720, got {size!r}")
    allowed = allowed_sizes(settings)
    if allowed is not None and size not in allowed:
        raise InvalidRequest("size", f"size must be one of {', '.join(allowed)}, got {size!r}")
    width, height = int(match[1]), int(match[2])
    return {"height": height, "width": width}


def _keyframes(seconds: Any, fps: int, settings: Settings) -> int:
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        value = float("nan")
    if not value > 0:
        raise InvalidRequest("seconds", f"seconds must be a positive number, got {seconds!r}")
    keyframes = max(2, round((value * fps + 3) / 4))
    if keyframes > settings.max_keyframes:
        longest = (4 * settings.max_keyframes - 3) / fps
        raise InvalidRequest("seconds", f"at most {longest:g} seconds at {fps} fps, got {seconds!r}")
    return keyframes


def unix_seconds(timestamp: str | None) -> int | None:
    if not timestamp:
        return None
    return int(datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp())


def duration(frames: int, fps: int) -> str:
    return f"{frames / fps:g}"


def sdk_size(width: int, height: int) -> str:
    """The SDKs' size nearest to an output size: same orientation, then the closest aspect ratio, then
    the closest area. `size` in a response is always one of the SDKs' four, so a client with strict
    validation parses every job, made through either face; the exact size is `output_size` beside it."""

    def distance(size: str) -> tuple[bool, float, float]:
        sdk_width, sdk_height = map(int, size.split("x"))
        other_orientation = (sdk_width >= sdk_height) != (width >= height)
        aspect = abs(math.log((sdk_width / sdk_height) / (width / height)))
        return other_orientation, aspect, abs(math.log(sdk_width * sdk_height / (width * height)))

    return min(SDK_SIZES, key=distance)


def render_video(
    record: JobRecord, settings: Settings, base_url: str, queue_position: int | None = None
) -> Video:
    """The job as OpenAI's `Video`, with Show-1's fields beside OpenAI's; URLs under `base_url`."""
    params = record["params"] or {}
    height, width = params["output_size"]
    fps = params["fps"]
    result = record["result"] or {}
    frames = result.get("frames") or params.get("clip_frames") or 4 * params["num_keyframes"] - 3
    status = record.status
    progress = 100 if status == SUCCEEDED else min(99, int(float(record["progress"] or 0.0) * 100))
    completed_at = unix_seconds(record["finished_at"]) if status in TERMINAL else None
    error = None
    if status == CANCELED:
        error = VideoError(code="canceled", message="the video was canceled before it was finished")
    elif status == FAILED:
        stored = record["error"] or {}
        error = VideoError(code=stored.get("code", "failed"), message=stored.get("message", "failed"))
    return Video(
        id=record.id,
        status=STATUS[status],
        progress=progress,
        created_at=unix_seconds(record["created_at"]) or 0,
        completed_at=completed_at,
        # The record (and with it the API's access to the files) lives this long after its last change.
        expires_at=None if completed_at is None else completed_at + settings.job_record_ttl_seconds,
        seconds=duration(frames, fps),
        size=sdk_size(width, height),
        output_size=f"{width}x{height}",
        prompt=params.get("prompt"),
        error=error,
        seed=params.get("seed"),
        negative_prompt=params.get("negative_prompt"),
        num_keyframes=params.get("num_keyframes"),
        frames=frames,
        fps=fps,
        stage=record["stage"],
        eta_seconds=record["eta_seconds"],
        queue_position=queue_position,
        attempts=record["attempts"] or 0,
        preview_url=absolute_url(base_url, record["preview_url"]),
        webhook_url=record["webhook_url"],
        params=params,
    )


def poll_after_ms(record: JobRecord) -> int:
    """How long a client should wait before polling again: a fifth of the remaining time, 0.5 to 10 s."""
    eta = record["eta_seconds"]
    if eta is None:
        return 2000 if record.status == QUEUED else 1000
    return int(min(max(eta * 1000 / 5, 500), 10_000))


def video_event(job_id: str, status: str) -> dict[str, Any] | None:
    """OpenAI's webhook event for a job that ended; None for states OpenAI sends no event for."""
    if status not in TERMINAL:
        return None
    kind = "video.completed" if status == SUCCEEDED else "video.failed"
    event = VideoEvent(
        id=f"evt_{uuid.uuid4().hex}", type=kind, created_at=int(time.time()), data=EventData(id=job_id)
    )
    return event.model_dump(mode="json")
