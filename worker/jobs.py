"""RQ job functions. Everything a job needs is in its record; the worker process holds the models."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import io
import json
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import numpy as np
import redis
from PIL import Image
from rq import Queue
from rq.timeouts import JobTimeoutException

from app.jobs import CANCELED, ENCODING, FAILED, QUEUED, RUNNING, SUCCEEDED, JobRecord, utc_now
from app.logs import current_job_id
from app.media import MediaLimits, clip_frames, keyframe_image
from app.memory import live_workers, memory_refusal
from app.queue import hand_over
from app.storage import (
    StorageError,
    attempt_keys,
    preview_key,
    record_key,
    spritesheet_key,
    thumbnail_key,
    video_key,
)
from app.views import preview_path
from app.webhooks import notify
from models.cost import stage_costs
from models.stage_outputs import DRAFT_LAST_STAGE, FINAL_FRAMES, LATENT_SR, ResumePoint, job_stages
from worker import runtime
from worker.reporting import AttemptSuperseded, JobProgress
from worker.stage_outputs import StoredStageOutputs

log = logging.getLogger("show1.worker")
T = TypeVar("T")

BACKOFF_SECONDS = (1, 2, 5, 10, 20, 30)
SPRITE_FRAMES = 16  # at most this many frames, evenly spaced, first and last included
SPRITE_COLUMNS = 4
SPRITE_TILE_WIDTH = 256  # frames wider than this are scaled down to it in the sheet


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def thumbnail_jpeg(frames: np.ndarray) -> bytes:
    """The last frame at full size: the picture a finished video settles on."""
    return _jpeg(Image.fromarray(frames[-1]))


def spritesheet_geometry(frame_count: int, height: int, width: int) -> tuple[int, int, int, int]:
    """(tiles, columns, tile height, tile width) of a video's sprite sheet."""
    tiles = min(frame_count, SPRITE_FRAMES)
    tile_width = min(width, SPRITE_TILE_WIDTH)
    tile_height = max(1, round(height * tile_width / width))
    return tiles, min(tiles, SPRITE_COLUMNS), tile_height, tile_width


