"""What both API faces (`/v1` and `/openai/v1`) do to jobs: submit, cancel, delete, serve stored files.

One implementation of the rules (limits, idempotency, cancellation), raising typed errors that each face
maps to its own wire format; the routes only parse and translate.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import redis
from fastapi import Response, status
from fastapi.responses import FileResponse, RedirectResponse
from rq import Queue
from rq.job import Job
from starlette.concurrency import run_in_threadpool

from app import metrics
from app.deps import DEPENDENCY_RETRY_AFTER_SECONDS, Services
from app.egress import EgressPolicy, ForbiddenTarget
from app.inputs import INPUT_KINDS, InputFile, InputRejected, receive
from app.jobs import ACTIVE, CANCELED, QUEUED, SUCCEEDED, JobRecord, JobStore, new_job_id
from app.memory import GB, last_worker, live_workers, memory_refusal
from app.queue import enqueue_video, remove_queued
from app.schemas import Size, VideoRequest
from app.settings import Settings
from app.storage import LocalStorage, Storage, StorageError, input_key, is_own_stage_output, job_keys
from app.webhooks import notify
from models.cost import REFERENCE_COST, stage_costs
from models.params import (
    DEMO_KEYFRAME_SIZE,
    DEMO_OUTPUT_SIZE,
    DEMO_STEPS,
    GenerationParams,
    StageGuidance,
    StageSteps,
)
from models.stage_outputs import INTERPOLATION, job_stages

IDEMPOTENCY_TTL_SECONDS = 24 * 3600
log = logging.getLogger("show1.api")


class ActionError(Exception):
    """A request the rules refuse; `status_code` is the HTTP status both faces answer with."""

    status_code = status.HTTP_400_BAD_REQUEST

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidField(ActionError):
    """A field's value is not acceptable; `loc` is where it was, as pydantic names locations."""

    status_code = status.HTTP_422_UNPROCESSABLE_CONTENT

    def __init__(self, loc: tuple[str | int, ...], message: str, value: Any = None) -> None:
        super().__init__(message)
        self.loc, self.value = loc, value


class BodyTooLarge(ActionError):
    status_code = status.HTTP_413_CONTENT_TOO_LARGE


class TooManyInFlight(ActionError):
    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    retry_after_seconds = 30


