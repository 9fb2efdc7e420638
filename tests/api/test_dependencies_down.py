"""Redis or storage down: every route answers 503 with Retry-After, naming the dependency as /readyz
names it, on both faces; never a 500. Routes are taken from the app itself, so a new one is covered."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.jobs import JobStore
from app.main import create_app
from app.settings import Settings
from app.storage import video_key
from tests.conftest import REDIS_URL, free_port
from tests.service.test_retention import KEY, succeeded_job

AUTH = {"Authorization": f"Bearer {KEY}"}
JOB_ID = "0" * 32
# What each route needs to get past parsing to the point where it uses its dependencies.
BODIES = {("POST", "/v1/videos"): {"prompt": "a cat"}, ("POST", "/openai/v1/videos"): {"prompt": "a cat"}}


def api_routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path) of both faces, as the app's OpenAPI document lists them, with path
    parameters filled in."""
    routes = []
    for path, operations in app.openapi()["paths"].items():
        if path.startswith(("/v1/", "/openai/v1/")):
            routes += [(method.upper(), re.sub(r"\{[^}]+\}", JOB_ID, path)) for method in operations]
    return routes


def test_redis_down_is_503_naming_redis_on_every_route(tmp_path: Path):
    settings = Settings(
        redis_url=f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
        api_keys=KEY,
        local_storage_dir=tmp_path / "storage",
    )
    app = create_app(settings)
    routes = api_routes(app)
    assert len(routes) >= 15 and ("POST", "/v1/videos") in routes and ("GET", "/openai/v1/videos") in routes
    with TestClient(app, raise_server_exceptions=False) as client:
        for method, path in routes:
            answer = client.request(method, path, json=BODIES.get((method, path)), headers=AUTH)
            assert answer.status_code == 503, (method, path, answer.status_code, answer.text)
            assert answer.headers["retry-after"].isdigit(), (method, path)
            if path.startswith("/openai/v1/"):
                error = answer.json()["error"]
                assert "redis" in error["message"] and error["code"] == "redis_unavailable", error
                assert error["type"] == "server_error"
            else:
                assert "redis is unavailable" in answer.json()["detail"], (method, path)
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["detail"]["redis"] == "down"
        assert ready.headers["retry-after"].isdigit()
        assert client.get("/healthz").status_code == 200  # liveness: the process itself is fine


@pytest.fixture
def store(namespace: str, redis_connection: redis.Redis) -> JobStore:
    return JobStore(redis_connection, namespace, 3600)


def test_storage_down_is_503_naming_storage(namespace: str, store: JobStore):
    job_id = succeeded_job(store)
    settings = Settings(
        redis_url=REDIS_URL,
        key_prefix=namespace,
        queue_name=namespace,
        api_keys=KEY,
        storage_backend="s3",
        s3_endpoint_url=f"http://127.0.0.1:{free_port()}",  # nothing listens there
        s3_access_key_id="test",
        s3_secret_access_key="test",
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        for path in (
            f"/v1/videos/{job_id}/content",
            f"/openai/v1/videos/{job_id}/content",
            f"/openai/v1/videos/{job_id}/content?variant=thumbnail",
        ):
            answer = client.get(path, headers=AUTH, follow_redirects=False)
            assert answer.status_code == 503, (path, answer.status_code, answer.text)
            assert answer.headers["retry-after"].isdigit()
            assert "storage is unavailable" in answer.text, answer.text
        assert client.get("/readyz").json()["detail"] == {"storage": "down"}
        # What needs no storage still works.
        assert client.get(f"/v1/videos/{job_id}", headers=AUTH).json()["status"] == "succeeded"


def test_storage_up_serves_the_file(namespace: str, store: JobStore, tmp_path: Path):
    """The control: the same job with its file in place is served, on both faces."""
    job_id = succeeded_job(store)
    storage_dir = tmp_path / "storage"
    (storage_dir / "videos").mkdir(parents=True)
    (storage_dir / video_key(job_id, 1)).write_bytes(b"\0\0\0\x18ftypmp42")
    settings = Settings(
        redis_url=REDIS_URL,
        key_prefix=namespace,
        queue_name=namespace,
        api_keys=KEY,
        local_storage_dir=storage_dir,
    )
    with TestClient(create_app(settings)) as client:
        for path in (f"/v1/videos/{job_id}/content", f"/openai/v1/videos/{job_id}/content"):
            answer = client.get(path, headers=AUTH)
            assert answer.status_code == 200 and answer.content[4:8] == b"ftyp", path
