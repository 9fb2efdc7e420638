"""Property-based fuzzing of the OpenAPI spec: no input makes the API fail, and no rejected request
leaves a job behind."""

from __future__ import annotations

import uuid

import hypothesis
import redis
import schemathesis
from schemathesis.checks import not_a_server_error

from app.jobs import Keys
from app.main import create_app
from app.settings import Settings
from tests.conftest import REDIS_URL, delete_namespace

NAMESPACE = f"fuzz{uuid.uuid4().hex[:8]}"
AUTH = {"Authorization": "Bearer fuzz-key"}
app = create_app(
    Settings(
        redis_url=REDIS_URL,
        key_prefix=NAMESPACE,
        queue_name=NAMESPACE,
        api_keys="fuzz-key",
        rate_limit_per_minute=1_000_000,
        max_jobs_in_flight_per_key=1_000_000,
    )
)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)
connection = redis.Redis.from_url(REDIS_URL)


def jobs_and_queue() -> tuple[int, int]:
    owner_index = next(iter(connection.scan_iter(match=Keys(NAMESPACE).owner_jobs("*"))), None)
    jobs = connection.zcard(owner_index) if owner_index else 0
    return jobs, connection.llen(f"rq:queue:{NAMESPACE}")


@schema.parametrize()
@hypothesis.settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    derandomize=True,
)
def test_api_never_fails_and_rejections_change_nothing(case):
    before = jobs_and_queue()
    response = case.call(headers=AUTH)
    case.validate_response(response, checks=[not_a_server_error])
    if response.status_code >= 400:
        assert jobs_and_queue() == before, f"{case.method} {case.path} -> {response.status_code} left a job"
    if case.method == "POST" and response.status_code == 202:
        assert jobs_and_queue() == (before[0] + 1, before[1] + 1)


def teardown_module() -> None:
    delete_namespace(connection, NAMESPACE)
