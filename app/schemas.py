"""Request and response bodies of the API.

Defaults come from `models.params` (the reference's numbers), so there is one place that knows them;
bounds here keep a single request from occupying a GPU for hours.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator

from app.jobs import JOB_STAGES, JobStatus
from models.params import KEYFRAME_MULTIPLE, GenerationParams, KeyframeDropout, StageGuidance, StageSteps

_STEPS = StageSteps()
_GUIDANCE = StageGuidance()
_SR2_STRENGTH = GenerationParams.__dataclass_fields__["sr2_strength"].default


def _check_input_url(value: str) -> str:
    if not value.startswith(("data:", "https://", "http://")):
        raise ValueError("an input is a data: URL, an https URL, or a file part in a multipart body")
    return value


# An input file's address: each is checked where it stands, so an error names the item.
InputUrl = Annotated[str, AfterValidator(_check_input_url)]

Stage = Literal[JOB_STAGES]


class StepsOverride(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base: int = Field(_STEPS.base, ge=1, le=200, description="Keyframe denoising steps.")
    interp: int = Field(_STEPS.interp, ge=1, le=200, description="Interpolation denoising steps.")
    sr1_image: int = Field(_STEPS.sr1_image, ge=1, le=200, description="IF-II first-frame steps.")
    sr1: int = Field(_STEPS.sr1, ge=1, le=250, description="Pixel super-resolution steps per window.")
    sr2: int = Field(_STEPS.sr2, ge=2, le=150, description="Latent super-resolution scheduler steps.")


class GuidanceOverride(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base: float = Field(_GUIDANCE.base, ge=1.0, le=30.0)
    interp: float = Field(_GUIDANCE.interp, ge=1.0, le=30.0)
    sr1_image: float = Field(_GUIDANCE.sr1_image, ge=1.0, le=30.0)
    sr1: float = Field(_GUIDANCE.sr1, ge=1.0, le=30.0)
    sr2: float = Field(_GUIDANCE.sr2, ge=1.0, le=30.0)


class Size(BaseModel):
    model_config = ConfigDict(extra="forbid")

    height: int = Field(ge=8, le=2048)
    width: int = Field(ge=8, le=2048)


class VideoRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"prompt": "A burning lamborghini driving on rainbow.", "seed": 345},
                {
                    "prompt": "Close up of a cat playing the piano",
                    "num_keyframes": 12,
                    "steps": {"sr1": 100},
                    "webhook_url": "https://example.com/hooks/show1",
                },
            ]
        },
    )

    prompt: str | None = Field(
        None,
        min_length=1,
        description="What the video shows. Required, except when finishing a draft (its prompt is kept).",
        examples=["A panda taking a selfie"],
    )
    negative_prompt: str = Field("", max_length=1000, description="What the pixel stages steer away from.")
    seed: int | None = Field(
        None, ge=0, le=2**63 - 1, description="Random seed; omitted: one is drawn and returned with the job."
    )
    num_keyframes: int = Field(8, ge=2, description="Keyframes; the video has 4k-3 frames (8 -> 29).")
    keyframe_size: Size = Field(
        default_factory=lambda: Size(height=40, width=64),
        description="Keyframe size, sides multiples of 8; SR1 is 4x this.",
    )
    output_size: Size = Field(
        default_factory=lambda: Size(height=320, width=576),
        description="Final video size; both sides multiples of 8.",
    )
    steps: StepsOverride = Field(default_factory=StepsOverride)
    guidance: GuidanceOverride = Field(default_factory=GuidanceOverride)
    fps: int = Field(8, ge=1, le=60, description="Frames per second of the MP4.")
    keyframe_dropout: KeyframeDropout | None = Field(
        None,
        description=(
            "reference: keyframes made as the reference's run_inference.py makes them, with the base "
            "model's dropout active (the published samples were made so); off: deterministic eval mode. "
            "Omitted: the service default (SHOW1_KEYFRAME_DROPOUT)."
        ),
    )
    webhook_url: AnyHttpUrl | None = Field(None, description="POSTed the job object when the job ends.")
    webhook_on_start: bool = Field(False, description="Also call the webhook when a worker starts the job.")
    draft: bool = Field(
        False,
        description="Keyframes and interpolation only: the low-resolution video (4k-3 frames at "
        "keyframe_size) in a fraction of the cost. Finish it with `draft_id` into the very frames a full "
        "job with the same parameters makes.",
    )
    draft_id: str | None = Field(
        None,
        pattern="^[0-9a-f]{32}$",
        description="Finish this succeeded draft of yours: a new job from its stored interpolation, with "
        "the draft's parameters; only the later stages' fields (output_size, steps and guidance of "
        "sr1_image, sr1, sr2, fps, webhooks) may be given.",
    )

    keyframe_images: list[InputUrl] | None = Field(
        None,
        min_length=2,
        max_length=64,
        description="Storyboard to video: 2 to SHOW1_MAX_KEYFRAMES images, in order (data: URLs, https URLs, "
        "or file parts of this name in a multipart body). They become the keyframes (centre-cropped to "
        "keyframe_size, bicubic), the job starts at interpolation and the video has 4k-3 frames.",
    )
    input_video: InputUrl | None = Field(
        None,
        description="Upscale a clip (MP4, MOV or WebM; a data: URL, an https URL or a file part): only the "
        "latent expert stage runs, at output_size, keeping the clip's frames and frame rate (unless fps "
        "is given).",
    )
    sr2_strength: float = Field(
        _SR2_STRENGTH,
        ge=0.1,
        le=1.0,
        description="How much of the schedule the latent expert stage re-renders (SDEdit strength).",
    )

    @field_validator("prompt")
    @classmethod
    def _prompt_has_text(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("prompt must contain non-whitespace text")
        return value

    @field_validator("keyframe_size")
    @classmethod
    def _unet_multiple(cls, value: Size) -> Size:
        if value.height % KEYFRAME_MULTIPLE or value.width % KEYFRAME_MULTIPLE:
            raise ValueError(
                f"keyframe_size height and width must be multiples of {KEYFRAME_MULTIPLE} (the pixel UNets "
                "halve them three times)"
            )
        return value

    @field_validator("output_size")
    @classmethod
    def _latent_multiple(cls, value: Size) -> Size:
        if value.height % 8 or value.width % 8:
            raise ValueError("output_size height and width must be multiples of 8")
        return value


class JobError(BaseModel):
    code: str = Field(examples=["invalid_parameters"])
    message: str


class JobResult(BaseModel):
    url: str = Field(description="Where to download the MP4 (presigned for S3; expires).")
    content_type: str = Field("video/mp4")
    bytes: int
    width: int
    height: int
    frames: int
    fps: int
    draft: bool = Field(False, description="The low-resolution video of a draft.")


class ResumedFrom(BaseModel):
    stage: str = Field(description="The first stage this attempt ran (`encoding`: all frames were stored).")
    window: int | None = Field(None, description="For pixel_sr: the first window this attempt ran.")


class StageProgress(BaseModel):
    step: int
    total: int


class Job(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "4f9c2d0e8b7a4c1d9e3f5a6b7c8d9e0f",
                    "status": "running",
                    "stage": "pixel_sr",
                    "progress": 0.42,
                    "stage_progress": {"pixel_sr": {"step": 120, "total": 500}},
                    "eta_seconds": 37.5,
                    "queue_position": None,
                    "created_at": "2026-11-25T10:00:00.000Z",
                    "started_at": "2026-11-25T10:00:02.000Z",
                    "finished_at": None,
                    "attempts": 1,
                    "params": {"prompt": "A panda taking a selfie", "seed": 345},
                    "error": None,
                    "result": None,
                    "preview_url": "https://storage.example/videos/4f9c.preview.png",
                }
            ]
        }
    )

    id: str
    status: JobStatus
    stage: Stage | None = None
    progress: float = Field(ge=0.0, le=1.0)
    stage_progress: dict[str, StageProgress] = Field(default_factory=dict)
    eta_seconds: float | None = None
    queue_position: int | None = Field(None, description="0-based, while queued.")
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    attempts: int = 0
    cancel_requested: bool = False
    params: dict[str, Any] = Field(description="Effective parameters, seed included: resubmit to reproduce.")
    error: JobError | None = None
    result: JobResult | None = None
    preview_url: str | None = Field(None, description="Keyframe preview, as soon as keyframes exist.")
    webhook_url: str | None = None
    draft: bool = Field(False, description="A draft: keyframes and interpolation only.")
    draft_id: str | None = Field(None, description="The draft this job finishes.")
    stored_stages: list[str] = Field(
        default_factory=list,
        description="Stage outputs kept in storage (a stage, or a pixel-SR window `pixel_sr.N`, or "
        "`frames`): what a retried attempt resumes from and what finishing a draft starts from.",
    )
    resumed_from: ResumedFrom | None = Field(
        None, description="Where the current attempt started, when an earlier one had stored stages."
    )
    job_stages: list[str] = Field(
        default_factory=list,
        description="The stages this job runs: from its entry point (a prompt, keyframe_images, a draft "
        "to finish, an input_video) to its last stage.",
    )
    inputs: dict[str, Any] | None = Field(
        None,
        description="What came in (never the bytes): `keyframe_images` (a list) or `input_video`, each with "
        "bytes, sha256, kind, format, width, height, frames (and fps, codec for a clip).",
    )


class JobList(BaseModel):
    items: list[Job]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page.")


class Problem(BaseModel):
    detail: Any = Field(description="What was wrong; for validation errors a list naming each field.")