class QueueUnavailable(ActionError):
    """The job could not be queued; nothing of it was kept, so the same request may simply be retried."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    retry_after_seconds = DEPENDENCY_RETRY_AFTER_SECONDS


class IdempotencyInProgress(ActionError):
    status_code = status.HTTP_409_CONFLICT


class NotFound(ActionError):
    status_code = status.HTTP_404_NOT_FOUND


class Gone(ActionError):
    """The job is there but its file is not: it expired (app/retention.py) or was deleted."""

    status_code = status.HTTP_410_GONE


class WrongState(ActionError):
    """The job exists but is not in a status that allows this (e.g. no video yet)."""

    status_code = status.HTTP_409_CONFLICT


@dataclass(frozen=True)
class Submitted:
    record: JobRecord
    replayed: bool  # an earlier request with the same Idempotency-Key and body made this job


def owned_record(services: Services, owner: str, job_id: str) -> JobRecord:
    """The caller's job; another key's job is indistinguishable from a missing one."""
    record = services.store.get(job_id)
    if record is None or record["owner"] != owner:
        raise NotFound(f"no video job {job_id}")
    return record


async def create(
    services: Services,
    owner: str,
    body: VideoRequest,
    bytes_besides_inputs: int,
    idempotency_key: str | None,
    extra_fields: dict[str, Any] | None = None,
) -> Submitted:
    """`submit` for a request that may carry input files: the body besides them within
    SHOW1_MAX_REQUEST_BYTES, the fields that go with them checked, then the files read and judged
    (app/inputs.py), all before anything is stored or queued."""
    settings = services.settings
    if bytes_besides_inputs > settings.max_request_bytes:
        raise BodyTooLarge(f"request body larger than {settings.max_request_bytes} bytes besides its inputs")
    check_entry_point(body, settings)
    try:
        inputs = await receive(body, settings)
    except InputRejected as error:
        raise InvalidField(error.loc, error.message) from error
    return await run_in_threadpool(submit, services, owner, body, idempotency_key, extra_fields, inputs)


def entry_point(body: VideoRequest) -> str:
    """What the job starts from (models/stage_outputs.py ENTRY_POINTS)."""
    if body.keyframe_images is not None:
        return "keyframe_images"
    if body.input_video is not None:
        return "input_video"
    return "draft_id" if body.draft_id is not None else "prompt"


# Fields that decide stages a storyboard or an upscale does not run: given, they are refused by name.
_NOT_FOR_STORYBOARD = (("keyframe_dropout",), ("steps", "base"), ("guidance", "base"))
_NOT_FOR_UPSCALE = (
    ("num_keyframes",),
    ("keyframe_size",),
    ("keyframe_dropout",),
    *((group, stage) for group in ("steps", "guidance") for stage in ("base", "interp", "sr1_image", "sr1")),
)


def check_entry_point(body: VideoRequest, settings: Settings) -> None:
    """The fields that go with a storyboard or an upscale, before any input is read."""
    entry = entry_point(body)
    if body.keyframe_images is not None and body.input_video is not None:
        raise InvalidField(("body", "input_video"), "a job takes keyframe_images or an input_video, not both")
    if entry in INPUT_KINDS and body.draft_id is not None:
        raise InvalidField(("body", "draft_id"), f"finishing a draft takes no {entry}")
    if entry == "input_video" and body.draft:
        raise InvalidField(("body", "draft"), "an upscale is one stage: it has no draft")
    refused: tuple[tuple[str, ...], ...] = ()
    if entry == "keyframe_images":
        count = len(body.keyframe_images or [])
        if count > settings.max_keyframes:
            limit = settings.max_keyframes
            raise InvalidField(("body", "keyframe_images"), f"at most {limit} keyframe images")
        if "num_keyframes" in body.model_fields_set and body.num_keyframes != count:
            raise InvalidField(
                ("body", "num_keyframes"),
                f"num_keyframes is {body.num_keyframes} but {count} keyframe_images were given",
                body.num_keyframes,
            )
        refused = _NOT_FOR_STORYBOARD
    elif entry == "input_video":
        refused = _NOT_FOR_UPSCALE
    for path in refused:
        group = body
        given = path[0] in body.model_fields_set
        if given and len(path) == 2:
            group = getattr(body, path[0])
            given = path[1] in group.model_fields_set
        if given:
            what = "images are the keyframes" if entry == "keyframe_images" else "clip is only upscaled"
            message = f"{'.'.join(path)} does not apply: the {what} (a stage this job does not run)"
            raise InvalidField(("body", *path), message)


def submit(
    services: Services,
    owner: str,
    body: VideoRequest,
    idempotency_key: str | None,
    extra_fields: dict[str, Any] | None = None,
    inputs: list[InputFile] | None = None,
) -> Submitted:
    """Check limits and idempotency, store the job record (and its input files) and enqueue it.

    `extra_fields` go into the record beside the parameters (e.g. which face created the job, so
    webhooks speak its language); they do not take part in the idempotency comparison. `inputs` are
    the request's files as `app.inputs.receive` judged them.
    """
    settings = services.settings
    inputs = inputs or []
    draft = None
    if body.draft_id is not None:
        draft = _finishable_draft(services, owner, body)
    elif body.prompt is None:
        raise InvalidField(("body", "prompt"), "Field required (only finishing a draft takes its prompt)")
    if body.prompt is not None and len(body.prompt) > settings.max_prompt_chars:
        limit = settings.max_prompt_chars
        raise InvalidField(("body", "prompt"), f"prompt is longer than {limit} characters")
    if body.num_keyframes > settings.max_keyframes:
        raise InvalidField(
            ("body", "num_keyframes"), f"at most {settings.max_keyframes} keyframes", body.num_keyframes
        )
    if body.webhook_url is not None:
        try:
            EgressPolicy.from_hosts(settings.webhook_allowed_hosts).check_url(str(body.webhook_url))
        except ForbiddenTarget as error:
            raise InvalidField(("body", "webhook_url"), str(error), str(body.webhook_url)) from error

    # The files' content, not how they came (a data: URL, a URL, a file part), is what the body means.
    request_json = body.model_dump_json(exclude=set(INPUT_KINDS))
    hashed = " ".join([request_json, *(file.sha256 for file in inputs)])
    body_hash = hashlib.sha256(hashed.encode()).hexdigest()
    idempotency_slot = None
    if idempotency_key is not None:
        digest = hashlib.sha256(idempotency_key.encode()).hexdigest()
        idempotency_slot = services.store.keys.idempotency(owner, digest)
        replay = _replay(services, services.redis.get(idempotency_slot), body_hash)
        if replay is not None:
            return Submitted(replay, replayed=True)

    entry = entry_point(body)
    if draft is None:
        seed = body.seed if body.seed is not None else secrets.randbelow(2**63)
        params = _generation_params(body, seed, settings, inputs)
        inherited = {}
    else:
        params = _finish_params(body, draft)
        inherited = {INTERPOLATION: draft["stages"][INTERPOLATION]}
    # The stages this job runs (models/stage_outputs.py), for every estimate made of it.
    runs = job_stages(entry, draft=body.draft)
    # What the stages the job runs cost (models/cost.py): for the cap, and for ETAs without re-deriving.
    costs = {stage: cost for stage, cost in stage_costs(params).items() if stage in runs}
    _check_cost(params, costs, settings.max_job_cost, entry)
    _check_memory(services, params, runs)
    job_id = new_job_id()
    input_keys = _store_inputs(services, job_id, inputs)
    fields = {
        "params": params.to_dict(),
        "costs": costs,
        "entry_point": entry,
        "job_stages": list(runs),
        "inputs": _describe_inputs(inputs),
        "input_keys": input_keys,
        "draft": body.draft,
        "draft_id": body.draft_id,
        # Stage outputs the job starts from: a finished draft's interpolation (never its files to delete).
        "stages": inherited,
        "webhook_url": str(body.webhook_url) if body.webhook_url else None,
        "webhook_on_start": body.webhook_on_start,
        **(extra_fields or {}),
        # For the janitor that settles an admission whose API process died before queueing the job.
        "idempotency_slot": idempotency_slot,
    }
    # Limits, idempotency and the record in one atomic step; then the queue entry, or nothing at all.
    admission = services.store.admit(
        owner,
        fields,
        max_in_flight=settings.max_jobs_in_flight_per_key,
        idempotency_slot=idempotency_slot,
        body_hash=body_hash,
        idempotency_ttl=IDEMPOTENCY_TTL_SECONDS,
        job_id=job_id,
    )
    if admission.outcome != "created":
        _delete_inputs(services, input_keys)
    if admission.outcome == "replay":
        replay = _replay(services, admission.claim, body_hash)
        if replay is None:
            raise IdempotencyInProgress("a request with this Idempotency-Key is in progress")
        return Submitted(replay, replayed=True)
    if admission.outcome == "limit":
        raise TooManyInFlight(
            f"{admission.in_flight} jobs queued or running for this key; "
            f"the limit is {settings.max_jobs_in_flight_per_key}"
        )
    record = admission.record
    assert record is not None
    try:
        enqueue_video(services.queue, services.store, record.id, settings)
    except Exception as error:
        # The client gets an error, so the job must not exist: no record, no count, no claim. Should
        # Redis be gone for this too, the janitor abandons the pending admission later.
        log.warning("job %s not queued (%s); its admission is undone", record.id, error)
        with contextlib.suppress(redis.RedisError):
            services.store.abandon(record.id, owner, idempotency_slot)
            _delete_inputs(services, input_keys)
        raise QueueUnavailable("the job could not be queued and was not kept; retry the request") from error
    services.store.confirm(record.id)
    metrics.JOBS_SUBMITTED.inc()
    return Submitted(record, replayed=False)


def _store_inputs(services: Services, job_id: str, inputs: list[InputFile]) -> list[str]:
    """The job's input files in storage under its id, expiring with its record; a storage fault is a
    503 with nothing kept."""
    settings = services.settings
    expires_at = time.time() + settings.job_record_ttl_seconds + settings.job_timeout_seconds
    keys: list[str] = []
    try:
        for file in inputs:
            key = input_key(job_id, file.field, file.index)
            services.store.track_stage_output(key, len(file.data), expires_at)
            keys.append(key)
            services.storage.put(key, file.data, "application/octet-stream")
    except (StorageError, redis.RedisError) as error:
        with contextlib.suppress(StorageError, redis.RedisError):
            _delete_inputs(services, keys)
        message = "the input files could not be stored; nothing was kept, retry the request"
        raise QueueUnavailable(message) from error
    return keys


def _delete_inputs(services: Services, keys: list[str]) -> None:
    for key in keys:
        with contextlib.suppress(StorageError):
            services.storage.delete(key)
    services.store.forget_stage_outputs(keys)


def _describe_inputs(inputs: list[InputFile]) -> dict[str, Any] | None:
    if not inputs:
        return None
    described: dict[str, Any] = {}
    for file in inputs:
        if file.index is None:
            described[file.field] = file.describe()
        else:
            described.setdefault(file.field, []).append(file.describe())
    return described


def _generation_params(
    body: VideoRequest, seed: int, settings: Settings, inputs: list[InputFile]
) -> GenerationParams:
    keyframe_size = (body.keyframe_size.height, body.keyframe_size.width)
    output_size = (body.output_size.height, body.output_size.width)
    steps = body.steps.model_dump()
    if settings.demo_defaults:
        # Only what the request left out: an explicit size or step count always wins.
        given = body.model_fields_set
        keyframe_size = keyframe_size if "keyframe_size" in given else DEMO_KEYFRAME_SIZE
        output_size = output_size if "output_size" in given else DEMO_OUTPUT_SIZE
        given_steps = body.steps.model_fields_set if "steps" in given else set()
        steps = {name: steps[name] if name in given_steps else getattr(DEMO_STEPS, name) for name in steps}
    num_keyframes, fps, clip_frames = body.num_keyframes, body.fps, None
    if body.keyframe_images is not None:
        num_keyframes = len(body.keyframe_images)
    clip = next((file.info for file in inputs if file.field == "input_video"), None)
    if clip is not None:
        clip_frames = clip.frames
        # The clip's own rate unless fps is given (the MP4 takes whole frames per second).
        fps = body.fps if "fps" in body.model_fields_set else min(max(round(clip.fps or fps), 1), 60)
    try:
        return GenerationParams(
            prompt=body.prompt,
            seed=seed,
            negative_prompt=body.negative_prompt,
            num_keyframes=num_keyframes,
            keyframe_size=keyframe_size,
            output_size=output_size,
            steps=StageSteps(**steps),
            guidance=StageGuidance(**body.guidance.model_dump()),
            sr2_strength=body.sr2_strength,
            fps=fps,
            keyframe_dropout=body.keyframe_dropout or settings.keyframe_dropout,
            clip_frames=clip_frames,
        )
    except ValueError as error:
        raise InvalidField(("body", "params"), str(error), body.model_dump(mode="json")) from error


def _check_cost(params: GenerationParams, costs: dict[str, float], max_cost: float, entry: str) -> None:
    """Refuse a job whose stages (`costs`) cost more than `max_cost` paper-default videos, naming
    what drives its cost."""
    cost = sum(costs.values()) / REFERENCE_COST
    if cost <= max_cost:
        return
    paper = GenerationParams(prompt=params.prompt, seed=params.seed)
    if entry == "input_video":  # the clip's frames and the output size are all an upscale's cost
        growth = {
            ("body", "input_video"): params.num_frames / paper.num_frames,
            ("body", "output_size"): _area(params.output_size) / _area(paper.output_size),
            ("body", "steps", "sr2"): params.steps.sr2 / paper.steps.sr2,
        }
    else:
        growth = _growth(params, paper)
    loc = max(growth, key=growth.__getitem__)
    raise InvalidField(
        loc,
        f"this video would cost {cost:.1f} times a default video ({cost * REFERENCE_COST:.0f} PFLOP), "
        f"over the limit of {max_cost:g}; {'.'.join(loc[1:])} grows it most ({growth[loc]:.1f}x the default)",
    )


def _growth(params: GenerationParams, paper: GenerationParams) -> dict[tuple[str, ...], float]:
    return {
        ("body", "keyframe_size"): _area(params.keyframe_size) / _area(paper.keyframe_size),
        ("body", "output_size"): _area(params.output_size) / _area(paper.output_size),
        ("body", "num_keyframes"): params.num_keyframes / paper.num_keyframes,
        **{
            ("body", "steps", stage): getattr(params.steps, stage) / getattr(paper.steps, stage)
            for stage in ("base", "interp", "sr1_image", "sr1", "sr2")
        },
    }


def _check_memory(services: Services, params: GenerationParams, runs: Collection[str]) -> None:
    """Refuse a job no worker could hold (app/memory.py): none of the live workers, or with none alive,
    the last one announced, within `memory_budget_gb` when that is set. Nothing known of any worker:
    the worker that takes the job decides."""
    settings = services.settings
    workers = live_workers(services.store, settings.heartbeat_seconds)
    if not workers:
        last = last_worker(services.store)
        if last is None:
            return
        budget = int(settings.memory_budget_gb * GB) if settings.memory_budget_gb else last.budget_bytes
        workers = [dataclasses.replace(last, budget_bytes=budget)]
    refusal = memory_refusal(params, runs, workers)
    if refusal is not None:
        raise InvalidField(("body", refusal.field), refusal.message())


# Request fields that decide a draft's own stages: finishing a draft cannot change them.
_DRAFT_FIELDS = ("prompt", "negative_prompt", "seed", "num_keyframes", "keyframe_size", "keyframe_dropout")
_DRAFT_STEPS = ("base", "interp")


def _finishable_draft(services: Services, owner: str, body: VideoRequest) -> JobRecord:
    """The caller's succeeded draft whose interpolation is still stored, or the error saying why not."""
    draft_id = body.draft_id
    if body.draft:
        raise InvalidField(("body", "draft"), "a request either makes a draft or finishes one (draft_id)")
    record = services.store.get(draft_id)
    if record is None or record["owner"] != owner:
        raise NotFound(f"no draft {draft_id} for this API key (never made, deleted, or expired)")
    if not record["draft"]:
        raise WrongState(f"job {draft_id} is not a draft; only drafts can be finished")
    if record.status != SUCCEEDED:
        raise WrongState(f"draft {draft_id} is {record.status}; only a succeeded draft can be finished")
    key = (record["stages"] or {}).get(INTERPOLATION)
    expires_at = services.store.stage_output_expiry(key) if key else None
    if expires_at is None or expires_at <= time.time():
        raise WrongState(f"draft {draft_id} expired: its stored interpolation is gone; make a new draft")
    return record


