"""A corpus of malformed PNG, JPEG, WebP, GIF, MP4 and WebM files, made here at run time (truncations,
wrong headers, huge dimensions, zero frames, flipped bytes), sent as storyboard images and as clips to
upscale: no answer is a 5xx, and every refusal names the item and leaves nothing queued."""

from __future__ import annotations

import io
import random
import struct
import zlib
from collections import Counter
from pathlib import Path

import av
import pytest

from tests.api.test_api import AUTH, make_client, queued
from tests.api.test_inputs import clip_bytes, data_url, image_bytes


def _huge_png() -> bytes:
    data = bytearray(image_bytes(0))
    ihdr = struct.pack(">II", 65_535, 65_535) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def _huge_gif() -> bytes:
    data = bytearray(image_bytes(0, "GIF"))
    data[6:10] = struct.pack("<HH", 65_535, 65_535)  # the logical screen
    return bytes(data)


def _huge_jpeg() -> bytes:
    data = bytearray(image_bytes(0, "JPEG"))
    start = data.index(b"\xff\xc0")  # baseline frame header: height and width follow the precision byte
    data[start + 5 : start + 9] = struct.pack(">HH", 65_000, 65_000)
    return bytes(data)


def _zero_frame_clip(container: str, codec: str) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container) as output:
        stream = output.add_stream(codec, rate=8)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
    return buffer.getvalue()


def corpus() -> list[tuple[str, str, bytes]]:
    """(name, field, bytes): each format's valid file broken in the ways decoders meet in the wild."""
    rng = random.Random(22)
    valid = {
        "png": image_bytes(1),
        "jpeg": image_bytes(2, "JPEG"),
        "webp": image_bytes(3, "WEBP"),
        "gif": image_bytes(4, "GIF"),
        "mp4": clip_bytes(4),
        "webm": clip_bytes(4, container="webm", codec="libvpx"),
    }
    files: list[tuple[str, str, bytes]] = []
    for name, data in valid.items():
        field = "input_video" if name in ("mp4", "webm") else "keyframe_images"
        for fraction in (0.05, 0.3, 0.6, 0.95):
            files.append((f"{name}-truncated-{fraction}", field, data[: int(len(data) * fraction)]))
        files.append((f"{name}-wrong-header", field, b"\x00" * 12 + data[12:]))
        flipped = bytearray(data)
        for _ in range(12):
            flipped[rng.randrange(len(flipped) // 4, len(flipped))] ^= 0xFF
        files.append((f"{name}-flipped-bytes", field, bytes(flipped)))
        other = "input_video" if field == "keyframe_images" else "keyframe_images"
        files.append((f"{name}-as-the-other-kind", other, data))
        files.append((f"{name}-valid", field, data))
    files += [
        ("png-huge-dimensions", "keyframe_images", _huge_png()),
        ("gif-huge-dimensions", "keyframe_images", _huge_gif()),
        ("jpeg-huge-dimensions", "keyframe_images", _huge_jpeg()),
        ("mp4-zero-frames", "input_video", _zero_frame_clip("mp4", "libx264")),
        ("webm-zero-frames", "input_video", _zero_frame_clip("webm", "libvpx")),
        ("empty", "keyframe_images", b""),
    ]
    return files


@pytest.mark.slow
def test_malformed_files_never_give_a_server_error(namespace: str, tmp_path: Path):
    answers: Counter[str] = Counter()
    with make_client(namespace, tmp_path, max_jobs_in_flight_per_key=1000) as client:
        for name, field, data in corpus():
            if field == "keyframe_images":
                body = {"prompt": "fuzz", "keyframe_images": [data_url(image_bytes(9)), data_url(data)]}
                loc = ["body", field, 1]
            else:
                body = {"prompt": "fuzz", "input_video": data_url(data, "video/mp4")}
                loc = ["body", field]
            before = queued(namespace)
            response = client.post("/v1/videos", json=body, headers=AUTH)
            answers[str(response.status_code)] += 1
            assert response.status_code < 500, (name, response.text)
            if name.endswith("-valid"):
                assert response.status_code == 202, (name, response.text)
                continue
            if response.status_code >= 400:
                assert queued(namespace) == before, name
                assert response.status_code == 422 and response.json()["detail"][0]["loc"] == loc, (
                    name,
                    response.text,
                )
    print(f"input fuzz corpus: {sum(answers.values())} files, answers {dict(answers)}")
    assert "500" not in answers
