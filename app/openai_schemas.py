"""Bodies of the OpenAI-compatible face (`/openai/v1/videos`), shaped as OpenAI's SDKs parse them.

Read from the `openai` Python SDK 3.57.0: types/video.py, video_delete_response.py, pagination.py
(ConversationCursorPage) and webhooks/batch_completed_webhook_event.py for the event shape. The SDKs
validate these strictly when asked (`_strict_response_validation`), so the types match theirs:
unix-second integers, integer progress, string `seconds`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

VideoStatus = Literal["queued", "in_progress", "completed", "failed"]
# The sizes the SDKs' `VideoSize` type names; a strict client refuses any other `size` in a response.
SDK_SIZES = ("720x1280", "1280x720", "1024x1792", "1792x1024")
MODEL = "show-1"


class VideoError(BaseModel):
    code: str = Field(examples=["canceled"])
    message: str


class Video(BaseModel):
    """OpenAI's `Video`, with Show-1's own fields beside its fields (SDK models keep unknown fields)."""

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "id": "4f9c2d0e8b7a4c1d9e3f5a6b7c8d9e0f",
                    "object": "video",
                    "status": "in_progress",
                    "progress": 42,
                    "created_at": 1795000000,
                    "completed_at": None,
                    "expires_at": None,
                    "model": "show-1",
                    "seconds": "4.125",
                    "size": "1280x720",
                    "output_size": "1280x720",
                    "prompt": "A panda taking a selfie",
                    "error": None,
                    "remixed_from_video_id": None,
                    "seed": 345,
                    "stage": "pixel_sr",
                    "eta_seconds": 37.5,
                }
            ]
        }
    }

    id: str
    object: Literal["video"] = "video"
    status: VideoStatus
    progress: int = Field(ge=0, le=100, description="Percent; 100 only once completed.")
    created_at: int = Field(description="Unix seconds.")
    completed_at: int | None = Field(None, description="Unix seconds; when the job ended, however it ended.")
    expires_at: int | None = Field(None, description="Unix seconds after which the job and its files go.")
    model: str = MODEL
    seconds: str = Field(description="Duration produced: frames / fps (frames = 4 x keyframes - 3).")
    size: str = Field(
        description="One of the SDKs' four sizes: the output's own, or the nearest (see output_size)."
    )
    output_size: str = Field(description="The exact output WxH (Show-1 makes sizes beyond the SDKs' four).")
    prompt: str | None = None
    error: VideoError | None = None
    remixed_from_video_id: str | None = None
    # Show-1's own, beside OpenAI's.
    seed: int | None = None
    negative_prompt: str | None = None
    num_keyframes: int | None = None
    frames: int | None = None
    fps: int | None = None
    stage: str | None = None
    eta_seconds: float | None = None
    queue_position: int | None = None
    attempts: int = 0
    preview_url: str | None = None
    webhook_url: str | None = None
    params: dict[str, Any] = Field(default_factory=dict, description="Effective Show-1 parameters.")


class VideoList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Video]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class VideoDeleted(BaseModel):
    id: str
    object: Literal["video.deleted"] = "video.deleted"
    deleted: bool = True


class ErrorBody(BaseModel):
    message: str
    type: str = Field(examples=["invalid_request_error"])
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class EventData(BaseModel):
    id: str


class VideoEvent(BaseModel):
    """OpenAI's `video.completed` / `video.failed` webhook events."""

    id: str
    object: Literal["event"] = "event"
    type: Literal["video.completed", "video.failed"]
    created_at: int
    data: EventData
