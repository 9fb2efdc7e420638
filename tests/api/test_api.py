"""The HTTP API in-process against a real Redis: auth, validation, limits, idempotency, the contract."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.conftest import REDIS_URL

KEY = "key-one"
AUTH = {"Authorization": f"Bearer {KEY}"}


def make_client(namespace: str, tmp_path: Path, **overrides: object) -> TestClient:
    values = {
        "redis_url": REDIS_URL,
        "key_prefix": namespace,
        "queue_name": namespace,
        "api_keys": f"{KEY},key-two",
        "local_storage_dir": tmp_path / "storage",
        **overrides,
    }
    settings = Settings(**values)
    return TestClient(create_app(settings))


@pytest.fixture
def client(namespace: str, tmp_path: Path) -> Iterator[TestClient]:
    with make_client(namespace, tmp_path) as test_client:
        yield test_client


def queued(namespace: str) -> int:
    return redis.Redis.from_url(REDIS_URL).llen(f"rq:queue:{namespace}")


def test_submit_poll_list_cancel(client: TestClient, namespace: str):
    created = client.post("/v1/videos", json={"prompt": "a cat", "seed": 5}, headers=AUTH)
    assert created.status_code == 202
    job = created.json()
    assert created.headers["location"] == f"/v1/videos/{job['id']}"
    assert job["status"] == "queued" and job["queue_position"] == 0
    assert job["params"]["seed"] == 5 and job["params"]["steps"]["sr1"] == 125
    assert job["params"]["keyframe_size"] == [40, 64] and job["params"]["output_size"] == [320, 576]
    assert queued(namespace) == 1

    second = client.post("/v1/videos", json={"prompt": "a dog"}, headers=AUTH).json()
    assert isinstance(second["params"]["seed"], int)
    assert client.get(f"/v1/videos/{second['id']}", headers=AUTH).json()["queue_position"] == 1

    page = client.get("/v1/videos", params={"limit": 1}, headers=AUTH).json()
    assert [item["id"] for item in page["items"]] == [second["id"]]
    rest = client.get("/v1/videos", params={"limit": 1, "cursor": page["next_cursor"]}, headers=AUTH).json()
    assert [item["id"] for item in rest["items"]] == [job["id"]]

    assert client.delete(f"/v1/videos/{job['id']}", headers=AUTH).json()["status"] == "canceled"
    assert queued(namespace) == 1
    canceled = client.get("/v1/videos", params={"status": "canceled"}, headers=AUTH).json()["items"]
    assert [item["id"] for item in canceled] == [job["id"]]
    assert client.get(f"/v1/videos/{job['id']}/content", headers=AUTH).status_code == 409


def test_jobs_are_private_to_their_key(client: TestClient):
    job = client.post("/v1/videos", json={"prompt": "a cat"}, headers=AUTH).json()
    other = {"Authorization": "Bearer key-two"}
    assert client.get(f"/v1/videos/{job['id']}", headers=other).status_code == 404
    assert client.get("/v1/videos", headers=other).json()["items"] == []
    assert client.delete(f"/v1/videos/{job['id']}", headers=other).status_code == 404


@pytest.mark.parametrize(
    "headers, reason",
    [({}, "missing bearer API key"), ({"Authorization": "Bearer nope"}, "unknown API key")],
)
def test_auth_required(client: TestClient, namespace: str, headers: dict, reason: str):
    for method, path in [("post", "/v1/videos"), ("get", "/v1/videos"), ("get", "/v1/videos/x")]:
        response = client.request(method, path, json={"prompt": "a cat"}, headers=headers)
        assert response.status_code == 401 and response.json()["detail"] == reason
        assert response.headers["www-authenticate"] == "Bearer"
    assert queued(namespace) == 0


@pytest.mark.parametrize(
    "body, field",
    [
        ({}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "x" * 1001}, "prompt"),
        ({"prompt": "a", "num_keyframes": 1}, "num_keyframes"),
        ({"prompt": "a", "num_keyframes": 17}, "num_keyframes"),
        ({"prompt": "a", "output_size": {"height": 321, "width": 576}}, "output_size"),
        ({"prompt": "a", "steps": {"sr1": 0}}, "steps"),
        ({"prompt": "a", "seed": -1}, "seed"),
        ({"prompt": "a", "webhook_url": "not a url"}, "webhook_url"),
        ({"prompt": "a", "colour": "red"}, "colour"),
    ],
)
def test_bad_input_names_the_field_and_enqueues_nothing(
    client: TestClient, namespace: str, body: dict, field: str
):
    response = client.post("/v1/videos", json=body, headers=AUTH)
    assert response.status_code == 422
    errors = response.json()["detail"]
    assert any(field in error["loc"] for error in errors), errors
    assert all(error["msg"] for error in errors)
    assert queued(namespace) == 0
    assert client.get("/v1/videos", headers=AUTH).json()["items"] == []


def test_request_body_limit(client: TestClient, namespace: str):
    response = client.post(
        "/v1/videos",
        content=b'{"prompt": "' + b"a" * 20000 + b'"}',
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert queued(namespace) == 0


def test_rate_limit(namespace: str, tmp_path: Path):
    with make_client(namespace, tmp_path, rate_limit_per_minute=3) as client:
        codes = [client.get("/v1/videos", headers=AUTH).status_code for _ in range(3)]
        limited = client.post("/v1/videos", json={"prompt": "a cat"}, headers=AUTH)
    assert codes == [200, 200, 200]
    assert limited.status_code == 429 and 1 <= int(limited.headers["retry-after"]) <= 60
    assert queued(namespace) == 0


def test_in_flight_limit(namespace: str, tmp_path: Path):
    with make_client(namespace, tmp_path, max_jobs_in_flight_per_key=2) as client:
        first = client.post("/v1/videos", json={"prompt": "1"}, headers=AUTH).json()
        client.post("/v1/videos", json={"prompt": "2"}, headers=AUTH)
        third = client.post("/v1/videos", json={"prompt": "3"}, headers=AUTH)
        assert third.status_code == 429 and third.headers["retry-after"]
        assert queued(namespace) == 2
        client.delete(f"/v1/videos/{first['id']}", headers=AUTH)
        assert client.post("/v1/videos", json={"prompt": "3"}, headers=AUTH).status_code == 202


def test_idempotency_key(client: TestClient, namespace: str):
    headers = {**AUTH, "Idempotency-Key": "order-17"}
    first = client.post("/v1/videos", json={"prompt": "a cat"}, headers=headers)
    again = client.post("/v1/videos", json={"prompt": "a cat"}, headers=headers)
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["params"]["seed"] == first.json()["params"]["seed"]
    conflict = client.post("/v1/videos", json={"prompt": "a dog"}, headers=headers)
    assert conflict.status_code == 422
    assert conflict.json()["detail"][0]["loc"] == ["header", "idempotency-key"]
    assert queued(namespace) == 1


def test_operations_endpoints(client: TestClient):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    client.post("/v1/videos", json={"prompt": "a cat"}, headers=AUTH)
    text = client.get("/metrics").text
    assert 'show1_jobs{status="queued"} 1.0' in text
    assert "show1_queue_depth 1.0" in text
    assert 'show1_http_requests_total{method="POST",route="/v1/videos",status="202"}' in text


def test_readyz_says_what_is_down_without_addresses(namespace: str, tmp_path: Path):
    with make_client(namespace, tmp_path, redis_url="redis://127.0.0.1:1/0") as client:
        response = client.get("/readyz")
    assert response.status_code == 503 and response.json()["detail"] == {"redis": "down"}
    assert "127.0.0.1" not in response.text


def test_openapi_is_complete_with_examples(client: TestClient):
    spec = client.get("/openapi.json").json()
    assert set(spec["paths"]) >= {
        "/v1/videos",
        "/v1/videos/{job_id}",
        "/v1/videos/{job_id}/content",
        "/v1/videos/{job_id}/preview",
        "/healthz",
        "/readyz",
        "/metrics",
    }
    schemas = spec["components"]["schemas"]
    assert schemas["VideoRequest"]["examples"] and schemas["Job"]["examples"]
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_keyframe_dropout_is_a_named_choice_with_a_service_default(namespace: str, tmp_path: Path):
    with make_client(namespace, tmp_path) as client:
        job = client.post("/v1/videos", json={"prompt": "a cat"}, headers=AUTH).json()
        assert job["params"]["keyframe_dropout"] == "reference"
        off = client.post("/v1/videos", json={"prompt": "a cat", "keyframe_dropout": "off"}, headers=AUTH)
        assert off.json()["params"]["keyframe_dropout"] == "off"
        before = queued(namespace)
        bad = client.post("/v1/videos", json={"prompt": "a cat", "keyframe_dropout": "some"}, headers=AUTH)
        assert bad.status_code == 422
        assert bad.json()["detail"][0]["loc"] == ["body", "keyframe_dropout"]
        assert queued(namespace) == before
    with make_client(namespace, tmp_path, keyframe_dropout="off") as client:
        job = client.post("/v1/videos", json={"prompt": "a cat"}, headers=AUTH).json()
        assert job["params"]["keyframe_dropout"] == "off"


def test_demo_defaults_fill_only_what_the_request_leaves_out(namespace: str, tmp_path: Path):
    with make_client(namespace, tmp_path, demo_defaults=True) as client:
        job = client.post("/v1/videos", json={"prompt": "a cat"}, headers=AUTH).json()
        assert job["params"]["keyframe_size"] == [16, 24] and job["params"]["output_size"] == [64, 112]
        assert set(job["params"]["steps"].values()) == {2}
        body = {"prompt": "a cat", "steps": {"sr1": 5}, "output_size": {"height": 320, "width": 576}}
        explicit = client.post("/v1/videos", json=body, headers=AUTH).json()["params"]
        assert explicit["steps"]["sr1"] == 5 and explicit["steps"]["base"] == 2
        assert explicit["output_size"] == [320, 576] and explicit["keyframe_size"] == [16, 24]
    with make_client(namespace, tmp_path) as client:
        paper = client.post("/v1/videos", json={"prompt": "a cat"}, headers=AUTH).json()["params"]
        assert paper["keyframe_size"] == [40, 64] and paper["steps"]["sr1"] == 125


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        # 2.3 KB that would ask for ~3,000 default videos of compute.
        (
            {
                "num_keyframes": 16,
                "keyframe_size": {"height": 512, "width": 512},
                "output_size": {"height": 2048, "width": 2048},
                "steps": {"base": 200, "interp": 200, "sr1_image": 200, "sr1": 250, "sr2": 150},
            },
            ["body", "keyframe_size"],
        ),
        ({"steps": {"sr1": 250, "base": 200, "interp": 200}, "num_keyframes": 16}, ["body", "steps", "base"]),
    ],
)
def test_a_job_over_the_cost_cap_is_refused_naming_what_drives_it(
    client: TestClient, namespace: str, body: dict, loc: list[str]
):
    answer = client.post("/v1/videos", json={"prompt": "a cat", **body}, headers=AUTH)
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"][0]
    assert detail["loc"] == loc and "times a default video" in detail["msg"]
    assert queued(namespace) == 0


def test_the_paper_defaults_fit_under_the_cost_cap(client: TestClient):
    assert client.post("/v1/videos", json={"prompt": "a cat"}, headers=AUTH).status_code == 202


@pytest.mark.parametrize("size", [{"height": 17, "width": 24}, {"height": 16, "width": 23}])
def test_keyframe_sizes_the_unets_cannot_take_are_refused(client: TestClient, namespace: str, size: dict):
    answer = client.post("/v1/videos", json={"prompt": "a cat", "keyframe_size": size}, headers=AUTH)
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"][:2] == ["body", "keyframe_size"]
    assert queued(namespace) == 0


def test_failed_authentication_is_rate_limited_per_address(namespace: str, tmp_path: Path):
    with make_client(namespace, tmp_path, auth_failures_per_minute=3) as client:
        wrong = {"Authorization": "Bearer guess"}
        assert [client.get("/v1/videos", headers=wrong).status_code for _ in range(3)] == [401] * 3
        blocked = client.get("/v1/videos", headers=wrong)
        assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) >= 1
        # The right key from the same address waits too: guessing must not go on beside it.
        assert client.get("/v1/videos", headers=AUTH).status_code == 429


def test_downloads_count_against_the_rate_limit(namespace: str, tmp_path: Path):
    with make_client(namespace, tmp_path, rate_limit_per_minute=2) as client:
        job = client.post("/v1/videos", json={"prompt": "a cat"}, headers=AUTH).json()
        assert client.get(f"/v1/videos/{job['id']}/content", headers=AUTH).status_code == 409
        assert client.get(f"/v1/videos/{job['id']}/preview", headers=AUTH).status_code == 429


def test_the_page_and_its_config_need_no_key(client: TestClient):
    """The page loads before anyone has typed a key, and learns from /ui/config to ask for one."""
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<label for="prompt">' in page.text
    assert client.get("/static/app.js").status_code == 200
    config = client.get("/ui/config").json()
    assert config["auth_required"] is True
    assert config["stages"] == ["keyframes", "interpolation", "first_frame_sr", "pixel_sr", "latent_sr"]
    assert client.get("/v1/videos").status_code == 401
