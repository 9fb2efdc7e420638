"""Non-finite numbers and lone surrogates in a request body: refused naming the field, on both faces,
for every field of the create schema (derived from the schemas, not listed by hand), nothing queued."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import BaseModel

from app.main import create_app
from app.openai_translate import param_name
from app.schemas import VideoRequest
from app.settings import Settings
from tests.conftest import REDIS_URL, delete_namespace

# Raw JSON text: json.dumps would refuse to write most of these.
BAD_VALUES = {
    "NaN": "NaN",
    "-Infinity": "-Infinity",
    "1e400": "1e400",
    "lone surrogate": '"a\\ud800b"',
}
# The OpenAI face's own create fields, beside VideoRequest's (app/openai_translate.py reads them).
OPENAI_FIELDS = (("model",), ("seconds",), ("size",))
JSON = {"Content-Type": "application/json"}


def leaf_fields(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every field path of a schema, nested models' fields included (`("steps", "sr1")`)."""
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from leaf_fields(annotation, (*prefix, name))
        else:
            yield (*prefix, name)


V1_FIELDS = list(leaf_fields(VideoRequest))


def body_with(path: tuple[str, ...], raw_value: str) -> bytes:
    """A valid request with `raw_value` (JSON text) at `path`."""
    placeholder = "__BAD__"
    body: dict[str, Any] = {"prompt": "a cat"}
    target = body
    for part in path[:-1]:
        target = target.setdefault(part, {})
    target[path[-1]] = placeholder
    return json.dumps(body).replace(f'"{placeholder}"', raw_value).encode()


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    namespace = f"t{uuid.uuid4().hex[:10]}"
    settings = Settings(
        redis_url=REDIS_URL,
        key_prefix=namespace,
        queue_name=namespace,
        local_storage_dir=Path(tmp_path_factory.mktemp("storage")),
        rate_limit_per_minute=100000,
    )
    with TestClient(create_app(settings)) as test_client:
        test_client.namespace = namespace  # type: ignore[attr-defined]
        yield test_client
    delete_namespace(redis.Redis.from_url(REDIS_URL), namespace)


def test_the_field_list_is_the_schemas():
    assert len(V1_FIELDS) >= 20
    assert ("steps", "sr1") in V1_FIELDS and ("keyframe_size", "height") in V1_FIELDS
    assert ("prompt",) in V1_FIELDS and ("webhook_url",) in V1_FIELDS


@pytest.mark.parametrize("bad", list(BAD_VALUES))
def test_v1_refuses_every_field_with_422_naming_it(client: TestClient, bad: str):
    for path in V1_FIELDS:
        answer = client.post("/v1/videos", content=body_with(path, BAD_VALUES[bad]), headers=JSON)
        assert answer.status_code == 422, (path, answer.status_code, answer.text)
        (error,) = answer.json()["detail"]
        assert error["loc"] == ["body", *path], (path, error)
        expected = "Unicode" if "surrogate" in bad else "finite number"
        assert expected in error["msg"], error
    assert redis.Redis.from_url(REDIS_URL).llen(f"rq:queue:{client.namespace}") == 0


@pytest.mark.parametrize("bad", list(BAD_VALUES))
def test_openai_face_refuses_every_field_with_400_naming_it(client: TestClient, bad: str):
    for path in [*V1_FIELDS, *OPENAI_FIELDS]:
        answer = client.post(
            "/openai/v1/videos",
            content=body_with(path, BAD_VALUES[bad]),
            headers=JSON,
        )
        assert answer.status_code == 400, (path, answer.status_code, answer.text)
        error = answer.json()["error"]
        assert error["param"] == param_name(path), (path, error)
        assert error["type"] == "invalid_request_error"
        expected = "Unicode" if "surrogate" in bad else "finite number"
        assert expected in error["message"], error
    assert redis.Redis.from_url(REDIS_URL).llen(f"rq:queue:{client.namespace}") == 0


def test_a_surrogate_in_a_field_name_or_a_list_is_named(client: TestClient):
    answer = client.post("/v1/videos", content=b'{"prompt": "a", "\\ud800x": 1}', headers=JSON)
    assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["body", "\\ud800x"]
    answer = client.post("/v1/videos", content=b'{"prompt": "a", "tags": [1, Infinity]}', headers=JSON)
    assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["body", "tags", 1]
    answer = client.post("/openai/v1/videos", content=b'{"prompt": "\\udc00", "size": "x"}', headers=JSON)
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "prompt"


def test_forms_on_the_openai_face_refuse_non_finite_numbers(client: TestClient):
    """A form sends text: pydantic would read "NaN" as a float; the schema's bounds refuse it."""
    for value in ("NaN", "Infinity", "1e400"):
        answer = client.post("/openai/v1/videos", data={"prompt": "a cat", "guidance[sr1]": value})
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["param"] == "guidance[sr1]"
    assert redis.Redis.from_url(REDIS_URL).llen(f"rq:queue:{client.namespace}") == 0


def test_valid_bodies_still_pass(client: TestClient):
    body = b'{"prompt": "caf\\u00e9 \\ud83d\\ude00", "guidance": {"sr1": 1e1}}'  # a surrogate pair: fine
    answer = client.post("/v1/videos", content=body, headers=JSON)
    assert answer.status_code == 202, answer.text
    assert answer.json()["params"]["prompt"] == "café 😀"
