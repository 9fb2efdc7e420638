"""The OpenAI face in-process against a real Redis: error shapes everywhere under its prefix, /v1 untouched,
idempotency and the job store shared by both faces."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.api.test_api import AUTH, make_client


@pytest.fixture
def client(namespace: str, tmp_path: Path) -> Iterator[TestClient]:
    with make_client(namespace, tmp_path) as test_client:
        yield test_client


def assert_openai_error(response, status: int) -> dict:  # noqa: ANN001 - httpx.Response
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


def test_every_error_under_the_prefix_is_openai_shaped(client: TestClient):
    assert_openai_error(client.get("/openai/v1/videos"), 401)
    assert (
        assert_openai_error(client.get("/openai/v1/nothing-here", headers=AUTH), 404)["code"] == "not_found"
    )
    too_big = client.post("/openai/v1/videos", content=b"x" * 20000, headers=AUTH)
    assert assert_openai_error(too_big, 413)["code"] == "request_too_large"
    bad_query = client.get("/openai/v1/videos", params={"limit": 0}, headers=AUTH)
    assert assert_openai_error(bad_query, 400)["param"] == "limit"
    assert assert_openai_error(client.post("/openai/v1/videos", content=b"{", headers=AUTH), 400)
    unknown_after = client.get("/openai/v1/videos", params={"after": "nope"}, headers=AUTH)
    assert assert_openai_error(unknown_after, 400)["param"] == "after"
    # /v1 keeps its own format.
    assert "detail" in client.get("/v1/videos").json()
    assert client.post("/v1/videos", json={"prompt": ""}, headers=AUTH).status_code == 422


def test_both_faces_share_jobs_and_idempotency(client: TestClient):
    headers = {**AUTH, "Idempotency-Key": "order-1"}
    first = client.post("/openai/v1/videos", data={"prompt": "a cat", "seed": "5"}, headers=headers)
    assert first.status_code == 200 and first.headers["location"].startswith("/openai/v1/videos/")
    again = client.post("/openai/v1/videos", json={"prompt": "a cat", "seed": 5}, headers=headers)
    assert again.json()["id"] == first.json()["id"]  # form and JSON bodies mean the same request
    video_id = first.json()["id"]
    job = client.get(f"/v1/videos/{video_id}", headers=AUTH).json()
    assert job["params"]["seed"] == 5 and job["params"]["output_size"] == [720, 1280]
    assert (
        client.get(f"/openai/v1/videos/{video_id}", headers={"Authorization": "Bearer key-two"}).status_code
        == 404
    )


def test_openapi_lists_the_openai_routes(client: TestClient):
    paths = client.get("/openapi.json").json()["paths"]
    assert {
        "/openai/v1/videos",
        "/openai/v1/videos/{video_id}",
        "/openai/v1/videos/{video_id}/content",
    } <= set(paths)
    assert "multipart/form-data" in paths["/openai/v1/videos"]["post"]["requestBody"]["content"]


def test_in_flight_limit_is_429_with_retry_after(namespace: str, tmp_path: Path):
    with make_client(namespace, tmp_path, max_jobs_in_flight_per_key=1) as client:
        assert client.post("/openai/v1/videos", json={"prompt": "one"}, headers=AUTH).status_code == 200
        refused = client.post("/openai/v1/videos", json={"prompt": "two"}, headers=AUTH)
        error = assert_openai_error(refused, 429)
        assert error["code"] == "too_many_jobs_in_flight" and error["type"] == "rate_limit_error"
        assert refused.headers["retry-after"] == "30"
