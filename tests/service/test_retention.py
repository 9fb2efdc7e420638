"""A job's files expire with its record: the janitor deletes them on local storage, a lifecycle rule
(set by `show1 storage-lifecycle --apply`, read back from an S3 server over HTTP) on S3; a file asked
for after it went is a 410 that says so, on both faces and both backends, never a 500 or a redirect."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import boto3
import pytest
import redis
from click.testing import CliRunner
from fastapi.testclient import TestClient

from app.jobs import JobStore, owner_of
from app.main import create_app
from app.retention import lifecycle_rules, sweep_expired_files
from app.settings import Settings
from app.storage import LocalStorage, attempt_keys, thumbnail_key, video_key
from tests.conftest import REDIS_URL, s3_env
from worker.cli import main

KEY = "key-one"
AUTH = {"Authorization": f"Bearer {KEY}"}
TTL = 3600


def succeeded_job(store: JobStore) -> str:
    params = {"output_size": [64, 112], "fps": 8, "num_keyframes": 2, "prompt": "a cat"}
    record = store.create(owner_of(KEY), {"params": params, "api": "v1"})
    attempt = store.claim(record.id, "w")
    result = {"content_type": "video/mp4", "bytes": 1, "width": 112, "height": 64, "frames": 5, "fps": 8}
    assert store.publish(record.id, attempt, result, {})
    return record.id


def write_files(storage: LocalStorage, job_id: str, age_seconds: float) -> list[Path]:
    paths = []
    for key in attempt_keys(job_id, 1):
        storage.put(key, b"x", "application/octet-stream")
        path = storage.file_path(key)
        then = time.time() - age_seconds
        os.utime(path, (then, then))
        paths.append(path)
    return paths


def test_the_janitor_deletes_files_whose_record_expired(
    namespace: str, redis_connection: redis.Redis, tmp_path: Path
):
    store = JobStore(redis_connection, namespace, TTL)
    storage = LocalStorage(tmp_path / "storage")
    live = succeeded_job(store)
    expired = succeeded_job(store)
    redis_connection.delete(store.keys.record(expired))  # what the record's TTL does
    young = "f" * 32  # no record, but files younger than a record lives: cannot have expired yet
    live_files = write_files(storage, live, 2 * TTL)
    expired_files = write_files(storage, expired, TTL + 60)
    young_files = write_files(storage, young, 60)

    assert sweep_expired_files(store, storage, TTL) == len(expired_files)
    assert not any(path.exists() for path in expired_files)
    assert all(path.exists() for path in live_files + young_files)
    assert sweep_expired_files(store, storage, TTL) == 0


@pytest.fixture
def local_client(namespace: str, tmp_path: Path):  # noqa: ANN201
    settings = Settings(
        redis_url=REDIS_URL,
        key_prefix=namespace,
        queue_name=namespace,
        api_keys=KEY,
        local_storage_dir=tmp_path / "storage",
    )
    with TestClient(create_app(settings)) as client:
        yield client


def test_a_gone_video_is_410_on_both_faces_on_local_storage(local_client: TestClient):
    services = local_client.app.state.services
    job_id = succeeded_job(services.store)
    assert_gone(local_client, job_id)
    services.storage.put(video_key(job_id, 1), b"\0\0\0\x18ftypmp42", "video/mp4")
    assert local_client.get(f"/v1/videos/{job_id}/content", headers=AUTH).status_code == 200


def assert_gone(client: TestClient, job_id: str) -> None:
    answer = client.get(f"/v1/videos/{job_id}/content", headers=AUTH, follow_redirects=False)
    assert answer.status_code == 410, answer.text
    assert "no longer stored" in answer.json()["detail"] and "SHOW1_JOB_RECORD_TTL_SECONDS" in answer.text
    for variant in ("video", "thumbnail", "spritesheet"):
        path = f"/openai/v1/videos/{job_id}/content"
        answer = client.get(path, params={"variant": variant}, headers=AUTH, follow_redirects=False)
        assert answer.status_code == 410, (variant, answer.text)
        error = answer.json()["error"]
        assert error["code"] == "gone"
        assert f"the {variant} of job {job_id} is no longer stored" in error["message"]
    # A record that is gone too: 404, saying what it looks for.
    missing = client.get(f"/v1/videos/{'e' * 32}/content", headers=AUTH)
    assert missing.status_code == 404 and "no video job" in missing.json()["detail"]


def test_on_s3_a_gone_video_is_410_not_a_redirect_and_the_rule_is_applied(
    namespace: str, s3_server: str, monkeypatch: pytest.MonkeyPatch
):
    env = {**s3_env(s3_server, bucket=namespace), "SHOW1_JOB_RECORD_TTL_SECONDS": str(2 * 24 * 3600)}
    credentials = {"aws_access_key_id": "test", "aws_secret_access_key": "test", "region_name": "us-east-1"}
    s3 = boto3.client("s3", endpoint_url=s3_server, **credentials)
    # A rule of someone else's on the bucket stays.
    foreign = {"ID": "logs", "Filter": {"Prefix": "logs/"}, "Status": "Enabled", "Expiration": {"Days": 30}}
    s3.put_bucket_lifecycle_configuration(Bucket=namespace, LifecycleConfiguration={"Rules": [foreign]})
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    from app.settings import get_settings

    get_settings.cache_clear()
    try:
        printed = CliRunner().invoke(main, ["storage-lifecycle"])
        applied = CliRunner().invoke(main, ["storage-lifecycle", "--apply"])
    finally:
        get_settings.cache_clear()
    assert printed.exit_code == 0 and applied.exit_code == 0, applied.output
    settings = Settings(**{name.removeprefix("SHOW1_").lower(): value for name, value in env.items()})
    expected = lifecycle_rules(settings)
    assert json.loads(printed.output)["Rules"] == expected
    # Read back from the server: ours as computed, the foreign rule kept.
    rules = {rule["ID"]: rule for rule in s3.get_bucket_lifecycle_configuration(Bucket=namespace)["Rules"]}
    assert set(rules) == {"logs", "show1-job-files", "show1-stage-outputs"}
    job_files = rules["show1-job-files"]
    assert job_files["Filter"]["Prefix"] == "videos/" and job_files["Status"] == "Enabled"
    # Two days of record plus the longest run (3 attempts of an hour), rounded up to whole days.
    assert job_files["Expiration"]["Days"] == 3 == expected[0]["Expiration"]["Days"]
    assert rules["show1-stage-outputs"]["Filter"]["Prefix"] == "stages/"
    read_back = s3.get_bucket_lifecycle_configuration(Bucket=namespace)["Rules"]
    assert json.loads(applied.output)["Rules"] == read_back

    api_settings = Settings(
        redis_url=REDIS_URL,
        key_prefix=namespace,
        queue_name=namespace,
        api_keys=KEY,
        storage_backend="s3",
        s3_endpoint_url=s3_server,
        s3_bucket=namespace,
        s3_access_key_id="test",
        s3_secret_access_key="test",
    )
    with TestClient(create_app(api_settings)) as client:
        services = client.app.state.services
        job_id = succeeded_job(services.store)
        assert_gone(client, job_id)
        services.storage.put(video_key(job_id, 1), b"\0\0\0\x18ftypmp42", "video/mp4")
        services.storage.put(thumbnail_key(job_id, 1), b"\xff\xd8", "image/jpeg")
        found = client.get(f"/v1/videos/{job_id}/content", headers=AUTH, follow_redirects=False)
        assert found.status_code == 302 and found.headers["location"].startswith(s3_server)


def test_show1_storage_lifecycle_refuses_local_storage(monkeypatch: pytest.MonkeyPatch):
    from app.settings import get_settings

    monkeypatch.setenv("SHOW1_STORAGE_BACKEND", "local")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(main, ["storage-lifecycle", "--apply"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code != 0 and "janitor" in result.output
