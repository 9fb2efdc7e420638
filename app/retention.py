"""How long a job's files are kept, and what deletes them.

A job's files (its video, JSON record, keyframe preview, thumbnail and sprite sheet: everything under
`videos/`) expire with its record, SHOW1_JOB_RECORD_TTL_SECONDS after the job's last change:
- on local storage the workers' janitor deletes each file older than that whose job record is gone
  (`sweep_expired_files`), so the API never serves a file it has no record for and no file outlives its
  record by more than a janitor round;
- on S3 a lifecycle rule on the bucket does it (`lifecycle_rules`; `show1 storage-lifecycle --apply`
  sets it). S3 counts whole days from an object's creation, and a file can be written up to a job's
  longest run before the job ends, so the rule's days are the record lifetime plus that run, rounded up:
  a file never goes before its record does, and at most a day and that run after.
Stage outputs (`stages/`) are tracked one by one and deleted by the janitor on both backends
(app/actions.py: sweep_stage_outputs); their lifecycle rule is a backstop for any whose tracking was lost.
A video asked for after it went is a 410 that says so (app/actions.py: stored_file).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from app.jobs import JobStore
from app.settings import Settings
from app.storage import (
    JOB_FILES_PREFIX,
    STAGE_OUTPUTS_PREFIX,
    LocalStorage,
    Storage,
    StorageError,
    job_id_of,
)

log = logging.getLogger("show1.retention")

DAY_SECONDS = 24 * 3600
# The rules `show1 storage-lifecycle` owns in a bucket's lifecycle configuration; others are kept.
RULE_ID_PREFIX = "show1-"


def longest_run_seconds(settings: Settings) -> int:
    """The longest a job may run from its first file to its end: every attempt to its time limit."""
    return settings.job_timeout_seconds * (settings.job_retries + 1)


def lifecycle_rules(settings: Settings) -> list[dict[str, Any]]:
    """The S3 lifecycle rules that expire the service's files (deploy/README.md shows them)."""
    run = longest_run_seconds(settings)
    job_files_days = math.ceil((settings.job_record_ttl_seconds + run) / DAY_SECONDS)
    stage_lifetime = max(settings.job_record_ttl_seconds, settings.draft_ttl_seconds)
    stage_days = math.ceil((stage_lifetime + run) / DAY_SECONDS)
    return [
        _expire(f"{RULE_ID_PREFIX}job-files", JOB_FILES_PREFIX, job_files_days),
        _expire(f"{RULE_ID_PREFIX}stage-outputs", STAGE_OUTPUTS_PREFIX, stage_days),
    ]


def merged_rules(existing: list[dict[str, Any]], ours: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A bucket's rules with the service's replaced by `ours`: other rules on the bucket stay."""
    return [rule for rule in existing if not str(rule.get("ID", "")).startswith(RULE_ID_PREFIX)] + ours


def _expire(rule_id: str, prefix: str, days: int) -> dict[str, Any]:
    return {
        "ID": rule_id,
        "Filter": {"Prefix": prefix},
        "Status": "Enabled",
        "Expiration": {"Days": days},
        # Parts of uploads that never completed (a worker killed mid-upload) go too.
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
    }


def sweep_expired_files(
    store: JobStore, storage: Storage, record_ttl_seconds: int, now: float | None = None
) -> int:
    """Delete local files whose job record is gone (a janitor's round); returns how many went. On S3
    the bucket's lifecycle rule does this: nothing to do here.

    Only files older than the record lifetime are looked at: a younger file's record cannot have expired.
    """
    if not isinstance(storage, LocalStorage):
        return 0
    now = time.time() if now is None else now
    records: dict[str, bool] = {}
    gone = 0
    for key in storage.keys_older_than(JOB_FILES_PREFIX, now - record_ttl_seconds):
        job_id = job_id_of(key)
        if job_id not in records:
            records[job_id] = store.get(job_id) is not None
        if records[job_id]:
            continue
        try:
            storage.delete(key)
        except StorageError as error:
            log.warning("expired file %s not deleted yet: %s", key, error)
            continue
        gone += 1
    return gone
