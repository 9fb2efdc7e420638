"""Every setting of the service, read from `SHOW1_*` environment variables (or a `.env` file).

Defaults make a single machine work with nothing configured: local Redis, local storage, open API.
"""

from __future__ import annotations

import base64
import binascii
from functools import lru_cache
from ipaddress import ip_network
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from models.memory import DEFAULT_WORKING_BYTES, MemoryMode
from models.params import KeyframeDropout

ENV_PREFIX = "SHOW1_"
# What example files (.env.example, deploy/secret.yaml) hold where a secret goes; never accepted as one.
PLACEHOLDER_MARK = "change-me"
SECRET_ADVICE = (
    "set a random value (`show1 secrets` prints fresh ones for SHOW1_API_KEYS, SHOW1_WEBHOOK_SECRET and "
    "the S3/MinIO secret key)"
)


class Settings(BaseSettings):
    # An empty variable (`-e SHOW1_MODELS_DIR=`, `KEY=` in .env) means unset: the default applies.
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        extra="ignore",
        env_ignore_empty=True,
        hide_input_in_errors=True,  # a refused setting may be a secret: name it, never print it
    )

    # Queue and job records
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis holding the queue and job records.")
    queue_name: str = Field("show1", description="RQ queue the API fills and the GPU workers drain.")
    key_prefix: str = Field("show1", description="Prefix of every Redis key the service writes.")
    job_timeout_seconds: int = Field(3600, ge=10, description="A job running longer than this is failed.")
    job_retries: int = Field(2, ge=0, le=10, description="Re-runs after a worker crash or storage fault.")
    job_record_ttl_seconds: int = Field(
        7 * 24 * 3600,
        ge=3600,
        description="How long a job's record and its files (video, preview, thumbnail, sprite sheet) are "
        "kept after the job's last change (deploy/README.md: the S3 lifecycle rule).",
    )

    # API
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated bearer API keys. Empty: the API is open (development only).",
    )
    public_base_url: str = Field(
        "",
        description="Base URL clients reach the API at (result and preview URLs, webhooks); empty: the "
        "request's own (forwarded headers from trusted_proxies only).",
    )
    rate_limit_per_minute: int = Field(600, ge=1, description="Requests per minute allowed per API key.")
    auth_failures_per_minute: int = Field(
        30, ge=1, description="Failed authentications per client address per minute before 429."
    )
    max_jobs_in_flight_per_key: int = Field(4, ge=1, description="Queued plus running jobs per API key.")
    max_prompt_chars: int = Field(1000, ge=1, description="Longest accepted prompt, in characters.")
    max_request_bytes: int = Field(16384, ge=1024, description="Largest accepted request body.")
    max_keyframes: int = Field(16, ge=2, description="Most keyframes a job may ask for (frames = 4k - 3).")
    draft_ttl_seconds: int = Field(
        7 * 24 * 3600,
        ge=3600,
        description="How long a draft's stage outputs are kept for finishing it (other jobs' stage "
        "outputs expire with their record, after job_record_ttl_seconds).",
    )
    max_job_cost: float = Field(
        4.0,
        gt=0,
        description="Most one job may cost, in paper-default videos (UNet FLOPs, models/cost.py).",
    )
    # Inputs: a storyboard's images, an upscale's clip (app/inputs.py, app/media.py)
    max_input_bytes: int = Field(
        8 * 2**20, ge=1024, description="Largest accepted input file (an image or a clip), in bytes."
    )
    max_inputs_bytes: int = Field(
        32 * 2**20,
        ge=1024,
        description="Most bytes of input files one request may carry; the create routes' body may be this "
        "much (4/3 of it as data: URLs) larger than max_request_bytes.",
    )
    max_input_pixels: int = Field(
        4096 * 4096, ge=64, description="Most pixels an input image or clip frame may have (by its header)."
    )
    max_input_frames: int = Field(65, ge=1, description="Most frames an input clip may have.")
    max_input_seconds: float = Field(20.0, gt=0, description="Longest input clip, in seconds.")
    input_decode_seconds: float = Field(
        20.0, gt=0, description="Deadline for checking a request's input files in a child process."
    )
    input_decode_memory_bytes: int = Field(
        2 * 2**30, ge=256 * 2**20, description="Address-space limit of that child process."
    )
    input_fetch_seconds: float = Field(
        10.0, gt=0, description="Deadline for fetching one input URL, connecting to the last byte."
    )
    input_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated hosts input URLs may name although they resolve to private addresses "
        "(and may serve over http).",
    )
    demo_defaults: bool = Field(
        False,
        description="Requests that do not set them get demo sizes and steps (show1 up on the tiny preset).",
    )
    keyframe_dropout: KeyframeDropout = Field(
        "reference",
        description="Default keyframe_dropout of a job: reference (as run_inference.py) or off (eval mode).",
    )

    # Storage
    storage_backend: Literal["local", "s3"] = Field("local", description="Where videos are stored.")
    local_storage_dir: Path = Field(Path("var/storage"), description="Folder of the local storage backend.")
    s3_endpoint_url: str = Field("", description="S3-compatible endpoint; empty: AWS.")
    s3_public_endpoint_url: str = Field(
        "", description="Endpoint clients download from (presigned URLs); empty: s3_endpoint_url."
    )
    s3_bucket: str = Field("show1-videos", description="Bucket the videos go to.")
    s3_region: str = Field("us-east-1", description="S3 region.")
    s3_access_key_id: str = Field("", description="S3 access key; empty: boto3's default chain.")
    s3_secret_access_key: str = Field("", description="S3 secret key.")
    s3_addressing_style: Literal["path", "virtual", "auto"] = Field(
        "path", description="Bucket addressing; MinIO and most self-hosted servers need path."
    )
    presign_expiry_seconds: int = Field(
        3600, ge=1, le=7 * 24 * 3600, description="Lifetime of download URLs."
    )

    # Worker
    models_dir: Path | None = Field(
        None, description="Folder holding the five checkpoint folders; unset: the tiny demo preset."
    )
    device: str = Field("", description="torch device for the cascade; empty: cuda if present, else cpu.")
    dtype: Literal["", "float16", "bfloat16", "float32"] = Field(
        "", description="Model dtype; empty: float16 on CUDA, float32 on CPU."
    )
    memory_mode: MemoryMode = Field(
        "resident", description="GPU memory mode of the cascade (deploy/README.md has the trade-offs)."
    )
    worker_alive_file: Path = Field(
        Path("/tmp/show1-worker.alive"),
        description="Touched every heartbeat; a liveness probe reads its age.",
    )
    stage_outputs: bool = Field(
        True,
        description="Store each stage's output while a job runs, so a retried attempt resumes where the "
        "last one was (drafts need it).",
    )
    heartbeat_seconds: int = Field(
        10, ge=2, description="Worker heartbeat; a silent worker's job is requeued after about 3x this."
    )

    # Memory (models/memory.py estimates a job's peak; docs/design.md "Memory")
    worker_memory_gb: float | None = Field(
        None,
        gt=0,
        description="Memory a worker may use in all: its GPU's on CUDA, RAM on a CPU (the loaded models "
        "included). Unset: detected (the device's free memory at start; on a CPU the available RAM, "
        "within the cgroup's limit).",
    )
    memory_budget_gb: float | None = Field(
        None,
        gt=0,
        description="With no worker alive, admission refuses a job whose estimated peak is over this "
        "(in a worker's terms: with the last announced worker's models). Unset: that worker's own memory.",
    )
    working_memory_mb: int = Field(
        DEFAULT_WORKING_BYTES // 2**20,
        ge=16,
        description="The most one chunked layer of a UNet may hold at once (models/chunking.py): smaller "
        "is leaner and, far below the default, slower.",
    )

    # Webhooks
    webhook_secret: str = Field(
        "",
        description="Standard Webhooks signing secret, `whsec_` + base64 of 24-64 random bytes "
        "(`show1 webhook-secret` makes one); empty: deliveries unsigned.",
    )
    webhook_timeout_seconds: float = Field(
        5.0, gt=0, description="Deadline of one webhook delivery, connecting to the last byte."
    )
    webhook_max_attempts: int = Field(6, ge=1, description="Deliveries tried before a webhook is dropped.")
    webhook_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated hosts webhooks may target although they resolve to private addresses.",
    )

    # OpenAI-compatible face (/openai/v1)
    openai_default_size: str = Field(
        "1280x720", description="Output size (WxH) of an /openai/v1 video created without `size`."
    )
    openai_extra_sizes: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated WxH sizes /openai/v1 accepts beyond the built-in ones; `*`: any "
        "size the cascade can make (multiples of 8, 8 to 2048).",
    )

    # Public URLs and secrets (issue 21)
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["127.0.0.1", "::1"],
        description="Comma-separated addresses or networks (CIDR) of reverse proxies whose "
        "X-Forwarded-Proto, -Host and -For headers are believed; `*`: any (only where nothing else "
        "reaches the API).",
    )

    # Logs
    log_level: str = Field("INFO", description="Python log level.")
    log_format: Literal["json", "text"] = Field("json", description="Log line format.")

    @field_validator(
        "api_keys", "webhook_allowed_hosts", "input_allowed_hosts", "trusted_proxies", mode="before"
    )
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @field_validator("openai_extra_sizes", mode="before")
    @classmethod
    def _split_sizes(cls, value: object) -> object:
        if isinstance(value, str):
            return [size.strip() for size in value.split(",") if size.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            if entry != "*":
                ip_network(entry, strict=False)  # a ValueError names the bad entry
        return value

    @field_validator("api_keys", "redis_url", "s3_secret_access_key", "webhook_secret")
    @classmethod
    def _not_a_placeholder(cls, value: str | list[str], info: ValidationInfo) -> str | list[str]:
        # An example file's value copied unchanged would be a secret anyone can read: refuse to start.
        for secret in [value] if isinstance(value, str) else value:
            if PLACEHOLDER_MARK in secret.lower():
                raise ValueError(f"{info.field_name} is still the example's placeholder; {SECRET_ADVICE}")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _standard_webhooks_secret(cls, value: str) -> str:
        # Refuse at startup what would otherwise fail at the first delivery, in a worker, silently.
        if not value:
            return value
        encoded = value.removeprefix("whsec_")
        try:
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if not value.startswith("whsec_") or not 24 <= len(key) <= 64:
            raise ValueError("webhook_secret must be whsec_ followed by base64 of 24 to 64 bytes")
        return value

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys)


@lru_cache
def get_settings() -> Settings:
    return Settings()
