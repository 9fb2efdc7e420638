from __future__ import annotations

import io

import av
import numpy as np
import pytest

from models.video import decode_mp4, encode_mp4


def test_mp4_is_h264_yuv420p_faststart_and_decodes_back():
    frames = np.random.default_rng(0).integers(0, 256, (29, 64, 112, 3), dtype=np.uint8)
    data = encode_mp4(frames, fps=8)
    assert data.index(b"moov") < data.index(b"mdat"), "index must come first for streaming"
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("h264", "yuv420p")
        assert stream.average_rate == 8
    decoded = decode_mp4(data)
    assert decoded.shape == frames.shape
    # Lossy, but a flat frame must come back flat.
    flat = np.full((4, 32, 32, 3), 128, dtype=np.uint8)
    assert np.abs(decode_mp4(encode_mp4(flat)).astype(int) - 128).max() <= 2


@pytest.mark.parametrize("shape", [(3, 63, 64, 3), (3, 64, 64, 4)])
def test_bad_frames_are_refused(shape):
    with pytest.raises(ValueError):
        encode_mp4(np.zeros(shape, dtype=np.uint8))
