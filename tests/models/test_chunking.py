"""Chunked forwards compute what the unchunked ones do: every UNet of tiny-d (the published layout) and
its VAE, with a working memory so small that every separable layer runs one row or frame at a time."""

from __future__ import annotations

from functools import cache

import pytest
import torch
from diffusers import AutoencoderKL

from models.chunking import WorkingMemory, map_rows
from models.loading import CascadeModels, load_models
from models.temporal import TemporalTransformer
from tests.models.golden_case import PUBLISHED_CASE, models_dir, requires_golden

pytestmark = requires_golden
LIMIT = 1e-6  # float32: the pieces differ from the whole by rounding only
ONE_ROW = WorkingMemory(bytes=1)
UNCHUNKED = WorkingMemory(bytes=2**62)


@cache
def tiny_d() -> CascadeModels:
    return load_models(models_dir(PUBLISHED_CASE), torch.float32)


def _unet_inputs(unet: torch.nn.Module, channels: int, frames: int, size: tuple[int, int]) -> dict:
    generator = torch.Generator().manual_seed(0)
    text_width = unet.config.encoder_hid_dim or unet.config.cross_attention_dim
    inputs = {
        "sample": torch.randn((2, channels, frames, *size), generator=generator),
        "timestep": torch.tensor([500.0, 500.0]),
        "encoder_hidden_states": torch.randn((2, 7, text_width), generator=generator),
    }
    if unet.config.class_embed_type is not None:
        inputs["class_labels"] = torch.tensor([250.0, 250.0])
    return inputs


def _forward(unet: torch.nn.Module, memory: WorkingMemory, inputs: dict) -> torch.Tensor:
    unet.set_working_memory(memory)
    try:
        with torch.inference_mode():
            return unet(**inputs).sample
    finally:
        unet.set_working_memory(WorkingMemory())


@pytest.mark.parametrize(
    ("name", "channels", "frames", "size"),
    [
        ("base_unet", 3, 5, (16, 24)),
        ("interp_unet", 7, 5, (16, 24)),
        ("sr1_unet", 6, 4, (32, 48)),
        ("sr2_unet", 4, 6, (10, 14)),  # sides that the down path does not halve evenly
    ],
)
def test_every_unet_forward_chunked_equals_unchunked(name: str, channels: int, frames: int, size: tuple):
    unet = getattr(tiny_d(), name)
    inputs = _unet_inputs(unet, channels, frames, size)
    whole = _forward(unet, UNCHUNKED, inputs)
    pieces = _forward(unet, ONE_ROW, inputs)
    assert whole.shape == pieces.shape
    assert (whole - pieces).abs().max().item() <= LIMIT


def test_one_row_at_a_time_really_splits_the_work(monkeypatch: pytest.MonkeyPatch):
    """The budget reaches every temporal transformer: with one row per piece, each runs once per image
    line of each video, not once per forward."""
    unet = tiny_d().sr2_unet
    inputs = _unet_inputs(unet, 4, 3, (8, 8))
    calls = []
    original = TemporalTransformer._sequences

    def counted(self, video_rows, num_frames):  # noqa: ANN001, ANN202
        calls.append(video_rows.shape[2])
        return original(self, video_rows, num_frames)

    monkeypatch.setattr(TemporalTransformer, "_sequences", counted)
    _forward(unet, UNCHUNKED, inputs)
    whole_calls = len(calls)
    calls.clear()
    _forward(unet, ONE_ROW, inputs)
    assert set(calls) == {1}
    assert len(calls) > whole_calls


def test_vae_by_frames_equals_the_whole_batch():
    """Each VAE forward (encode, decode) on the same input, a frame at a time against all frames at
    once: within 1e-6 of the output's largest magnitude (the decoder's reaches about 9 here)."""
    vae: AutoencoderKL = tiny_d().vae
    frames = torch.rand((5, 3, 32, 48), generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.inference_mode():
        latents = vae.encode(frames).latent_dist.mean
        outputs = {}
        for sliced in (False, True):
            vae.enable_slicing() if sliced else vae.disable_slicing()
            outputs[sliced] = (vae.encode(frames).latent_dist.mean, vae.decode(latents).sample)
    vae.enable_slicing()  # as the cascade runs it
    for whole, by_frame in zip(outputs[False], outputs[True], strict=True):
        assert (whole - by_frame).abs().max().item() <= LIMIT * whole.abs().max().item()


def test_map_rows_puts_the_pieces_in_order():
    values = torch.arange(10.0).reshape(10, 1)
    doubled = map_rows(lambda rows: values[rows] * 2, 10, 3)
    assert torch.equal(doubled, values * 2)
    assert WorkingMemory(bytes=100).rows(10, 30) == 3
    assert WorkingMemory(bytes=1).rows(10, 30) == 1
    assert WorkingMemory(bytes=10**9).rows(10, 30) == 10
