"""OpenAI's official SDKs against the live service: uvicorn API + a real worker process + Redis.

One API and worker serve the whole module (a job at a size the SDK's types accept takes about a minute on
the tiny preset on CPU, so there is one such job); tests run in file order and build on each other.
The Python client validates every response strictly against the SDK's own models.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import av
import httpx
import openai
import pytest
import redis
from PIL import Image
from standardwebhooks import Webhook, WebhookVerificationError

from tests.conftest import FAST_REQUEST, Processes, delete_namespace, service_env, wait_for

KEY, LIST_KEY, RATE_KEY = "sdk-key", "list-key", "rate-key"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the Standard Webhooks specification's example
SMALL = "112x64"  # allowed by a setting: fast on CPU, though outside the SDK's size type
pytestmark = pytest.mark.filterwarnings("ignore:The Sora API:DeprecationWarning")
# The fewest frames and steps: the video at 1280x720 (a size the SDK's type accepts) stays near a minute.
QUICK = {"num_keyframes": 2, "keyframe_size": FAST_REQUEST["keyframe_size"], "steps": FAST_REQUEST["steps"]}


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Service:
    base: str
    limited_base: str
    storage: Path
    hooks: str
    deliveries: list[Delivery]
    state: dict = field(default_factory=dict)  # what earlier tests made, for later ones

    def client(self, key: str = KEY, base: str | None = None) -> openai.OpenAI:
        return openai.OpenAI(
            api_key=key,
            base_url=f"{base or self.base}/openai/v1",
            webhook_secret=SECRET,
            max_retries=0,
            _strict_response_validation=True,
        )


def receiver(deliveries: list[Delivery]) -> ThreadingHTTPServer:
    """Records every delivery; answers 500 to the first attempt of each event so it is retried."""
    seen: set[str] = set()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            deliveries.append(Delivery(self.path, dict(self.headers), body))
            first = self.headers["webhook-id"] not in seen
            seen.add(self.headers["webhook-id"])
            self.send_response(500 if first else 204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def service(
    tiny_preset: Path, tmp_path_factory: pytest.TempPathFactory, redis_connection: redis.Redis
) -> Iterator[Service]:
    name = f"t{uuid.uuid4().hex[:10]}"
    tmp = tmp_path_factory.mktemp("openai-sdk")
    deliveries: list[Delivery] = []
    server = receiver(deliveries)
    env = service_env(
        name,
        tiny_preset,
        tmp,
        SHOW1_API_KEYS=f"{KEY},{LIST_KEY},{RATE_KEY}",
        SHOW1_WEBHOOK_SECRET=SECRET,
        SHOW1_OPENAI_EXTRA_SIZES=SMALL,
        SHOW1_PUBLIC_BASE_URL="http://127.0.0.1",
    )
    processes = Processes(tmp)
    try:
        base = processes.api(env)
        processes.worker(env)
        # A second replica over the same jobs with a tiny rate limit, for the 429 test (its own key).
        limited = processes.api({**env, "SHOW1_RATE_LIMIT_PER_MINUTE": "2"})
        yield Service(base, limited, tmp / "storage", f"http://127.0.0.1:{server.server_port}", deliveries)
    finally:
        processes.stop()
        server.shutdown()
        delete_namespace(redis_connection, name)
        if processes.started and any(p.returncode not in (0, -15) for p in processes.started):
            print(processes.logs())


def test_create_and_poll_to_completed_then_download_every_variant(service: Service):
    client = service.client()
    video = client.videos.create_and_poll(
        prompt="A lighthouse at dusk",
        model="show-1",
        size="1280x720",
        extra_body={**QUICK, "seed": 7, "negative_prompt": "blur", "webhook_url": f"{service.hooks}/done"},
    )
    assert video.status == "completed" and video.progress == 100 and video.error is None
    assert (video.object, video.model, video.size, video.seconds) == ("video", "show-1", "1280x720", "0.625")
    assert video.prompt == "A lighthouse at dusk"
    assert video.created_at <= video.completed_at < video.expires_at
    assert video.model_extra["seed"] == 7 and video.model_extra["frames"] == 5
    assert video.model_extra["params"]["negative_prompt"] == "blur"
    assert client.videos.retrieve(video.id) == video
    service.state["completed"] = video.id

    mp4 = client.videos.download_content(video.id).read()
    with av.open(io.BytesIO(mp4)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == 5 and frames[0].shape == (720, 1280, 3)
    thumbnail = Image.open(io.BytesIO(client.videos.download_content(video.id, variant="thumbnail").read()))
    assert (thumbnail.format, thumbnail.size) == ("JPEG", (1280, 720))
    sheet = Image.open(io.BytesIO(client.videos.download_content(video.id, variant="spritesheet").read()))
    # Five frames in rows of four, each 256 wide at the video's aspect ratio.
    assert (sheet.format, sheet.size) == ("JPEG", (4 * 256, 2 * 144))


def test_plain_create_then_delete_while_running(service: Service):
    client = service.client()
    raw = client.videos.with_raw_response.create(
        prompt="A plain request", model="show-1", seconds="4", size="1280x720",
        extra_body={"webhook_url": f"{service.hooks}/canceled"},
    )  # fmt: skip
    video = raw.parse()
    assert int(raw.headers["openai-poll-after-ms"]) > 0
    assert raw.headers["location"] == f"/openai/v1/videos/{video.id}"
    assert (video.status, video.progress, video.seconds, video.size) == ("queued", 0, "4.125", "1280x720")
    assert video.completed_at is None and video.model_extra["num_keyframes"] == 9

    wait_for(lambda: client.videos.retrieve(video.id).status == "in_progress", 60, "the job to start")
    deleted = client.videos.delete(video.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (video.id, "video.deleted", True)
    final = client.videos.poll(video.id, poll_interval_ms=200)
    assert final.status == "failed" and final.error.code == "canceled" and final.progress < 100
    service.state["canceled"] = video.id


def test_json_create_validated_by_the_same_schema(service: Service):
    auth = {"Authorization": f"Bearer {KEY}"}
    url = f"{service.base}/openai/v1/videos"
    body = {"prompt": "json", "model": "show-1", "size": "1280x720", "seconds": "2", "seed": 3, **QUICK}
    body.pop("num_keyframes")
    created = httpx.post(url, json=body, headers=auth, timeout=10)
    assert created.status_code == 200, created.text
    video = openai.types.Video.model_validate(created.json())  # the SDK's model, validated
    assert video.model_extra["num_keyframes"] == 5 and video.seconds == "2.125"
    assert video.model_extra["params"]["steps"]["sr1"] == 2
    assert service.client().videos.delete(video.id).deleted
    wait_for(lambda: service.client().videos.retrieve(video.id).status == "failed", 60, "the cancel")

    bad = httpx.post(url, json={**body, "steps": {"sr1": 0}}, headers=auth, timeout=10)
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "steps[sr1]"
    assert set(bad.json()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(
    ("kwargs", "param", "code"),
    [
        ({"model": "sora-2"}, "model", "model_not_found"),
        ({"size": "1792x1024", "extra_body": {"output_size": {"height": 64, "width": 64}}}, "size", None),
        ({"seconds": "12"}, "seconds", None),
        ({"extra_body": {"steps": {"sr1": 0}}}, "steps[sr1]", None),
        ({"extra_body": {"fps": "fast"}}, "fps", None),
        (
            {"input_reference": ("ref.png", b"not really a png", "image/png")},
            "input_reference",
            "unsupported",
        ),
    ],
)
def test_invalid_create_is_400_naming_the_param(service: Service, kwargs: dict, param: str, code: str | None):
    with pytest.raises(openai.BadRequestError) as caught:
        service.client().videos.create(prompt="x", **kwargs)
    error = caught.value
    assert error.param == param and error.type == "invalid_request_error" and error.message
    if code:
        assert error.code == code


def test_errors_in_openai_shape(service: Service):
    client = service.client()
    with pytest.raises(openai.AuthenticationError) as caught:
        service.client(key="wrong").videos.list()
    assert caught.value.code == "invalid_api_key" and "unknown API key" in caught.value.message
    with pytest.raises(openai.NotFoundError) as missing:
        client.videos.retrieve("no-such-video")
    assert missing.value.body["code"] == "not_found"
    with pytest.raises(openai.NotFoundError):
        client.videos.download_content("no-such-video")
    with pytest.raises(openai.NotFoundError):
        service.client(key=LIST_KEY).videos.retrieve(service.state["completed"])  # another key's video
    with pytest.raises(openai.ConflictError):
        client.videos.download_content(service.state["canceled"])
    for call in (
        lambda: client.videos.remix(service.state["completed"], prompt="again"),
        lambda: client.videos.edit(prompt="x", video=("clip.mp4", b"not really an mp4", "video/mp4")),
        lambda: client.videos.extend(
            prompt="x", seconds="4", video=("clip.mp4", b"not really an mp4", "video/mp4")
        ),
    ):
        with pytest.raises(openai.BadRequestError) as unsupported:
            call()
        assert unsupported.value.code == "unsupported"

    limited = service.client(key=RATE_KEY, base=service.limited_base)
    limited.videos.list()
    limited.videos.list()
    with pytest.raises(openai.RateLimitError) as limit:
        limited.videos.list()
    assert 1 <= int(limit.value.response.headers["retry-after"]) <= 60
    assert limit.value.type == "rate_limit_error"


def test_list_pages_in_both_orders(service: Service):
    client = service.client(key=LIST_KEY)
    made = [client.videos.create(prompt=f"list {n}", model="show-1", size="1280x720").id for n in range(3)]
    try:
        newest_first = list(reversed(made))
        assert [video.id for video in client.videos.list(limit=2)] == newest_first  # pages through
        first = client.videos.list(limit=2)
        assert (first.has_more, first.last_id) == (True, newest_first[1])
        second = client.videos.list(limit=2, after=first.last_id)
        assert [v.id for v in second.data] == newest_first[2:] and second.has_more is False
        assert [video.id for video in client.videos.list(limit=2, order="asc")] == made
        assert client.videos.list(limit=1, order="asc").data[0].id == made[0]
    finally:
        for video_id in made:
            client.videos.delete(video_id)
    wait_for(
        lambda: all(client.videos.retrieve(v).status == "failed" for v in made if _exists(client, v)),
        60,
        "the listed jobs to be canceled",
    )


def _exists(client: openai.OpenAI, video_id: str) -> bool:
    try:
        client.videos.retrieve(video_id)
    except openai.NotFoundError:
        return False
    return True


def test_webhooks_follow_standard_webhooks_on_both_faces(service: Service):
    # A /v1 job too: same signing, the /v1 payload.
    v1 = httpx.post(
        f"{service.base}/v1/videos",
        json={"prompt": "v1 hook", **FAST_REQUEST, "num_keyframes": 2, "webhook_url": f"{service.hooks}/v1"},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=10,
    ).json()
    wait_for(
        lambda: (
            {d.path for d in service.deliveries if d.headers.get("webhook-signature")}
            >= {"/done", "/canceled", "/v1"}
            and len(service.deliveries) >= 6
        ),
        90,
        "every event delivered twice (the first attempt is refused)",
    )
    client = service.client()
    by_path: dict[str, list[Delivery]] = {}
    for delivery in service.deliveries:
        by_path.setdefault(delivery.path, []).append(delivery)
        verified = Webhook(SECRET).verify(delivery.body, delivery.headers)
        client.webhooks.verify_signature(delivery.body, delivery.headers)  # the OpenAI SDK agrees
        assert verified == json.loads(delivery.body)
        assert delivery.headers["webhook-signature"].startswith("v1,")

    for path, attempts in by_path.items():
        assert len({a.headers["webhook-id"] for a in attempts}) == 1, f"{path}: one id across retries"
        assert len(attempts) >= 2

    done = json.loads(by_path["/done"][0].body)
    assert (done["object"], done["type"]) == ("event", "video.completed")
    assert done["data"] == {"id": service.state["completed"]}
    assert isinstance(done["created_at"], int) and done["id"].startswith("evt_")
    failed = json.loads(by_path["/canceled"][0].body)
    assert failed["type"] == "video.failed" and failed["data"]["id"] == service.state["canceled"]
    v1_payload = json.loads(by_path["/v1"][-1].body)
    assert v1_payload["event"] == "job.succeeded" and v1_payload["job"]["id"] == v1["id"]

    sample = by_path["/done"][0]
    tampered = sample.body.replace(b"video.completed", b"video.failed")
    old = {**sample.headers, "webhook-timestamp": str(int(time.time()) - 600)}
    for body, headers in ((tampered, sample.headers), (sample.body, old)):
        with pytest.raises(WebhookVerificationError):
            Webhook(SECRET).verify(body, headers)
        with pytest.raises(openai.InvalidWebhookSignatureError):
            client.webhooks.verify_signature(body, headers)


def test_delete_a_finished_video_removes_it_and_its_files(service: Service):
    client = service.client()
    video_id = service.state["completed"]
    files = sorted(path.name for path in (service.storage / "videos").glob(f"{video_id}.*"))
    # The one attempt's files (each attempt writes its own: app/storage.py).
    suffixes = ("json", "mp4", "preview.png", "spritesheet.jpg", "thumbnail.jpg")
    assert files == [f"{video_id}.1.{suffix}" for suffix in suffixes]
    deleted = client.videos.delete(video_id)
    assert (deleted.id, deleted.deleted) == (video_id, True)
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(video_id)
    assert video_id not in [video.id for video in client.videos.list(limit=100)]
    assert not list((service.storage / "videos").glob(f"{video_id}.*"))


def test_a_strict_client_lists_jobs_of_both_faces(service: Service):
    """/v1 jobs at sizes and lengths outside the SDK's types: `size` is the nearest SDK size and the
    exact values stand beside it, so the strict client parses the whole list."""
    client = service.client()
    v1_sizes = [(64, 112), (320, 576), (200, 96)]  # (height, width): landscape, Show-1's own, portrait
    made = []
    for height, width in v1_sizes:
        answer = httpx.post(
            f"{service.base}/v1/videos",
            json={
                **FAST_REQUEST,
                "prompt": "both faces",
                "num_keyframes": 2,
                "output_size": {"height": height, "width": width},
            },
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=10,
        )
        assert answer.status_code == 202, answer.text
        made.append(answer.json()["id"])
    made.append(client.videos.create(prompt="openai face", model="show-1", size=SMALL, extra_body=QUICK).id)
    try:
        listed = {video.id: video for video in client.videos.list(limit=100)}  # strict: every item parses
        shown = [
            (listed[job].size, listed[job].model_extra["output_size"], listed[job].seconds) for job in made
        ]
        assert shown == [
            ("1792x1024", "112x64", "0.625"),
            ("1280x720", "576x320", "0.625"),
            ("720x1280", "96x200", "0.625"),
            ("1792x1024", SMALL, "0.625"),
        ]
        assert client.videos.retrieve(made[2]).size == "720x1280"
    finally:
        for job in made:
            client.videos.delete(job)


JS_HAPPY_PATH = """
import OpenAI from "openai";
const client = new OpenAI({ apiKey: process.env.KEY, baseURL: process.env.BASE, maxRetries: 0 });
const created = await client.videos.create({ prompt: "From Node", model: "show-1", size: process.env.SIZE,
  ...JSON.parse(process.env.EXTRAS) });