def _finish_params(body: VideoRequest, draft: JobRecord) -> GenerationParams:
    """The draft's parameters with the later stages' fields of `body`; a field of the draft's own
    stages that differs from the draft's is refused by name."""
    params = GenerationParams.from_dict(draft["params"])
    given = body.model_fields_set
    for name in _DRAFT_FIELDS:  # GenerationParams names them as the request does
        value, fixed = getattr(body, name), getattr(params, name)
        requested = (value.height, value.width) if isinstance(value, Size) else value
        if name in given and requested != fixed:
            raise InvalidField(
                ("body", name),
                f"{name} is fixed by the draft ({fixed!r}); finishing a draft changes only the later "
                "stages (output_size, sr1_image/sr1/sr2 steps and guidance, fps)",
                value.model_dump() if isinstance(value, Size) else value,
            )
    changes: dict[str, Any] = {}
    for group in ("steps", "guidance"):
        overrides = getattr(body, group)
        chosen = (
            {name: getattr(overrides, name) for name in overrides.model_fields_set} if group in given else {}
        )
        for name in _DRAFT_STEPS:
            if name in chosen and chosen[name] != getattr(getattr(params, group), name):
                raise InvalidField(
                    ("body", group, name),
                    f"{group}.{name} is fixed by the draft ({getattr(getattr(params, group), name)!r})",
                    chosen[name],
                )
        changes[group] = dataclasses.replace(getattr(params, group), **chosen)
    if "output_size" in given:
        changes["output_size"] = (body.output_size.height, body.output_size.width)
    if "fps" in given:
        changes["fps"] = body.fps
    if "sr2_strength" in given:
        changes["sr2_strength"] = body.sr2_strength
    try:
        return dataclasses.replace(params, **changes)
    except ValueError as error:
        raise InvalidField(("body", "params"), str(error), body.model_dump(mode="json")) from error


