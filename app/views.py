"""The job object as clients see it, built from a stored record: used by the API and by webhooks."""

from __future__ import annotations

from app.jobs import JobRecord
from app.schemas import Job
from app.storage import Storage, video_key


def preview_path(job_id: str) -> str:
    """Where the API serves a job's keyframe preview; records store this path, not a URL, because the
    worker that writes it does not know the address clients reach the API at."""
    return f"/v1/videos/{job_id}/preview"


def content_path(job_id: str) -> str:
    return f"/v1/videos/{job_id}/content"


def absolute_url(base_url: str, url: str | None) -> str | None:
    """A path the service stored (`/v1/...`) as a URL for clients of `base_url`; URLs as they are."""
    if url is None or not url.startswith("/"):
        return url
    return base_url.rstrip("/") + url


def render_job(
    record: JobRecord,
    storage: Storage,
    base_url: str,
    queue_position: int | None = None,
    eta_seconds: float | None = None,
) -> Job:
    """The job object, its URLs under `base_url` (where its reader reaches the API); `queue_position` and
    `eta_seconds` are what the queue says of a queued job."""
    data = dict(record.fields)
    data["queue_position"] = queue_position
    data["stored_stages"] = list(record["stages"] or {})
    data["draft"] = bool(record["draft"])
    data["job_stages"] = record["job_stages"] or []
    if eta_seconds is not None:
        data["eta_seconds"] = eta_seconds
    data["preview_url"] = absolute_url(base_url, data.get("preview_url"))
    if data.get("result"):
        served_by_api = absolute_url(base_url, content_path(record.id))
        url = storage.download_url(video_key(record.id, record.published_attempt)) or served_by_api
        data["result"] = {**data["result"], "url": url}
    return Job.model_validate(data)
