"""Job records in Redis: the one place the API and the workers read and write a job's state.

A record is a Redis hash whose values are JSON; it outlives RQ's own job data (RQ keeps results
minutes, the API promises days). Status changes go through one Lua script that checks the current
status first, so a canceled job can never be marked succeeded and a finished one never runs again,
whichever process writes first.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import StrEnum
from typing import Any

import redis

from models.params import STAGES


class JobStatus(StrEnum):
    """A job's status: the one vocabulary of records, scripts, schemas, metrics and webhooks."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


QUEUED, RUNNING = JobStatus.QUEUED, JobStatus.RUNNING
SUCCEEDED, FAILED, CANCELED = JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED
STATUSES = tuple(JobStatus)
ACTIVE = (QUEUED, RUNNING)
TERMINAL = (SUCCEEDED, FAILED, CANCELED)

# A running job's stage: the cascade's (models/params.py), then the video's encoding and upload.
ENCODING = "encoding"
JOB_STAGES = (*STAGES, ENCODING)


@dataclass(frozen=True)
class Keys:
    """Every Redis key the service writes, for one namespace (SHOW1_KEY_PREFIX); RQ names its own.

    Each key starts with the namespace in braces, a Redis Cluster hash tag: all of a service's keys
    hash to one slot, so the scripts below, which touch a record, its owner's indexes and the global
    counters in one step, run on a cluster too. (One slot holds one service's job store; records are a
    few kilobytes and expire, see docs/design.md.)
    """

    namespace: str

    def _key(self, *parts: object) -> str:
        return ":".join(["{" + self.namespace + "}", *map(str, parts)])

    # Jobs
    def record(self, job_id: str) -> str:
        return self._key("job", job_id)

    def events(self, job_id: str) -> str:
        return self._key("job", job_id, "events")

    def owner_jobs(self, owner: str) -> str:
        return self._key("owner", owner, "jobs")

    def owner_jobs_in(self, owner: str, status: JobStatus) -> str:
        """The owner's jobs now in `status`, scored by creation time: filtered lists read only these."""
        return self._key("owner", owner, "jobs", status)

    def in_flight(self, owner: str) -> str:
        return self._key("owner", owner, "in-flight")

    def idempotency(self, owner: str, digest: str) -> str:
        return self._key("idempotency", owner, digest)

    def pending_admissions(self) -> str:
        """Jobs admitted whose queue entry is not confirmed yet (JobStore.admit / abandon / confirm)."""
        return self._key("admission", "pending")

    def active(self, status: JobStatus) -> str:
        return self._key("active", status)

    def waiting(self) -> str:
        """Queued jobs scored by their queue ticket: a job's queue position is its rank here."""
        return self._key("queue", "waiting")

    def tickets(self) -> str:
        """The last queue ticket handed out (admission and every return to the queue take one)."""
        return self._key("queue", "tickets")

    def finished_count(self, status: JobStatus) -> str:
        return self._key("finished", status)

    # Stage outputs in storage (models/stage_outputs.py)
    def stage_outputs(self) -> str:
        """Every stored stage output's storage key, scored by when it expires (the janitor deletes it)."""
        return self._key("stage-outputs")

    def stage_output_bytes(self) -> str:
        """Storage key -> size, for /metrics."""
        return self._key("stage-outputs", "bytes")

    def work_done(self) -> str:
        """Cost units (models/cost.py) the workers computed, re-done work included: a float counter."""
        return self._key("metrics", "work")

    # Workers
    def workers(self) -> str:
        return self._key("workers")

    def stage_metrics(self, stage: str) -> str:
        return self._key("metrics", "stage", stage)

    def last_worker_memory(self) -> str:
        """The last worker's memory announcement (app/memory.py), kept while no worker is alive."""
        return self._key("memory", "last-worker")

    def gpu_metrics(self, worker: str) -> str:
        return self._key("metrics", "gpu", worker)

    # Webhooks (app/webhooks.py, worker/webhooks.py)
    def webhooks_due(self) -> str:
        return self._key("webhooks", "due")

    def webhook(self, delivery_id: str) -> str:
        return self._key("webhook", delivery_id)

    # Limits (app/deps.py); `window` is the minute counted
    def requests(self, owner: str, window: int) -> str:
        return self._key("rate", owner, window)

    def auth_failures(self, client: str, window: int) -> str:
        return self._key("auth-failures", client, window)