let video = created;
while (video.status === "queued" || video.status === "in_progress") {
  await new Promise((resolve) => setTimeout(resolve, 300));
  video = await client.videos.retrieve(created.id);
}
const listed = [];
for await (const item of client.videos.list({ limit: 1 })) listed.push(item.id);
const mp4 = await (await client.videos.downloadContent(created.id)).arrayBuffer();
const thumbnail = await (
  await client.videos.downloadContent(created.id, { variant: "thumbnail" })).arrayBuffer();
const deleted = await client.videos.delete(created.id);
let missing = null;
try { await client.videos.retrieve(created.id); } catch (error) { missing = error.status; }
console.log(JSON.stringify({ created, video, listed, mp4: mp4.byteLength, thumbnail: thumbnail.byteLength,
  deleted, missing, version: OpenAI.VERSION ?? null }));
"""


def test_node_sdk_happy_path(service: Service, tmp_path: Path):
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node/npm not installed")
    install = subprocess.run(
        ["npm", "install", "--silent", "--no-audit", "--no-fund", "openai@7.59.0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    if install.returncode != 0:
        pytest.skip(
            f"npm could not install the openai package (registry unreachable?): {install.stderr[-500:]}"
        )
    (tmp_path / "happy.mjs").write_text(JS_HAPPY_PATH)
    env = {
        "PATH": os.environ["PATH"],
        "KEY": KEY,
        "BASE": f"{service.base}/openai/v1",
        "SIZE": SMALL,
        "EXTRAS": json.dumps({**QUICK, "seed": 11}),
    }
    run = subprocess.run(
        ["node", "happy.mjs"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["created"]["status"] == "queued" and result["created"]["output_size"] == SMALL
    assert result["created"]["size"] == "1792x1024"  # the nearest of the SDK's sizes
    assert result["video"]["status"] == "completed" and result["video"]["progress"] == 100
    assert result["video"]["seed"] == 11 and result["video"]["params"]["steps"]["sr1"] == 2
    assert result["created"]["id"] in result["listed"] and len(result["listed"]) >= 2
    assert result["mp4"] > 0 and result["thumbnail"] > 0
    assert result["deleted"] == {"id": result["created"]["id"], "object": "video.deleted", "deleted": True}
    assert result["missing"] == 404
