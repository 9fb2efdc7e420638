"""The job store and the webhook outbox on a real three-node Redis Cluster.

Every key carries the namespace as its hash tag (app.jobs.Keys), so the multi-key scripts (admission,
transitions, leases) find all their keys in one slot; without the tag a cluster refuses them with
CROSSSLOT. RQ's own keys are not cluster-safe, so a deployment keeps the queue on a plain Redis.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.cluster import RedisCluster

from app.egress import EgressPolicy
from app.jobs import CANCELED, FAILED, QUEUED, SUCCEEDED, JobStore, Keys
from tests.conftest import wait_for
from tests.service.test_webhook_delivery import Receiver
from worker.webhooks import WebhookQueue, WebhookSender

pytestmark = pytest.mark.skipif(
    not (shutil.which("redis-server") and shutil.which("redis-cli")),
    reason="needs redis-server and redis-cli",
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    ports = [_node_port() for _ in range(3)]
    servers = []
    for port in ports:
        folder: Path = tmp_path_factory.mktemp(f"node-{port}")
        servers.append(
            subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes"]
                + ["--cluster-config-file", "nodes.conf", "--save", "", "--appendonly", "no"],
                cwd=folder,
                stdout=subprocess.DEVNULL,
            )
        )
    try:
        for port in ports:
            wait_for(lambda port=port: _pings(port), 10, f"redis node {port}")
        nodes = [f"127.0.0.1:{port}" for port in ports]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
        )
        wait_for(lambda: b"cluster_state:ok" in _cluster_info(ports[0]), 20, "the cluster to form")
        client = RedisCluster(host="127.0.0.1", port=ports[0])
        wait_for(lambda: _all_slots_served(client), 20, "every node to know the slots")
        yield client
        client.close()
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=10)


def _node_port() -> int:
    """A free port whose cluster bus port (10000 above it) is free and valid too."""
    while True:
        port = random.randrange(20000, 50000)
        if all(_free(candidate) for candidate in (port, port + 10000)):
            return port


def _free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def _pings(port: int) -> bool:
    return (
        subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout.strip() == b"PONG"
    )


def _cluster_info(port: int) -> bytes:
    return subprocess.run(["redis-cli", "-p", str(port), "cluster", "info"], capture_output=True).stdout


def _all_slots_served(client: RedisCluster) -> bool:
    try:
        client.set("probe", 1)
        return True
    except Exception:  # noqa: BLE001 - the cluster is still settling: any error means "not yet"
        return False


def test_a_job_lives_its_whole_life_on_a_cluster(cluster: RedisCluster) -> None:
    store = JobStore(cluster, f"c{uuid.uuid4().hex[:8]}", 3600)
    slot = store.keys.idempotency("owner", "request-1")
    first = store.admit("owner", {"params": {}}, max_in_flight=2, idempotency_slot=slot, body_hash="b")
    assert first.outcome == "created"
    store.confirm(first.record.id)
    assert store.admit("owner", {"params": {}}, max_in_flight=2, idempotency_slot=slot).outcome == "replay"
    second = store.admit("owner", {"params": {}}, max_in_flight=2)
    assert store.admit("owner", {"params": {}}, max_in_flight=2).outcome == "limit"
    store.abandon(second.record.id, "owner")

    attempt = store.claim(first.record.id, "worker-1")
    retry = store.claim(first.record.id, "worker-2")  # the first worker went silent
    assert (attempt, retry) == (1, 2)
    assert not store.update_running(first.record.id, {"progress": 0.5}, attempt)
    assert store.update_running(first.record.id, {"progress": 0.5}, retry)
    assert not store.publish(first.record.id, attempt, {"bytes": 1}, {"total": 1.0})
    assert store.publish(first.record.id, retry, {"bytes": 2}, {"total": 1.0})
    assert store.get(first.record.id)["result"] == {"bytes": 2}

    canceled = store.create("owner", {"params": {}})
    assert store.request_cancel(canceled.id) and store.finish(canceled.id, CANCELED)
    failed = store.create("owner", {"params": {}})
    assert store.fail(failed.id, "internal_error", "x")

    page, _ = store.list_for_owner("owner", status=SUCCEEDED, offset=0, limit=10)
    assert [record.id for record in page] == [first.record.id]
    counts = store.status_counts()
    assert (counts[QUEUED], counts[SUCCEEDED], counts[FAILED], counts[CANCELED]) == (0, 1, 1, 1)
    store.delete(first.record.id, "owner")
    assert store.get(first.record.id) is None


def test_keys_of_every_kind_share_one_slot(cluster: RedisCluster) -> None:
    keys = Keys("show1")
    names = [
        keys.record("a"), keys.events("b"), keys.owner_jobs("o"), keys.owner_jobs_in("p", FAILED),
        keys.in_flight("q"), keys.pending_admissions(), keys.active(QUEUED), keys.finished_count(CANCELED),
        keys.webhooks_due(), keys.webhook("msg_1"), keys.requests("o", 1), keys.auth_failures("1.2.3.4", 1),
        keys.workers(), keys.stage_metrics("keyframes"), keys.gpu_metrics("w"),
    ]  # fmt: skip
    assert len({cluster.keyslot(name) for name in names}) == 1


def test_a_webhook_is_delivered_from_a_cluster(cluster: RedisCluster) -> None:
    receiver = Receiver()
    queue = WebhookQueue(cluster, Keys(f"c{uuid.uuid4().hex[:8]}"))
    delivery = queue.schedule(receiver.url, {"type": "video.completed", "data": {"id": "v1"}})
    sender = WebhookSender(queue, "", 2.0, 3, EgressPolicy.from_hosts(["127.0.0.1"]))
    sender.start()
    try:
        wait_for(lambda: receiver.hits, 10, "the delivery")
        wait_for(lambda: not cluster.exists(queue.delivery_key(delivery)), 10, "the delivery to settle")
    finally:
        sender.stopped.set()
        sender.join(timeout=10)
        receiver.server.shutdown()
    assert receiver.hits[0][1]["webhook-id"] == delivery
    time.sleep(0.5)
    assert len(receiver.hits) == 1
