"""Untrusted images and clips: recognised by their content, checked against caps, converted to frames.

Only Pillow, PyAV and numpy, so the worker and a bounded child process of the API use the very same code:
the API runs `inspect` on every input before a job is queued (`python -m app.media` under rlimits and a
wall-clock deadline, so a file that crashes or hangs a decoder costs that request only), and the worker
converts the stored inputs with `keyframe_image` and `clip_frames`, which the child already ran to the
end on the same bytes.

How a storyboard's images become keyframes (`keyframe_image`):
- EXIF orientation applied (phones store portraits sideways with a rotation tag);
- transparency flattened onto black, palette and greyscale expanded: RGB, 8 bits, full range
  (0..255 maps to -1..1 in model space, models/pipelines/latent_sr.py `from_uint8_frames`, the inverse of
  the cascade's own conversion to uint8);
- centre-cropped to the keyframe aspect ratio, then resized with Pillow's bicubic filter (antialiased when
  it shrinks). Cropped rather than padded: Show-1 was trained on full-frame video, and bars would be
  content the interpolation model animates; a crop keeps the middle of the picture, where it matters most.
A clip's frames (`clip_frames`) are cropped the same way to the output aspect ratio and resized with
Pillow's default filter, as the reference resizes the pixel stages' frames before the latent stage.
"""

from __future__ import annotations

import io
import json
import os
import resource
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

IMAGE = "image"
VIDEO = "video"
# What each kind accepts, by content: Pillow format names, PyAV container and codec names.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
VIDEO_CONTAINERS = {"mov,mp4,m4a,3gp,3g2,mj2": "mp4", "matroska,webm": "webm"}
VIDEO_CODECS = ("h264", "hevc", "vp8", "vp9", "av1", "mpeg4")


class MediaRejected(ValueError):
    """An input that is not acceptable; the message says why, for the client."""


@dataclass(frozen=True)
class MediaLimits:
    max_pixels: int  # per image, per clip frame: checked on the header, before decoding
    max_frames: int
    max_seconds: float


@dataclass(frozen=True)
class MediaInfo:
    """What came in, as the job record shows it (never the bytes)."""

    kind: str
    format: str
    width: int
    height: int
    frames: int = 1
    fps: float | None = None
    codec: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None}


def sniff(data: bytes) -> str | None:
    """IMAGE or VIDEO by the file's first bytes (its name and declared type are not evidence)."""
    head = data[:16]
    if head.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")):
        return IMAGE
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return IMAGE
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free") or head.startswith(b"\x1a\x45\xdf\xa3"):
        return VIDEO
    return None


def _open_image(data: bytes, limits: MediaLimits) -> Image.Image:
    if sniff(data) != IMAGE:
        raise MediaRejected("not a PNG, JPEG, WebP or GIF image (judged by its content)")
    try:
        image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except Image.DecompressionBombError as error:
        raise MediaRejected(f"{error}; at most {limits.max_pixels} pixels per image") from error
    except (OSError, ValueError, SyntaxError) as error:
        raise MediaRejected(f"not a readable image: {error}") from error
    width, height = image.size
    # The header's claim, before a single pixel is decoded: a decompression bomb stops here.
    if width < 1 or height < 1 or width * height > limits.max_pixels:
        raise MediaRejected(f"{width}x{height} pixels; at most {limits.max_pixels} pixels per image")
    return image


def keyframe_image(data: bytes, size: tuple[int, int], limits: MediaLimits) -> tuple[np.ndarray, MediaInfo]:
    """One storyboard image as a keyframe: (H, W, 3) uint8 at `size` (H, W), and what the image was."""
    image = _open_image(data, limits)
    info = MediaInfo(IMAGE, image.format or "", image.width, image.height)
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
        if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
            image = Image.alpha_composite(background, rgba)
        image = image.convert("RGB")
        height, width = size
        fitted = ImageOps.fit(image, (width, height), method=Image.Resampling.BICUBIC, centering=(0.5, 0.5))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise MediaRejected(f"a truncated or corrupt image: {error}") from error
    return np.asarray(fitted, dtype=np.uint8), info