# The status vocabulary as the scripts see it, written from JobStatus: STATUSES in order, ACTIVE a set.
_LUA_STATUSES = (
    f"local QUEUED = {json.dumps(str(QUEUED))}\n"
    f"local STATUSES = {{{', '.join(json.dumps(str(status)) for status in STATUSES)}}}\n"
    f"local ACTIVE = {{{', '.join(f'[{json.dumps(str(status))}] = true' for status in ACTIVE)}}}\n"
)


# Every key the script touches comes in KEYS, in the order JobStore.transition_keys builds them: the
# record, its event stream, the owner's in-flight set, then per status (STATUSES order) the owner's
# index of its jobs in that status, the set of active jobs in that status and the counter of jobs
# that ended in it, and last the queue's waiting line and its ticket counter. ARGV: job id, allowed
# current statuses (comma-separated), new status ("" keeps it), TTL, "1" when a requested cancel
# must win over this write (publishing a video), the attempt that must hold the job ("" for any: its
# fencing token), "1" to start a new attempt (the script then returns its number), then field/value
# pairs. The status sets are derived here from the status read inside the script, so they cannot go
# stale between a read and the write. While a job runs its progress only grows (a retried attempt
# starts from zero again, and a client must not see that). Every write appends one event to the
# stream in the same step, so a reader of the stream misses no change: "status" when the status
# changes, "preview" when the keyframe preview appears, "progress" otherwise; its data is the changed
# fields as one JSON object. A job entering the queued status takes a new ticket at the end of the
# waiting line and one leaving it leaves the line, so the line holds exactly the queued jobs, in the
# order RQ hands them out.
_TRANSITION = (
    _LUA_STATUSES
    + """
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return -1 end
current = cjson.decode(current)
local allowed = false
for status in string.gmatch(ARGV[2], '[^,]+') do
  if status == current then allowed = true end
end
if not allowed then return 0 end
if ARGV[5] == '1' and redis.call('HGET', KEYS[1], 'cancel_requested') == 'true' then return 0 end
if ARGV[6] ~= '' and redis.call('HGET', KEYS[1], 'attempts') ~= ARGV[6] then return 0 end
local id, new, ttl = ARGV[1], ARGV[3], tonumber(ARGV[4])
local result = 1
if ARGV[7] == '1' then result = redis.call('HINCRBY', KEYS[1], 'attempts', 1) end
local slot = {}
for i, status in ipairs(STATUSES) do slot[status] = 3 * i end
local changed, event = {}, 'progress'
for i = 8, #ARGV, 2 do
  local name, value = ARGV[i], ARGV[i + 1]
  if name == 'progress' and new == '' then
    local old = redis.call('HGET', KEYS[1], 'progress')
    if old and cjson.decode(old) > cjson.decode(value) then value = old end
  end
  if name == 'preview_url' then event = 'preview' end
  redis.call('HSET', KEYS[1], name, value)
  table.insert(changed, cjson.encode(name) .. ':' .. value)
end
if new ~= '' and new ~= current then
  local from, to = slot[current], slot[new]
  redis.call('HSET', KEYS[1], 'status', cjson.encode(new))
  local since = redis.call('ZSCORE', KEYS[from + 1], id) or redis.call('TIME')[1]
  redis.call('ZREM', KEYS[from + 1], id)
  redis.call('ZADD', KEYS[to + 1], since, id)
  redis.call('EXPIRE', KEYS[to + 1], ttl)
  redis.call('SREM', KEYS[from + 2], id)
  if ACTIVE[new] then
    redis.call('SADD', KEYS[to + 2], id)
  else
    redis.call('SREM', KEYS[3], id)
    redis.call('INCR', KEYS[to + 3])
  end
  local line, tickets = KEYS[#KEYS - 1], KEYS[#KEYS]
  if new == QUEUED then
    redis.call('ZADD', line, redis.call('INCR', tickets), id)
  elseif current == QUEUED then
    redis.call('ZREM', line, id)
  end
  event = 'status'
end
table.insert(changed, '"status":' .. redis.call('HGET', KEYS[1], 'status'))
local data = '{' .. table.concat(changed, ',') .. '}'
redis.call('XADD', KEYS[2], 'MAXLEN', '~', 1000, '*', 'event', event, 'data', data)
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
return result
"""
)