def _area(size: tuple[int, int]) -> int:
    return size[0] * size[1]


def _replay(services: Services, claim: bytes | str | None, body_hash: str) -> JobRecord | None:
    """The job an earlier request with the same Idempotency-Key made, if it still exists."""
    if claim is None:
        return None
    stored = json.loads(claim)
    if stored["body"] != body_hash:
        raise InvalidField(
            ("header", "idempotency-key"), "Idempotency-Key was already used with a different request body"
        )
    return services.store.get(stored["job_id"])


def settle_pending_admissions(store: JobStore, queue: Queue, older_than_seconds: float = 60) -> int:
    """Admissions still pending after `older_than_seconds`: their API process died between admitting
    and confirming. A job that reached the queue is confirmed; one that did not is abandoned (its
    client never got a 202). Returns how many were abandoned."""
    abandoned = 0
    for job_id in store.pending_since(time.time() - older_than_seconds):
        if Job.exists(job_id, connection=queue.connection):
            store.confirm(job_id)
            continue
        record = store.get(job_id)
        if record is not None:
            store.abandon(job_id, record["owner"], record["idempotency_slot"])
        else:
            store.confirm(job_id)
        abandoned += 1
    return abandoned


def cancel(services: Services, record: JobRecord) -> JobRecord:
    """Cancel a live job: a queued one at once, a running one between denoising steps (by its worker)."""
    if record.status not in ACTIVE:
        raise WrongState(f"job {record.id} already {record.status}")
    services.store.request_cancel(record.id)
    removed = record.status == QUEUED and remove_queued(services.queue, record.id)
    if removed and services.store.finish(record.id, CANCELED):
        public = services.settings.public_base_url
        notify(services.webhooks, services.store, services.storage, public, record.id, "job.canceled")
    return services.store.get(record.id) or record


