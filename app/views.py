"""The job object as clients see it, built from a stored record: used by the API and by webhooks."""

from __future__ import annotations

from app.jobs import JobRecord
from app.schemas import Job
from app.storage import Storage, video_key


def render_job(
    record: JobRecord,
    storage: Storage,
    base_url: str,
    queue_position: int | None = None,
    eta_seconds: float | None = None,
) -> Job:
    """The job object; `queue_position` and `eta_seconds` are what the queue says of a queued job."""
    data = dict(record.fields)
    data["queue_position"] = queue_position
    data["stored_stages"] = list(record["stages"] or {})
    data["draft"] = bool(record["draft"])
    data["job_stages"] = record["job_stages"] or []
    if eta_seconds is not None:
        data["eta_seconds"] = eta_seconds
    if data.get("result"):
        served_by_api = f"{base_url.rstrip('/')}/v1/videos/{record.id}/content"
        url = storage.download_url(video_key(record.id, record.published_attempt)) or served_by_api
        data["result"] = {**data["result"], "url": url}
    return Job.model_validate(data)
