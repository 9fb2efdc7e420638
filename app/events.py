"""A job's live progress as Server-Sent Events, read from the job's event stream in Redis.

Every write to a job record appends one entry to the job's Redis stream in the same atomic step
(app/jobs.py), so the stream is the record's history. A reader starts with a `snapshot` of the job
(whose id is the stream's latest entry), then follows the stream with a blocking XREAD: `status`,
`progress` and `preview` events carry the fields that changed; when the job ends, `done` carries the
whole final job and the stream closes. An event's id is its stream entry id, so a client reconnecting
with `Last-Event-ID` receives exactly the entries after it. The server holds no per-client loop
beyond the blocking read.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio.to_thread
import redis.asyncio
from fastapi.sse import ServerSentEvent

from app.jobs import TERMINAL, JobRecord, JobStore
from app.views import absolute_url

BLOCK_MILLISECONDS = 10_000
_STREAM_ID = re.compile(r"^\d+-\d+$")


class InvalidEventId(ValueError):
    pass


def check_event_id(value: str | None) -> str | None:
    if value is not None and not _STREAM_ID.match(value):
        raise InvalidEventId(f"Last-Event-ID must be an event id this stream sent; got {value!r}")
    return value


async def job_events(
    store: JobStore,
    connection: redis.asyncio.Redis,
    record: JobRecord,
    render: Callable[[JobRecord], Any],
    last_event_id: str | None,
    base_url: str,
) -> AsyncIterator[ServerSentEvent]:
    """The events of `record`'s job after `last_event_id` (after a snapshot when there is none); the
    stored paths in changed fields become URLs under `base_url`, as `render` makes them."""
    job_id = record.id
    stream = store.keys.events(job_id)
    last = check_event_id(last_event_id)
    if last is None:
        latest = await connection.xrevrange(stream, count=1)
        last = _text(latest[0][0]) if latest else "0-0"
        current = await _reread(store, job_id) or record
        if current.status in TERMINAL:
            yield ServerSentEvent(event="done", id=last, data=await _render(render, current))
            return
        yield ServerSentEvent(event="snapshot", id=last, data=await _render(render, current))
    while True:
        answer = await connection.xread({stream: last}, block=BLOCK_MILLISECONDS, count=100)
        if not answer:
            # Quiet for a while: end if the job ended (or is gone) without an entry left to read.
            current = await _reread(store, job_id)
            if current is None:
                return
            if current.status in TERMINAL and not await connection.xread({stream: last}, count=1):
                yield ServerSentEvent(event="done", id=last, data=await _render(render, current))
                return
            continue
        for entry_id, fields in answer[0][1]:
            last = _text(entry_id)
            changed = json.loads(fields[b"data"])
            if changed.get("status") in TERMINAL:
                final = await _reread(store, job_id)
                data = await _render(render, final) if final else changed
                yield ServerSentEvent(event="done", id=last, data=data)
                return
            if "preview_url" in changed:
                changed["preview_url"] = absolute_url(base_url, changed["preview_url"])
            yield ServerSentEvent(event=_text(fields[b"event"]), id=last, data=changed)


async def _render(render: Callable[[JobRecord], Any], record: JobRecord) -> Any:
    # The job view reads Redis (queue position, ETA): off the event loop.
    return await anyio.to_thread.run_sync(render, record)


async def _reread(store: JobStore, job_id: str) -> JobRecord | None:
    return await anyio.to_thread.run_sync(store.get, job_id)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
