"""Storyboard images and upscale clips at the API, in-process against a real Redis and a real decoder
child process: JSON and multipart forms, URLs fetched through the egress policy, every bad input a 4xx
naming the field and the item with nothing enqueued, and a corpus of malformed files that never gives a
5xx."""

from __future__ import annotations

import base64
import contextlib
import io
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import av
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from models.video import encode_mp4
from tests.api.test_api import AUTH, make_client, queued

PROMPT = "a paper boat on a pond"


def image_bytes(seed: int, format: str = "PNG", size: tuple[int, int] = (30, 40)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=format)
    return buffer.getvalue()


def clip_bytes(frames: int = 5, container: str = "mp4", codec: str = "libx264") -> bytes:
    if container == "mp4" and codec == "libx264":
        return encode_mp4(np.random.default_rng(frames).integers(0, 256, (frames, 32, 48, 3), np.uint8), 8)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container) as output:
        stream = output.add_stream(codec, rate=8)
        stream.width, stream.height = 48, 32
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        for index in range(frames):
            frame = np.full((32, 48, 3), index * 20, np.uint8)
            output.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        output.mux(stream.encode())
    return buffer.getvalue()


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header says it is `width` x `height`: a decompression bomb's first bytes."""
    data = bytearray(image_bytes(0))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


@pytest.fixture
def client(namespace: str, tmp_path: Path) -> Iterator[TestClient]:
    with make_client(
        namespace,
        tmp_path,
        max_input_bytes=200_000,
        max_input_frames=12,
        max_input_pixels=1_000_000,
        input_fetch_seconds=1.0,
        input_allowed_hosts="127.0.0.1",
    ) as test_client:
        yield test_client


class _Files(BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, dict[str, str], bytes, float]] = {}

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        status, headers, body, delay = self.routes[self.path]
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        time.sleep(delay)
        with contextlib.suppress(OSError):  # a client that gave up
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def files_server() -> Iterator[str]:
    _Files.routes = {
        "/a.png": (200, {}, image_bytes(1), 0.0),
        "/b.jpg": (200, {}, image_bytes(2, "JPEG"), 0.0),
        "/slow.png": (200, {}, image_bytes(3), 3.0),
        "/large.png": (200, {}, b"\x89PNG\r\n\x1a\n" + bytes(300_000), 0.0),
        "/moved.png": (302, {"Location": "/a.png"}, b"", 0.0),
    }
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def assert_refused(client: TestClient, namespace: str, body: dict, loc: list, status: int = 422) -> str:
    response = client.post("/v1/videos", json=body, headers=AUTH)
    assert response.status_code == status, response.text
    errors = response.json()["detail"]
    assert any(error["loc"] == loc for error in errors), errors
    assert queued(namespace) == 0
    assert client.get("/v1/videos", headers=AUTH).json()["items"] == []
    return next(error["msg"] for error in errors if error["loc"] == loc)


def test_a_storyboard_as_json_and_as_multipart_is_the_same_request(client: TestClient, namespace: str):
    images = [image_bytes(1), image_bytes(2, "JPEG"), image_bytes(3, "WEBP"), image_bytes(4, "GIF")]
    as_json = client.post(
        "/v1/videos",
        json={"prompt": PROMPT, "seed": 1, "keyframe_images": [data_url(image) for image in images]},
        headers={**AUTH, "Idempotency-Key": "board-1"},
    )
    assert as_json.status_code == 202, as_json.text
    job = as_json.json()
    assert job["params"]["num_keyframes"] == 4
    assert job["job_stages"] == ["interpolation", "first_frame_sr", "pixel_sr", "latent_sr"]
    described = job["inputs"]["keyframe_images"]
    assert [item["format"] for item in described] == ["PNG", "JPEG", "WEBP", "GIF"]
    assert [item["bytes"] for item in described] == [len(image) for image in images]
    assert "data:" not in as_json.text.replace(job["id"], "")  # the record never holds the bytes
    # The same files as parts of a form: the same request, so the same job (the hash covers content).
    as_form = client.post(
        "/v1/videos",
        data={"prompt": PROMPT, "seed": "1"},
        files=[("keyframe_images", (f"{index}.bin", image)) for index, image in enumerate(images)],
        headers={**AUTH, "Idempotency-Key": "board-1"},
    )
    assert as_form.status_code == 200 and as_form.json()["id"] == job["id"], as_form.text
    other = client.post(
        "/v1/videos",
        json={
            "prompt": PROMPT,
            "seed": 1,
            "keyframe_images": [data_url(image_bytes(9)), *map(data_url, images[1:])],
        },
        headers={**AUTH, "Idempotency-Key": "board-1"},
    )
    assert other.status_code == 422 and other.json()["detail"][0]["loc"] == ["header", "idempotency-key"]
    assert queued(namespace) == 1
    # Deleting the job deletes its inputs.
    storage = client.app.state.services.storage
    keys = client.app.state.services.store.get(job["id"])["input_keys"]
    assert len(keys) == 4 and all(storage.exists(key) for key in keys)
    client.delete(f"/v1/videos/{job['id']}", headers=AUTH)  # cancel, then forget
    client.app.state.services.store.get(job["id"])
    from app import actions

    actions.delete(client.app.state.services, client.app.state.services.store.get(job["id"]))
    assert not any(storage.exists(key) for key in keys)


