"""MP4 encoding of generated frames: H.264, yuv420p, moov atom first, so browsers stream it."""

from __future__ import annotations

import io
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def encode_mp4(frames: np.ndarray, fps: int = 8, crf: int = 18) -> bytes:
    """(T, H, W, 3) uint8 frames -> MP4 bytes.

    yuv420p subsamples chroma 2x2, so both sides must be even; the cascade's sizes always are, and
    an odd size is refused rather than silently cropped.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    _, height, width, _ = frames.shape
    if height % 2 or width % 2:
        raise ValueError(f"H.264 yuv420p needs even sides, got {height}x{width}")
    if fps < 1:
        raise ValueError(f"fps must be at least 1, got {fps}")

    # faststart rewrites the file to move the index to the front, which needs a real file.
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "video.mp4"
        _write(path, frames, fps, crf)
        return path.read_bytes()


def _write(path: Path, frames: np.ndarray, fps: int, crf: int) -> None:
    _, height, width, _ = frames.shape
    with av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=Fraction(fps, 1))
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "medium"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def decode_mp4(data: bytes) -> np.ndarray:
    """MP4 bytes -> (T, H, W, 3) uint8 frames; used to check what was written."""
    with av.open(io.BytesIO(data)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
