"""Where videos go: an S3-compatible bucket (boto3 over HTTP) or a local folder, behind one interface."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from app.settings import Settings


class StorageError(Exception):
    """Storage could not be reached or refused the operation; worth retrying later."""


class Storage(Protocol):
    def put(self, key: str, data: bytes, content_type: str) -> None: ...

    def get(self, key: str) -> bytes:
        """The object's bytes; StorageError when it is missing or storage is unreachable."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object; a missing one is not an error."""
        ...

    def exists(self, key: str) -> bool:
        """Whether the object is stored; StorageError when storage cannot say."""
        ...

    def download_url(self, key: str) -> str | None:
        """A URL the client can fetch directly, or None when the API serves the bytes itself."""
        ...

    def ping(self) -> None:
        """Raise StorageError unless storage is reachable and usable."""
        ...


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"storage key escapes the storage folder: {key!r}")
        return path

    def put(self, key: str, data: bytes, content_type: str) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.name + ".partial")
            partial.write_bytes(data)
            partial.replace(path)
        except OSError as error:
            raise StorageError(f"local storage write failed: {error}") from error

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except OSError as error:
            raise StorageError(f"local storage read of {key} failed: {error}") from error

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def keys_older_than(self, prefix: str, before: float) -> Iterator[str]:
        """Keys under `prefix` (a folder, `videos/`) last written before the unix time `before`."""
        folder = self._path(prefix.rstrip("/"))
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            return
        except OSError as error:
            raise StorageError(f"local storage listing of {prefix} failed: {error}") from error
        for entry in entries:
            with contextlib.suppress(FileNotFoundError):  # deleted meanwhile
                if entry.is_file() and entry.stat().st_mtime < before:
                    yield f"{prefix.rstrip('/')}/{entry.name}"

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as error:
            raise StorageError(f"local storage delete failed: {error}") from error

    def file_path(self, key: str) -> Path:
        return self._path(key)

    def download_url(self, key: str) -> str | None:
        return None

    def ping(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StorageError(f"local storage folder unusable: {error}") from error


class S3Storage:
    def __init__(self, settings: Settings) -> None:
        self.bucket = settings.s3_bucket
        self.expiry = settings.presign_expiry_seconds
        config = Config(
            region_name=settings.s3_region,
            s3={"addressing_style": settings.s3_addressing_style},
            signature_version="s3v4",
            connect_timeout=3,
            read_timeout=30,
            retries={"max_attempts": 3, "mode": "standard"},
        )
        credentials = {
            "aws_access_key_id": settings.s3_access_key_id or None,
            "aws_secret_access_key": settings.s3_secret_access_key or None,
        }
        self.client = boto3.client(
            "s3", endpoint_url=settings.s3_endpoint_url or None, config=config, **credentials
        )
        # Inside a cluster the service may reach storage by a name clients cannot resolve.
        public = settings.s3_public_endpoint_url or settings.s3_endpoint_url or None
        self.signer = boto3.client("s3", endpoint_url=public, config=config, **credentials)

    def put(self, key: str, data: bytes, content_type: str) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)
        except (BotoCoreError, ClientError) as error:
            raise StorageError(f"S3 upload of {key} failed: {error}") from error

    def get(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except (BotoCoreError, ClientError) as error:
            raise StorageError(f"S3 read of {key} failed: {error}") from error

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except (BotoCoreError, ClientError) as error:
            raise StorageError(f"S3 delete of {key} failed: {error}") from error

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise StorageError(f"S3 lookup of {key} failed: {error}") from error
        except BotoCoreError as error:
            raise StorageError(f"S3 lookup of {key} failed: {error}") from error
        return True

    def lifecycle_rules(self) -> list[dict[str, Any]]:
        """The bucket's lifecycle rules, as S3 returns them (none: an empty list)."""
        try:
            return self.client.get_bucket_lifecycle_configuration(Bucket=self.bucket)["Rules"]
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "NoSuchLifecycleConfiguration":
                return []
            raise StorageError(f"S3 lifecycle of {self.bucket} unreadable: {error}") from error
        except BotoCoreError as error:
            raise StorageError(f"S3 lifecycle of {self.bucket} unreadable: {error}") from error

    def put_lifecycle_rules(self, rules: list[dict[str, Any]]) -> None:
        """Replace the bucket's lifecycle rules with `rules`."""
        try:
            self.client.put_bucket_lifecycle_configuration(
                Bucket=self.bucket, LifecycleConfiguration={"Rules": rules}
            )
        except (BotoCoreError, ClientError) as error:
            raise StorageError(f"S3 lifecycle of {self.bucket} not set: {error}") from error

    def download_url(self, key: str) -> str | None:
        # Signing is local computation: it works even while the endpoint is down.
        return self.signer.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=self.expiry
        )

    def ping(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as error:
            raise StorageError(f"S3 bucket {self.bucket} unreachable: {error}") from error


def make_storage(settings: Settings) -> Storage:
    if settings.storage_backend == "s3":
        return S3Storage(settings)
    return LocalStorage(settings.local_storage_dir)


# A job's files, by prefix: those that expire with its record (the video, its JSON record, the preview,
# the thumbnail, the sprite sheet: app/retention.py), and its stage outputs (tracked one by one).
JOB_FILES_PREFIX = "videos/"
STAGE_OUTPUTS_PREFIX = "stages/"


def job_id_of(key: str) -> str:
    """The job a file under JOB_FILES_PREFIX or STAGE_OUTPUTS_PREFIX belongs to."""
    return key.rsplit("/", 1)[-1].split(".", 1)[0]


# Every attempt at a job writes its own files: a stale attempt (a worker frozen past its heartbeat, then
# resumed) can never overwrite what the winning attempt published. The record says which attempt's
# files are the job's (`published_attempt`, `preview_attempt`).
def video_key(job_id: str, attempt: int) -> str:
    return f"{JOB_FILES_PREFIX}{job_id}.{attempt}.mp4"


def record_key(job_id: str, attempt: int) -> str:
    return f"{JOB_FILES_PREFIX}{job_id}.{attempt}.json"


def preview_key(job_id: str, attempt: int) -> str:
    return f"{JOB_FILES_PREFIX}{job_id}.{attempt}.preview.png"


def thumbnail_key(job_id: str, attempt: int) -> str:
    return f"{JOB_FILES_PREFIX}{job_id}.{attempt}.thumbnail.jpg"


def spritesheet_key(job_id: str, attempt: int) -> str:
    return f"{JOB_FILES_PREFIX}{job_id}.{attempt}.spritesheet.jpg"


def stage_output_key(job_id: str, attempt: int, name: str) -> str:
    """A stage output of one attempt (models/stage_outputs.py names them)."""
    return f"{STAGE_OUTPUTS_PREFIX}{job_id}.{attempt}.{name}.pt"


def input_key(job_id: str, field: str, index: int | None) -> str:
    """An input file of a job, as it came in (app/inputs.py)."""
    return f"inputs/{job_id}/{field}" if index is None else f"inputs/{job_id}/{field}.{index}"


def is_own_stage_output(job_id: str, key: str) -> bool:
    """Whether `key` is one of this job's stage outputs (a finished draft's job reads its draft's too)."""
    return key.startswith(f"{STAGE_OUTPUTS_PREFIX}{job_id}.")


def attempt_keys(job_id: str, attempt: int) -> tuple[str, ...]:
    """Every file one attempt at a job may write."""
    kinds = (video_key, record_key, preview_key, thumbnail_key, spritesheet_key)
    return tuple(key(job_id, attempt) for key in kinds)


def job_keys(job_id: str, attempts: int) -> tuple[str, ...]:
    """Every file a job's attempts may have written beside its stage outputs (which the job store
    tracks: JobStore.track_stage_output): what deleting a job removes."""
    return tuple(key for attempt in range(1, attempts + 1) for key in attempt_keys(job_id, attempt))