# Admission, in one step. KEYS: the record, the owner's index of all its jobs, its index of queued jobs,
# its in-flight set, the set of queued jobs, the idempotency slot, the pending-admissions set, the
# queue's waiting line (only abandoning touches it: the ticket comes with the queue entry). ARGV: job
# id, TTL, in-flight limit ("" for none), now, idempotency claim ("" for none), idempotency TTL, then
# field/value pairs of the record. The count is the in-flight set's size: only the transitions above
# change that set, atomically with the status, so no member's record is read here (the janitor heals
# what an expired record leaves: JobStore.heal). O(1) whatever the owner has in flight, and no retry.
_ADMIT = """
if ARGV[5] ~= '' then
  local claim = redis.call('GET', KEYS[6])
  if claim then return {'replay', claim} end
end
if ARGV[3] ~= '' then
  local count = redis.call('SCARD', KEYS[4])
  if count >= tonumber(ARGV[3]) then return {'limit', tostring(count)} end
end
local id, ttl, now = ARGV[1], tonumber(ARGV[2]), ARGV[4]
for i = 7, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[1], ttl)
for _, index in ipairs({KEYS[2], KEYS[3]}) do
  redis.call('ZADD', index, now, id)
  redis.call('EXPIRE', index, ttl)
end
redis.call('SADD', KEYS[4], id)
redis.call('SADD', KEYS[5], id)
if ARGV[5] ~= '' then redis.call('SET', KEYS[6], ARGV[5], 'EX', tonumber(ARGV[6])) end
redis.call('ZADD', KEYS[7], now, id)
return {'created'}
"""