def delete(services: Services, record: JobRecord) -> bool:
    """Cancel a live job, and forget a finished one: its record and its files.

    Returns whether the record is gone; a running job's record stays until its worker stops it, so the
    worker's last write lands on an existing record and the client can still see how it ended.
    """
    if record.status in ACTIVE:
        record = cancel(services, record)
    if record.status in ACTIVE:
        return False
    for key in job_keys(record.id, int(record["attempts"] or 0)):
        # The record goes regardless; an orphaned file costs storage, not correctness.
        with contextlib.suppress(StorageError):
            services.storage.delete(key)
    with contextlib.suppress(StorageError):  # else they expire as tracked
        delete_stage_outputs(services.store, services.storage, record.id, record["stages"] or {})
        _delete_inputs(services, record["input_keys"] or [])
    services.store.delete(record.id, record["owner"])
    return True


def delete_stage_outputs(store: JobStore, storage: Storage, job_id: str, stages: dict[str, str]) -> None:
    """A job's own stage outputs, removed with the job (those of a draft it finished stay the draft's)."""
    own = [key for key in stages.values() if is_own_stage_output(job_id, key)]
    for key in own:
        storage.delete(key)
    store.forget_stage_outputs(own)


def sweep_stage_outputs(store: JobStore, storage: Storage, now: float | None = None) -> int:
    """Delete the stage outputs whose time is up (a janitor's round); returns how many went."""
    due = store.stage_outputs_due(time.time() if now is None else now)
    gone = []
    for key in due:
        try:
            storage.delete(key)
        except StorageError as error:
            log.warning("expired stage output %s not deleted yet: %s", key, error)
            continue
        gone.append(key)
    store.forget_stage_outputs(gone)
    return len(gone)


def stored_file(services: Services, record: JobRecord, key: str, media_type: str, what: str) -> Response:
    """Local storage: the API streams the file; S3: a redirect to a presigned URL. A file that is not
    there is a 410 saying so, never a redirect to nothing (a StorageError, storage down: 503)."""
    if not services.storage.exists(key):
        days = services.settings.job_record_ttl_seconds / 86400
        raise Gone(
            f"the {what} of job {record.id} is no longer stored: a job's files are kept {days:g} days "
            "after it ends (SHOW1_JOB_RECORD_TTL_SECONDS), or it was deleted, or the job predates this "
            "kind of file"
        )
    if isinstance(services.storage, LocalStorage):
        return FileResponse(services.storage.file_path(key), media_type=media_type)
    return RedirectResponse(services.storage.download_url(key), status_code=status.HTTP_302_FOUND)