def _crop_box(width: int, height: int, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The centred box of `width` x `height` with the aspect ratio of `size` (H, W)."""
    target_h, target_w = size
    if width * target_h > height * target_w:  # wider than the target: crop the sides
        crop_w = max(1, round(height * target_w / target_h))
        left = (width - crop_w) // 2
        return left, 0, left + crop_w, height
    crop_h = max(1, round(width * target_h / target_w))
    top = (height - crop_h) // 2
    return 0, top, width, top + crop_h


def _decoded_frames(data: bytes, limits: MediaLimits) -> Iterator[tuple[Any, MediaInfo]]:
    """A clip's frames as PyAV decodes them, with what the clip is; caps checked on the headers first
    and on every frame as it comes."""
    import av

    if sniff(data) != VIDEO:
        raise MediaRejected("not an MP4, MOV or WebM clip (judged by its content)")
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.FFmpegError, ValueError, EOFError, OSError) as error:
        raise MediaRejected(f"not a readable clip: {error}") from error
    with container:
        container_format = VIDEO_CONTAINERS.get(container.format.name)
        if container_format is None:
            raise MediaRejected(f"container {container.format.name!r} is not MP4, MOV or WebM")
        if not container.streams.video:
            raise MediaRejected("the clip has no video stream")
        stream = container.streams.video[0]
        codec = stream.codec_context.name
        if codec not in VIDEO_CODECS:
            raise MediaRejected(f"codec {codec!r} is not supported; use one of {', '.join(VIDEO_CODECS)}")
        width, height = stream.codec_context.width, stream.codec_context.height
        if width < 1 or height < 1 or width * height > limits.max_pixels:
            raise MediaRejected(f"{width}x{height} pixels per frame; at most {limits.max_pixels}")
        if stream.frames > limits.max_frames:
            raise MediaRejected(f"{stream.frames} frames; at most {limits.max_frames}")
        duration = float(container.duration / 1_000_000) if container.duration else 0.0
        if duration > limits.max_seconds:
            raise MediaRejected(f"{duration:.1f} seconds long; at most {limits.max_seconds:g}")
        rate = stream.average_rate or stream.guessed_rate or Fraction(8)
        stream.codec_context.thread_count = 1
        count = 0
        try:
            for frame in container.decode(stream):
                count += 1
                if count > limits.max_frames:
                    raise MediaRejected(f"more than {limits.max_frames} frames")
                if (frame.width, frame.height) != (width, height):
                    raise MediaRejected("the frame size changes within the clip")
                info = MediaInfo(VIDEO, container_format, width, height, count, round(float(rate), 3), codec)
                yield frame, info
        except (av.FFmpegError, ValueError, EOFError, OSError, MemoryError) as error:
            raise MediaRejected(f"a truncated or corrupt clip: {error}") from error
        if count == 0:
            raise MediaRejected("the clip has no frames")
        if stream.frames and count < stream.frames:
            raise MediaRejected(f"a truncated clip: {count} of the {stream.frames} frames it declares")


def clip_frames(data: bytes, size: tuple[int, int], limits: MediaLimits) -> tuple[np.ndarray, MediaInfo]:
    """A clip as (F, H, W, 3) uint8 frames at `size` (H, W), and what the clip was."""
    height, width = size
    frames, clip = [], None
    for frame, seen in _decoded_frames(data, limits):
        image = frame.to_image()
        image = image.crop(_crop_box(image.width, image.height, size)).resize((width, height))
        frames.append(np.asarray(image, dtype=np.uint8))
        clip = seen
    assert clip is not None
    return np.stack(frames), clip


def probe(data: bytes, kind: str, size: tuple[int, int], limits: MediaLimits) -> MediaInfo:
    """Everything the worker will do with the input, done once, for its verdict and its description."""
    if kind == IMAGE:
        return keyframe_image(data, size, limits)[1]
    clip = None
    for frame, seen in _decoded_frames(data, limits):
        frame.to_image().crop(_crop_box(frame.width, frame.height, size)).resize((size[1], size[0]))
        clip = seen
    assert clip is not None
    return clip


# The bounded child process: `python -m app.media SPEC`, one JSON line per input as it is judged, so a
# crash or a hang is blamed on the first input without a verdict.


@dataclass(frozen=True)
class ProcessBounds:
    seconds: float
    memory_bytes: int


def inspect(
    files: list[tuple[bytes, str]], size: tuple[int, int], limits: MediaLimits, bounds: ProcessBounds
) -> list[MediaInfo]:
    """Probe `(data, kind)` inputs in a child process under `bounds`; MediaRejected names the index
    (`.index`) of the first input refused, crashed on or timed out on."""
    with tempfile.TemporaryDirectory(prefix="show1-inputs-") as folder:
        items = []
        for index, (data, kind) in enumerate(files):
            path = Path(folder) / str(index)
            path.write_bytes(data)
            items.append({"path": str(path), "kind": kind})
        spec = {"items": items, "size": list(size), "limits": asdict(limits), "bounds": asdict(bounds)}
        spec_path = Path(folder) / "spec.json"
        spec_path.write_text(json.dumps(spec))
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        try:
            done = subprocess.run(
                [sys.executable, "-m", "app.media", str(spec_path)],
                capture_output=True,
                timeout=bounds.seconds,
                env=env,
                check=False,
            )
            output, failed = done.stdout, done.returncode != 0
        except subprocess.TimeoutExpired as error:
            output, failed = error.stdout or b"", True
    verdicts = [json.loads(line) for line in output.decode(errors="replace").splitlines() if line.strip()]
    infos = []
    for index, verdict in enumerate(verdicts):
        if "reason" in verdict:
            raise _rejected(index, verdict["reason"])
        infos.append(MediaInfo(**verdict["info"]))
    if failed or len(infos) < len(files):
        raise _rejected(
            len(infos),
            f"the file could not be decoded within {bounds.seconds:g} s and "
            f"{bounds.memory_bytes // 2**20} MiB (or it crashed the decoder)",
        )
    return infos


def _rejected(index: int, reason: str) -> MediaRejected:
    error = MediaRejected(reason)
    error.index = index  # type: ignore[attr-defined]
    return error


def _child(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    bounds = ProcessBounds(**spec["bounds"])
    resource.setrlimit(resource.RLIMIT_AS, (bounds.memory_bytes, bounds.memory_bytes))
    cpu = int(bounds.seconds) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    limits = MediaLimits(**spec["limits"])
    Image.MAX_IMAGE_PIXELS = limits.max_pixels
    size = tuple(spec["size"])
    for item in spec["items"]:
        data = Path(item["path"]).read_bytes()
        try:
            verdict: dict[str, Any] = {"info": asdict(probe(data, item["kind"], size, limits))}
        except MediaRejected as error:
            verdict = {"reason": str(error)}
        except MemoryError:
            verdict = {"reason": f"decoding needs more than {bounds.memory_bytes // 2**20} MiB"}
        except Exception as error:  # noqa: BLE001 - whatever a decoder raises, the file is at fault
            verdict = {"reason": f"a truncated or corrupt file ({type(error).__name__}: {error})"}
        print(json.dumps(verdict), flush=True)
        if "reason" in verdict:
            return


if __name__ == "__main__":
    _child(sys.argv[1])