def spritesheet_jpeg(frames: np.ndarray) -> bytes:
    """Evenly spaced frames in a grid, row by row: for scrubbing previews."""
    count, height, width, _ = frames.shape
    tiles, columns, tile_height, tile_width = spritesheet_geometry(count, height, width)
    rows = -(-tiles // columns)
    sheet = Image.new("RGB", (columns * tile_width, rows * tile_height))
    for tile, index in enumerate(np.linspace(0, count - 1, tiles).round().astype(int)):
        image = Image.fromarray(frames[index]).resize((tile_width, tile_height), Image.Resampling.BILINEAR)
        sheet.paste(image, ((tile % columns) * tile_width, (tile // columns) * tile_height))
    return _jpeg(sheet)


def generate_video(job_id: str) -> str:
    """Run the cascade for one job record; returns the final status.

    Ends normally for cancellation, bad parameters and exhausted memory or time (RQ must not retry
    those); raises only for faults worth another attempt (storage down too long, a crash), which RQ's
    Retry re-runs. Phases: claim an attempt, render the frames, publish the video.
    """
    rt = runtime.current()
    token = current_job_id.set(job_id)
    try:
        record = rt.store.get(job_id)
        if record is None:
            log.warning("job record gone (expired?); nothing to do")
            return "missing"
        if record["cancel_requested"]:
            if rt.store.finish(job_id, CANCELED):
                _notify(job_id, "job.canceled")
            return CANCELED
        params, progress, invalid = _plan(record)
        left = _unless_it_fits(job_id, params, tuple(progress.steps)) if progress else None
        if left is not None:  # for a worker that can hold it, or failed: none can
            return left
        # The ETA from this worker's pace is there from the moment the job shows as running.
        eta = progress.eta_seconds() if progress else None
        attempt = rt.store.claim(job_id, rt.name, eta_seconds=eta)
        if not attempt:
            log.info("job is %s; not running it", record.status)
            return record.status
        _notify(job_id, "job.started", only_if="webhook_on_start")
        if progress is None:
            return _fail(job_id, "invalid_parameters", attempt, detail=invalid)
        progress.attempt = attempt
        started = time.monotonic()
        outcome = _render(record, params, progress, attempt)
        if isinstance(outcome, str):  # the job ended without a video
            return outcome
        return _publish_video(record, params, outcome, attempt, started)
    finally:
        current_job_id.reset(token)


def _plan(record: JobRecord) -> tuple[Any, JobProgress | None, str]:
    """The job's parameters and its progress over the stages it runs, or why its parameters are invalid."""
    from models import GenerationParams, steps_per_stage

    rt = runtime.current()
    try:
        params = GenerationParams.from_dict(record["params"])
    except (TypeError, ValueError) as error:
        return None, None, str(error)
    # Only the stages the job runs: its ETA and progress must not wait for stages it never runs.
    run = job_stages(record_entry_point(record), draft=bool(record["draft"]))
    progress = JobProgress(
        rt.store,
        record.id,
        {stage: steps for stage, steps in steps_per_stage(params).items() if stage in run},
        {stage: cost for stage, cost in stage_costs(params).items() if stage in run},
        rt.throughput,
    )
    return params, progress, ""


def _unless_it_fits(job_id: str, params: Any, stages: tuple[str, ...]) -> str | None:
    """None when this worker can hold the job (models/memory.py); else it is left, unclaimed, for a
    live worker that can (after a pause, so that one takes it first), or failed when none can."""
    rt = runtime.current()
    refusal = memory_refusal(params, stages, [rt.memory])
    if refusal is None:
        return None
    if any(w.holds(params, stages) for w in live_workers(rt.store, rt.settings.heartbeat_seconds)):
        log.info("%s; left for a worker that can hold it", refusal.message())
        hand_over(Queue(rt.settings.queue_name, connection=rt.redis), job_id, rt.settings)
        time.sleep(rt.settings.heartbeat_seconds)
        return QUEUED
    return _fail(job_id, "insufficient_memory", None, detail=refusal.message())


def record_entry_point(record: JobRecord) -> str:
    """What a job starts from; records from before entry points were stored say it by draft_id."""
    return record["entry_point"] or ("draft_id" if record["draft_id"] else "prompt")


def _render(record: JobRecord, params: Any, progress: JobProgress, attempt: int) -> Any:
    """The cascade's result for this attempt, or the job's final status when it ends without one."""
    from models import GenerationCancelled

    rt = runtime.current()
    job_id = record.id
    stored = None
    if rt.settings.stage_outputs:
        ttl = rt.settings.draft_ttl_seconds if record["draft"] else rt.settings.job_record_ttl_seconds
        stored = StoredStageOutputs(rt.store, rt.storage, job_id, attempt, record["stages"] or {}, ttl)
    try:
        return rt.cascade.generate(
            params,
            progress=progress,
            on_stage_output=_preview_uploader(job_id, attempt),
            stored=stored,
            last_stage=DRAFT_LAST_STAGE if record["draft"] else LATENT_SR,
            on_resume=_resume_recorder(job_id, attempt),
            **_user_frames(record, params),
        )
    except AttemptSuperseded:
        return _discard_attempt(job_id, attempt)
    except GenerationCancelled:
        log.info("canceled between denoising steps")
        if rt.store.finish(job_id, CANCELED, attempt=attempt):
            _notify(job_id, "job.canceled")
        return CANCELED
    except ValueError as error:
        return _fail(job_id, "invalid_parameters", attempt, detail=str(error))
    except Exception as error:
        if not is_out_of_resources(error):
            raise
        log.warning("out of memory or time: %s", error)
    # Out of memory or time. The same job would fail the same way on any retry: it fails now, for good.
    # What the stage held was referenced by the exception's frames, gone now that it is handled: hand
    # it back before this worker takes the next job.
    release_memory()
    return _fail(job_id, "resource_exhausted", attempt)


def release_memory() -> None:
    """Return what a failed job left behind: unreachable tensors, the CUDA caching allocator's free
    blocks, and on glibc the heap's free pages."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _user_frames(record: JobRecord, params: Any) -> dict[str, Any]:
    """A storyboard's keyframes (model space) or an upscale's clip (uint8 at the output size), from the
    input files stored with the job, converted as app/media.py says; nothing for other jobs.

    The API ran the same conversion on the same bytes before queueing the job, so it succeeds here; a
    file that storage cannot give back raises StorageError, which RQ retries."""
    keys = record["input_keys"] or []
    if not keys:
        return {}
    from models.pipelines.latent_sr import from_uint8_frames

    rt = runtime.current()
    settings = rt.settings
    limits = MediaLimits(settings.max_input_pixels, settings.max_input_frames, settings.max_input_seconds)
    files = [_with_retries(f"read of {key}", partial(rt.storage.get, key), StorageError) for key in keys]
    if record_entry_point(record) == "input_video":
        return {"clip": clip_frames(files[0], params.output_size, limits)[0]}
    keyframes = np.stack([keyframe_image(data, params.keyframe_size, limits)[0] for data in files])
    return {"keyframes": from_uint8_frames(keyframes)}


def _publish_video(record: JobRecord, params: Any, result: Any, attempt: int, started: float) -> str:
    """Encode, upload this attempt's files and publish them as the job's result (once)."""
    from models.video import encode_mp4

    rt = runtime.current()
    job_id = record.id
    if not _with_redis_retries(
        lambda: rt.store.update_running(job_id, {"stage": ENCODING, "eta_seconds": None}, attempt)
    ):
        return _discard_attempt(job_id, attempt)
    mp4 = encode_mp4(result.frames, fps=params.fps)
    frames, height, width, _ = result.frames.shape
    document = {
        "id": job_id,
        "attempt": attempt,
        "params": params.to_dict(),
        "inputs": record["inputs"],
        "timings": {**result.timings, "total": round(time.monotonic() - started, 3)},
        "models": rt.cascade.model_info,
        "worker": rt.name,
        "device": str(rt.cascade.device),
        "dtype": str(rt.cascade.dtype).removeprefix("torch."),
        "memory_mode": rt.cascade.memory_mode,
        "finished_at": utc_now(),
    }
    # This attempt's own files; the record points at them only if this attempt wins the publish.
    _upload(video_key(job_id, attempt), mp4, "video/mp4")
    _upload(thumbnail_key(job_id, attempt), thumbnail_jpeg(result.frames), "image/jpeg")
    _upload(spritesheet_key(job_id, attempt), spritesheet_jpeg(result.frames), "image/jpeg")
    document_bytes = json.dumps(document, indent=2).encode()
    _upload(record_key(job_id, attempt), document_bytes, "application/json")
    result_fields = {
        "url": "",
        "content_type": "video/mp4",
        "bytes": len(mp4),
        "width": width,
        "height": height,
        "frames": frames,
        "fps": params.fps,
        "draft": bool(record["draft"]),
    }
    published = _with_redis_retries(
        lambda: rt.store.publish(job_id, attempt, result_fields, timings=document["timings"])
    )
    if not published:
        return _not_published(job_id, attempt)
    _notify(job_id, "job.succeeded")
    return SUCCEEDED


def resume_view(point: ResumePoint) -> dict[str, Any]:
    """Where an attempt resumed, as the job object says it: a stage (and window), or `encoding` when
    the final frames were stored."""
    if point.stage == FINAL_FRAMES:
        return {"stage": ENCODING}
    return point.to_dict()


def _resume_recorder(job_id: str, attempt: int) -> Callable[[ResumePoint], None]:
    def record_resume(point: ResumePoint) -> None:
        log.info("resuming from %s", point)
        with contextlib.suppress(redis.RedisError):  # only what the client sees; the run goes on
            runtime.current().store.update_running(job_id, {"resumed_from": resume_view(point)}, attempt)

    return record_resume


def _not_published(job_id: str, attempt: int) -> str:
    """The publish was refused: a cancel came first (it wins), or another attempt holds the job."""
    rt = runtime.current()
    record = rt.store.get(job_id)
    if record is not None and record.status == RUNNING and int(record["attempts"]) == attempt:
        return _cancel_before_publish(job_id, attempt)
    return _discard_attempt(job_id, attempt)


def _discard_attempt(job_id: str, attempt: int) -> str:
    """An attempt that lost its job (frozen past its heartbeat, then resumed): its files go, and the
    record, another attempt's now, stays as it is."""
    rt = runtime.current()
    log.warning("attempt %d no longer holds the job; its output is discarded", attempt)
    _remove_files(job_id, attempt)
    record = rt.store.get(job_id)
    return record.status if record else "missing"


def _remove_files(job_id: str, attempt: int) -> None:
    for key in attempt_keys(job_id, attempt):
        with contextlib.suppress(StorageError):
            runtime.current().storage.delete(key)


def _cancel_before_publish(job_id: str, attempt: int) -> str:
    """A cancel that came while the video was encoded or uploaded wins: no video, a canceled job."""
    rt = runtime.current()
    if rt.store.finish(job_id, CANCELED, attempt=attempt):
        log.info("canceled before the video was published; its files are removed")
        _remove_files(job_id, attempt)
        _notify(job_id, "job.canceled")
        return CANCELED
    return _discard_attempt(job_id, attempt)


def on_job_failure(job: Any, connection: Any, exc_type: type, exc_value: BaseException, tb: Any) -> None:
    """RQ failure callback, also called for jobs abandoned by a killed worker.

    With retries left the job goes back to queued (RQ re-enqueues it); otherwise the record fails, so
    no job is left `running` with nobody running it.
    """
    rt = runtime.current()
    job_id = job.id
    reason = f"{exc_type.__name__}: {exc_value}".strip(": ")
    if job.retries_left:
        log.warning(
            "attempt failed (%s); %d retries left", reason, job.retries_left, extra={"job_id": job_id}
        )
        rt.store.requeue(job_id, reason)
        return
    code = "worker_lost" if exc_type.__name__ == "AbandonedJobError" else "internal_error"
    if isinstance(exc_value, StorageError):
        code = "storage_unavailable"
    record = rt.store.get(job_id)
    if _fail(job_id, code, attempts=record["attempts"] if record else "all") == FAILED:
        log.error("job failed for good: %s", reason, extra={"job_id": job_id})


# What a client reads in `error.message`; the exceptions themselves stay in the worker's log.
USER_MESSAGES = {
    "invalid_parameters": "these parameters cannot be rendered: {detail}",
    "resource_exhausted": (
        "the video needs more memory or time than a worker has; ask for smaller sizes, fewer keyframes "
        "or fewer steps"
    ),
    "insufficient_memory": (
        "no worker can hold this video: {detail}; ask for smaller sizes or fewer keyframes"
    ),
    "storage_unavailable": "video storage was unavailable, also on retry; submit the job again later",
    "worker_lost": (
        "the worker process was lost (killed or crashed) while running this video, and no attempt is "
        "left ({attempts} made); a video that needs more memory than a worker has ends this way: ask "
        "for smaller sizes or fewer keyframes, or submit it again"
    ),
    "internal_error": "an internal error stopped this video; it is logged under the job id",
}


def is_out_of_resources(error: BaseException) -> bool:
    """Out of GPU or host memory, or past the job's time limit: deterministic for a given job."""
    import torch

    if isinstance(error, MemoryError | JobTimeoutException | torch.OutOfMemoryError):
        return True
    # PyTorch's CPU allocator raises a plain RuntimeError.
    return isinstance(error, RuntimeError) and "can't allocate memory" in str(error)


def _fail(job_id: str, code: str, attempt: int | None = None, **details: object) -> str:
    """Fail the job (if `attempt` still holds it) with `code` and its message, filled from `details`."""
    rt = runtime.current()
    if rt.store.fail(job_id, code, USER_MESSAGES[code].format(**details), attempt):
        _notify(job_id, "job.failed")
        return FAILED
    record = rt.store.get(job_id)
    return record.status if record else "missing"


def _with_retries(what: str, write: Callable[[], T], errors: type[Exception]) -> T:
    """A write after the video exists: wait out a storage outage or a Redis restart (usually short)
    rather than lose an expensive video; the last failure is raised."""
    for attempt, delay in enumerate((*BACKOFF_SECONDS, None), start=1):
        try:
            return write()
        except errors as error:
            if delay is None:
                raise
            log.warning("%s failed (attempt %d): %s; retrying in %ss", what, attempt, error, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def _with_redis_retries(write: Callable[[], T]) -> T:
    return _with_retries("job record write", write, redis.RedisError)


def _upload(key: str, data: bytes, content_type: str) -> None:
    storage = runtime.current().storage
    _with_retries(f"upload of {key}", lambda: storage.put(key, data, content_type), StorageError)


def _preview_uploader(job_id: str, attempt: int) -> Callable[[str, Any], None]:
    def on_stage_output(stage: str, video: Any) -> None:
        if stage != "keyframes":
            return
        from models.pipelines.latent_sr import to_uint8_frames

        strip = np.concatenate(list(to_uint8_frames(video)), axis=1)
        buffer = io.BytesIO()
        Image.fromarray(strip).save(buffer, format="PNG")
        rt = runtime.current()
        try:
            rt.storage.put(preview_key(job_id, attempt), buffer.getvalue(), "image/png")
        except StorageError as error:
            log.warning("keyframe preview not uploaded: %s", error)
            return
        # An API path rather than a presigned URL, which would expire while the record lives on; the API
        # makes it a URL for each reader (app/views.py).
        try:
            preview = {"preview_url": preview_path(job_id), "preview_attempt": attempt}
            rt.store.update_running(job_id, preview, attempt)
        except redis.RedisError as error:
            log.warning("preview URL not recorded: %s", error)

    return on_stage_output


def _notify(job_id: str, event: str, only_if: str | None = None) -> None:
    rt = runtime.current()
    notify(rt.webhooks, rt.store, rt.storage, rt.settings.public_base_url, job_id, event, only_if)