def test_urls_are_fetched_through_the_egress_policy(client: TestClient, namespace: str, files_server: str):
    body = {"prompt": PROMPT, "keyframe_images": [f"{files_server}/a.png", f"{files_server}/b.jpg"]}
    answer = client.post("/v1/videos", json=body, headers=AUTH)
    assert answer.status_code == 202, answer.text
    assert [item["format"] for item in answer.json()["inputs"]["keyframe_images"]] == ["PNG", "JPEG"]


@pytest.mark.parametrize(
    ("path", "reason"),
    [("/slow.png", "within 1 s"), ("/large.png", "bytes per input"), ("/moved.png", "redirects")],
)
def test_slow_large_and_redirecting_urls_are_refused(
    client: TestClient, namespace: str, files_server: str, path: str, reason: str
):
    body = {"prompt": PROMPT, "keyframe_images": [data_url(image_bytes(1)), f"{files_server}{path}"]}
    assert reason in assert_refused(client, namespace, body, ["body", "keyframe_images", 1])


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/a.png",
        "https://10.0.0.7/a.png",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/a.png",
        "https://localhost/a.png",
        "http://example.com/a.png",  # plain http only from an allowlisted host
        "ftp://example.com/a.png",
    ],
)
def test_urls_aimed_inward_are_refused_by_name(client: TestClient, namespace: str, url: str):
    body = {"prompt": PROMPT, "keyframe_images": [data_url(image_bytes(1)), data_url(image_bytes(2)), url]}
    assert_refused(client, namespace, body, ["body", "keyframe_images", 2])


@pytest.mark.parametrize(
    ("second", "reason"),
    [
        (b"GIF89a but not really", "not a readable image"),
        (b"hello, this is text named a.png", "not a PNG, JPEG, WebP or GIF"),
        (image_bytes(2)[:200], "corrupt"),
        (bytes(250_000), "bytes per input"),
        (png_claiming(100_000, 100_000), "pixels"),
        (clip_bytes(), "not a PNG"),
    ],
    ids=["wrong-header", "not-an-image", "truncated", "too-many-bytes", "decompression-bomb", "a-clip"],
)
def test_bad_images_are_refused_naming_the_item(
    client: TestClient, namespace: str, second: bytes, reason: str
):
    body = {"prompt": PROMPT, "keyframe_images": [data_url(image_bytes(1)), data_url(second)]}
    assert reason in assert_refused(client, namespace, body, ["body", "keyframe_images", 1])


@pytest.mark.parametrize(
    ("clip", "reason"),
    [
        (clip_bytes(frames=20), "frames"),
        (clip_bytes(codec="mjpeg", container="mov"), "codec 'mjpeg'"),
        (image_bytes(1), "not an MP4"),
        (clip_bytes()[:1500], "corrupt"),
    ],
    ids=["too-many-frames", "unsupported-codec", "an-image", "truncated"],
)
def test_bad_clips_are_refused(client: TestClient, namespace: str, clip: bytes, reason: str):
    body = {"prompt": PROMPT, "input_video": data_url(clip, "video/mp4")}
    assert reason in assert_refused(client, namespace, body, ["body", "input_video"])


@pytest.mark.parametrize(
    ("extra", "loc"),
    [
        ({"keyframe_images": ["data:image/png;base64,AAAA"]}, ["body", "keyframe_images"]),  # one image
        ({"num_keyframes": 5}, ["body", "num_keyframes"]),
        ({"keyframe_dropout": "off"}, ["body", "keyframe_dropout"]),
        ({"steps": {"base": 3}}, ["body", "steps", "base"]),
        ({"guidance": {"base": 3}}, ["body", "guidance", "base"]),
        ({"input_video": "data:video/mp4;base64,AAAA"}, ["body", "input_video"]),
        ({"draft_id": "0" * 32}, ["body", "draft_id"]),
        ({"keyframe_images": ["not a url", "data:,"]}, ["body", "keyframe_images", 0]),
        ({"keyframe_images": ["data:image/png;base64,!!!", "data:,x"]}, ["body", "keyframe_images", 0]),
    ],
)
def test_fields_that_do_not_go_with_a_storyboard_are_refused(
    client: TestClient, namespace: str, extra: dict, loc: list
):
    body = {
        "prompt": PROMPT,
        "keyframe_images": [data_url(image_bytes(1)), data_url(image_bytes(2))],
        **extra,
    }
    assert_refused(client, namespace, body, loc)


def test_a_decoder_past_its_deadline_costs_that_request_only(namespace: str, tmp_path: Path):
    with make_client(namespace, tmp_path, input_decode_seconds=0.001) as bounded:
        body = {"prompt": PROMPT, "keyframe_images": [data_url(image_bytes(1)), data_url(image_bytes(2))]}
        assert "could not be decoded within" in assert_refused(
            bounded, namespace, body, ["body", "keyframe_images", 0]
        )
        assert bounded.get("/healthz").status_code == 200


def test_an_upscale_counts_only_the_latent_stage(client: TestClient, namespace: str):
    full = client.post("/v1/videos", json={"prompt": PROMPT}, headers=AUTH).json()
    upscale = client.post(
        "/v1/videos",
        json={"prompt": PROMPT, "input_video": data_url(clip_bytes(), "video/mp4")},
        headers=AUTH,
    )
    assert upscale.status_code == 202, upscale.text
    record = client.app.state.services.store.get(upscale.json()["id"])
    assert list(record["costs"]) == ["latent_sr"]
    assert record["params"]["clip_frames"] == 5 and record["params"]["fps"] == 8
    assert sum(record["costs"].values()) < sum(
        client.app.state.services.store.get(full["id"])["costs"].values()
    )