# A queued job's place in the waiting line, taken in the same MULTI as its RQ queue entry (app/queue.py),
# so the line's order is the queue's order even for jobs admitted at the same instant. KEYS: the record,
# the line, the ticket counter. ARGV: job id. A job no longer queued (canceled meanwhile) takes none.
_TAKE_TICKET = (
    _LUA_STATUSES
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status or cjson.decode(status) ~= QUEUED then return 0 end
redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), ARGV[1])
return 1
"""
)

# Undo an admission whose queue entry could not be made. KEYS: those of admission. ARGV: job id.
_ABANDON = """
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('SREM', KEYS[4], ARGV[1])
redis.call('SREM', KEYS[5], ARGV[1])
local claim = redis.call('GET', KEYS[6])
if claim and cjson.decode(claim)['job_id'] == ARGV[1] then redis.call('DEL', KEYS[6]) end
redis.call('ZREM', KEYS[7], ARGV[1])
redis.call('ZREM', KEYS[8], ARGV[1])
return 1
"""


@dataclass(frozen=True)
class Admission:
    """What admission decided: `created` (the record), `replay` (the claim of an earlier request with
    the same idempotency key) or `limit` (the owner's jobs in flight)."""

    outcome: str
    record: JobRecord | None = None
    claim: str | None = None
    in_flight: int = 0


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def owner_of(api_key: str | None) -> str:
    """Who a job belongs to: a hash of the API key, so keys are never stored."""
    if not api_key:
        return "anonymous"
    return hashlib.sha256(api_key.encode()).hexdigest()[:24]


def new_job_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class JobRecord:
    """A job record as stored; `fields` are the decoded JSON values."""

    fields: Mapping[str, Any]

    def __getitem__(self, name: str) -> Any:
        return self.fields.get(name)

    @property
    def id(self) -> str:
        return self.fields["id"]

    @property
    def status(self) -> JobStatus:
        return JobStatus(self.fields["status"])

    @property
    def published_attempt(self) -> int:
        """The attempt whose files are the job's result (app/storage.py)."""
        return int(self.fields.get("published_attempt") or 1)

    @property
    def preview_attempt(self) -> int:
        return int(self.fields.get("preview_attempt") or 1)


class JobStore:
    def __init__(self, connection: redis.Redis, prefix: str, ttl_seconds: int) -> None:
        self.redis = connection
        self.keys = Keys(prefix)
        self.ttl_seconds = ttl_seconds
        self._transition = connection.register_script(_TRANSITION)
        self._admit = connection.register_script(_ADMIT)
        self._abandon = connection.register_script(_ABANDON)
        self._take_ticket = connection.register_script(_TAKE_TICKET)

    # Reads
    def get(self, job_id: str) -> JobRecord | None:
        raw = self.redis.hgetall(self.keys.record(job_id))
        if not raw:
            return None
        return _decode(raw)

    def list_for_owner(
        self, owner: str, *, status: str | None, offset: int, limit: int, oldest_first: bool = False
    ) -> tuple[list[JobRecord], int | None]:
        """Newest first (or oldest first); returns the page and the offset of the next one (None at the
        end). A status filter reads that status's index, so a page costs two round trips however long
        the owner's history is."""
        index = self.keys.owner_jobs(owner) if status is None else self.keys.owner_jobs_in(owner, status)
        read = self.redis.zrange if oldest_first else self.redis.zrevrange
        ids = [_text(job_id) for job_id in read(index, offset, offset + limit)]
        pipe = self.redis.pipeline()
        for job_id in ids[:limit]:
            pipe.hgetall(self.keys.record(job_id))
        records, expired = [], []
        for job_id, raw in zip(ids, pipe.execute(), strict=False):
            if raw:
                records.append(_decode(raw))
            else:
                expired.append(job_id)
        if expired:
            # Records outlived by their index entries (record TTL): dropped as they are met.
            self.redis.zrem(index, *expired)
        return records, (offset + limit if len(ids) > limit else None)

    def position_for_owner(self, owner: str, job_id: str, *, oldest_first: bool = False) -> int | None:
        """Where a job stands in its owner's list (the offset of the job after it is this plus one)."""
        rank = self.redis.zrank if oldest_first else self.redis.zrevrank
        return rank(self.keys.owner_jobs(owner), job_id)

    def queue_positions(self, job_ids: list[str]) -> list[int | None]:
        """Each job's 0-based place in the queue (None once it left it): one rank lookup per job,
        O(log depth), whatever the queue holds."""
        pipe = self.redis.pipeline()
        for job_id in job_ids:
            pipe.zrank(self.keys.waiting(), job_id)
        return pipe.execute()

    def queue_head(self, count: int) -> list[str]:
        """The first `count` queued jobs, in queue order."""
        return [_text(job_id) for job_id in self.redis.zrange(self.keys.waiting(), 0, count - 1)]

    def queue_depth(self) -> int:
        return int(self.redis.zcard(self.keys.waiting()))

    def count_in_flight(self, owner: str) -> int:
        return int(self.redis.scard(self.keys.in_flight(owner)))

    def status_counts(self) -> dict[str, int]:
        """Jobs now queued or running, and jobs finished per terminal status since the store began."""
        pipe = self.redis.pipeline()
        for status in ACTIVE:
            pipe.scard(self.keys.active(status))
        for status in TERMINAL:
            pipe.get(self.keys.finished_count(status))
        values = pipe.execute()
        return {status: int(value or 0) for status, value in zip(ACTIVE + TERMINAL, values, strict=True)}

    def active_ids(self, status: str) -> list[str]:
        return [_text(job_id) for job_id in self.redis.smembers(self.keys.active(status))]

    # Writes
    def admit(
        self,
        owner: str,
        fields: Mapping[str, Any],
        *,
        max_in_flight: int | None,
        idempotency_slot: str | None = None,
        body_hash: str = "",
        idempotency_ttl: int = 24 * 3600,
        job_id: str | None = None,
    ) -> Admission:
        """Create a queued job if the owner is under `max_in_flight` and the idempotency slot is free,
        all in one atomic step. The job stays pending until `confirm` (its queue entry exists) or
        `abandon` (it could not be queued); pending jobs nobody confirmed are abandoned by the workers'
        janitor, so a crash between admission and queueing leaves nothing behind."""
        job_id = job_id or new_job_id()
        record = self._new_record(job_id, owner, fields)
        claim = json.dumps({"job_id": job_id, "body": body_hash}) if idempotency_slot else ""
        limit = "" if max_in_flight is None else max_in_flight
        args: list[Any] = [job_id, self.ttl_seconds, limit, time.time(), claim, idempotency_ttl]
        for name, value in record.items():
            args += [name, json.dumps(value)]
        keys = self._admission_keys(job_id, owner, idempotency_slot)
        answer = [_text(part) for part in self._admit(keys=keys, args=args)]
        if answer[0] == "replay":
            return Admission("replay", claim=answer[1])
        if answer[0] == "limit":
            return Admission("limit", in_flight=int(answer[1]))
        return Admission("created", record=JobRecord(record))

    def confirm(self, job_id: str) -> None:
        """The admitted job's queue entry exists: it is no longer pending."""
        self.redis.zrem(self.keys.pending_admissions(), job_id)

    def take_ticket(self, job_id: str, pipeline: redis.client.Pipeline) -> None:
        """Put the job at the end of the waiting line, as part of `pipeline` (its queue entry's)."""
        keys = [self.keys.record(job_id), self.keys.waiting(), self.keys.tickets()]
        self._take_ticket(keys=keys, args=[job_id], client=pipeline)

    def abandon(self, job_id: str, owner: str, idempotency_slot: str | None = None) -> None:
        """Undo an admission whose job could not be queued: no record, no count, no idempotency claim."""
        self._abandon(keys=self._admission_keys(job_id, owner, idempotency_slot), args=[job_id])

    def _admission_keys(self, job_id: str, owner: str, idempotency_slot: str | None) -> list[str]:
        """The keys admission writes and abandoning undoes, in the order both scripts read them."""
        return [
            self.keys.record(job_id),
            self.keys.owner_jobs(owner),
            self.keys.owner_jobs_in(owner, QUEUED),
            self.keys.in_flight(owner),
            self.keys.active(QUEUED),
            # Without an idempotency key the scripts still get a key here, one no request can claim.
            idempotency_slot or self.keys.idempotency(owner, "-"),
            self.keys.pending_admissions(),
            self.keys.waiting(),
        ]

    def pending_since(self, before: float) -> list[str]:
        pending = self.redis.zrangebyscore(self.keys.pending_admissions(), 0, before)
        return [_text(job_id) for job_id in pending]

    def heal(self, batch: int = 500) -> int:
        """Drop index entries whose job is no longer what the index says: in-flight members and waiting
        jobs whose record ended or expired (a record's TTL can outlive nothing the transitions see).
        The janitor runs it; admission and positions never scan. Returns how many entries went."""
        dropped = 0
        stale_waiting = []
        for job_id, status in self._statuses(self.redis.zscan_iter(self.keys.waiting(), count=batch), batch):
            if status != QUEUED:
                stale_waiting.append(job_id)
        if stale_waiting:
            dropped += self.redis.zrem(self.keys.waiting(), *stale_waiting)
        pattern = self.keys.in_flight("*")
        for key in self.redis.scan_iter(match=pattern, count=batch):
            members = self.redis.sscan_iter(key, count=batch)
            stale = [job_id for job_id, status in self._statuses(members, batch) if status not in ACTIVE]
            if stale:
                dropped += self.redis.srem(key, *stale)
        return dropped

    def _statuses(self, members: Iterable[Any], batch: int) -> Iterable[tuple[str, JobStatus | None]]:
        """(job id, status or None when the record is gone) for index members, read in batches."""
        chunk: list[str] = []

        def flush() -> list[tuple[str, JobStatus | None]]:
            pipe = self.redis.pipeline()
            for job_id in chunk:
                pipe.hget(self.keys.record(job_id), "status")
            found = [
                (job_id, JobStatus(json.loads(raw)) if raw else None)
                for job_id, raw in zip(chunk, pipe.execute(), strict=True)
            ]
            chunk.clear()
            return found

        for member in members:
            chunk.append(_text(member[0] if isinstance(member, tuple) else member))
            if len(chunk) >= batch:
                yield from flush()
        if chunk:
            yield from flush()

    # Stage outputs
    def track_stage_output(self, key: str, size: int, expires_at: float) -> None:
        """Note a stage output before it is written, so nothing written is ever left untracked."""
        pipe = self.redis.pipeline()
        pipe.zadd(self.keys.stage_outputs(), {key: expires_at})
        pipe.hset(self.keys.stage_output_bytes(), key, size)
        pipe.execute()

    def stage_output_expiry(self, key: str) -> float | None:
        return self.redis.zscore(self.keys.stage_outputs(), key)

    def stage_outputs_due(self, now: float, limit: int = 500) -> list[str]:
        due = self.redis.zrangebyscore(self.keys.stage_outputs(), 0, now, start=0, num=limit)
        return [_text(key) for key in due]

    def forget_stage_outputs(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        if keys:
            pipe = self.redis.pipeline()
            pipe.zrem(self.keys.stage_outputs(), *keys)
            pipe.hdel(self.keys.stage_output_bytes(), *keys)
            pipe.execute()

    def stage_output_totals(self) -> tuple[int, int]:
        """(how many stage outputs are stored, their bytes)."""
        sizes = self.redis.hvals(self.keys.stage_output_bytes())
        return len(sizes), sum(int(size) for size in sizes)

    def add_work(self, cost: float) -> None:
        self.redis.incrbyfloat(self.keys.work_done(), cost)

    def work(self) -> float:
        return float(self.redis.get(self.keys.work_done()) or 0.0)

    def create(self, owner: str, fields: Mapping[str, Any], job_id: str | None = None) -> JobRecord:
        """A queued job record without limits or a queue entry (tools and tests; the API admits)."""
        admission = self.admit(owner, fields, max_in_flight=None, job_id=job_id)
        assert admission.record is not None
        self.confirm(admission.record.id)
        return admission.record

    def _new_record(self, job_id: str, owner: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "id": job_id,
            "status": QUEUED,
            "stage": None,
            "progress": 0.0,
            "stage_progress": {},
            "eta_seconds": None,
            "created_at": utc_now(),
            "started_at": None,
            "finished_at": None,
            "attempts": 0,
            "error": None,
            "result": None,
            "preview_url": None,
            "cancel_requested": False,
            "owner": owner,
            **fields,
        }

    def delete(self, job_id: str, owner: str) -> None:
        """Forget a job: its record and its place in the owner's list (finished jobs only: live ones are
        also in the active and in-flight sets, which the status transitions keep)."""
        pipe = self.redis.pipeline()
        for key in (self.keys.record(job_id), self.keys.events(job_id)):
            pipe.delete(key)  # one key per command: a cluster pipeline refuses multi-key deletes
        pipe.zrem(self.keys.owner_jobs(owner), job_id)
        for status in STATUSES:
            pipe.zrem(self.keys.owner_jobs_in(owner, status), job_id)
        pipe.execute()

    def transition_keys(self, job_id: str, owner: str) -> list[str]:
        keys = [self.keys.record(job_id), self.keys.events(job_id), self.keys.in_flight(owner)]
        for status in STATUSES:
            keys += [self.keys.owner_jobs_in(owner, status), self.keys.active(status)]
            keys.append(self.keys.finished_count(status))
        return [*keys, self.keys.waiting(), self.keys.tickets()]

    def transition(
        self,
        job_id: str,
        *,
        allowed: Iterable[str],
        to: str | None = None,
        fields: Mapping[str, Any] | None = None,
        unless_canceled: bool = False,
        attempt: int | None = None,
        new_attempt: bool = False,
    ) -> int:
        """Set `fields` (and move to status `to`) only if the job's status is in `allowed`, no cancel
        was requested (with `unless_canceled`) and `attempt` still holds the job (when given): an
        attempt another one has replaced writes nothing. Returns 0 when refused, else 1, or with
        `new_attempt` the number of the attempt it started (the fencing token of that attempt)."""
        owner = self.redis.hget(self.keys.record(job_id), "owner")
        if owner is None:
            return 0
        args: list[Any] = [job_id, ",".join(allowed), to or "", self.ttl_seconds]
        args += ["1" if unless_canceled else "0"]
        args += ["" if attempt is None else str(attempt), "1" if new_attempt else "0"]
        for name, value in (fields or {}).items():
            args += [name, json.dumps(value)]
        keys = self.transition_keys(job_id, json.loads(owner))
        return max(int(self._transition(keys=keys, args=args)), 0)

    def update_running(self, job_id: str, fields: Mapping[str, Any], attempt: int | None = None) -> bool:
        """Progress writes: only while the job is still running (a cancel or crash may have ended it),
        and only by the attempt that holds it."""
        return bool(self.transition(job_id, allowed=[RUNNING], fields=fields, attempt=attempt))

    def request_cancel(self, job_id: str) -> bool:
        return bool(self.transition(job_id, allowed=ACTIVE, fields={"cancel_requested": True}))

    def cancel_requested(self, job_id: str) -> bool:
        raw = self.redis.hget(self.keys.record(job_id), "cancel_requested")
        return raw is not None and json.loads(raw) is True

    def claim(self, job_id: str, worker: str, eta_seconds: float | None = None) -> int:
        """Start an attempt at a queued job (or at one left running by a lost worker); returns the
        attempt's number, its fencing token for every later write, or 0 when the job is not startable."""
        return self.transition(
            job_id,
            allowed=ACTIVE,
            to=RUNNING,
            new_attempt=True,
            fields={
                "started_at": utc_now(),
                "worker": worker,
                "stage": None,
                "stage_progress": {},
                "eta_seconds": eta_seconds,
                "resumed_from": None,
            },
        )

    def requeue(self, job_id: str, reason: str) -> bool:
        return bool(self.transition(job_id, allowed=ACTIVE, to=QUEUED, fields={"last_error": reason}))

    def finish(
        self, job_id: str, status: str, fields: Mapping[str, Any] | None = None, attempt: int | None = None
    ) -> bool:
        if status not in TERMINAL:
            raise ValueError(f"{status} is not a terminal status")
        extra = {"finished_at": utc_now(), "eta_seconds": None, **(fields or {})}
        if status == SUCCEEDED:
            # Done: no stage is under way. A failed or canceled job keeps the stage it stopped in.
            extra.update(progress=1.0, stage=None)
        # A cancel accepted before the video is published wins: the client was told "cancel requested".
        return bool(
            self.transition(
                job_id,
                allowed=ACTIVE,
                to=status,
                fields=extra,
                unless_canceled=status == SUCCEEDED,
                attempt=attempt,
            )
        )

    def publish(
        self, job_id: str, attempt: int, result: Mapping[str, Any], timings: Mapping[str, float]
    ) -> bool:
        """Make `attempt`'s files the job's result and the job succeeded, in one step; refused when a
        cancel came first (it wins) or another attempt holds the job (see docs/design.md)."""
        fields = {"result": result, "published_attempt": attempt, "timings": timings}
        return self.finish(job_id, SUCCEEDED, fields, attempt=attempt)

    def fail(self, job_id: str, code: str, message: str, attempt: int | None = None) -> bool:
        return self.finish(job_id, FAILED, {"error": {"code": code, "message": message}}, attempt)


def _decode(raw: Mapping[bytes, bytes]) -> JobRecord:
    return JobRecord({_text(name): json.loads(value) for name, value in raw.items()})


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
