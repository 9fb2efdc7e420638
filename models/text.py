"""Prompt encoding: T5 for the pixel stages, CLIP for the latent stage."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5Tokenizer

# IF's T5 was trained on 77 tokens although T5 itself accepts longer inputs.
T5_MAX_LENGTH = 77


@dataclass(frozen=True)
class PromptEmbeddings:
    """Positive and negative text embeddings, each (1, tokens, dim)."""

    positive: torch.Tensor
    negative: torch.Tensor

    def to(self, device: torch.device) -> PromptEmbeddings:
        return PromptEmbeddings(self.positive.to(device), self.negative.to(device))

    def for_guidance(self, copies: int = 1) -> torch.Tensor:
        """Negative batch first, then positive: the order the guided UNet batch is built in."""
        return torch.cat([self.negative.expand(copies, -1, -1), self.positive.expand(copies, -1, -1)])


def encode_t5(
    tokenizer: T5Tokenizer,
    encoder: T5EncoderModel,
    prompt: str,
    negative_prompt: str,
    device: torch.device,
    dtype: torch.dtype,
) -> PromptEmbeddings:
    """IF-style encoding: lower-cased, stripped text, padded to 77 tokens, attention mask passed."""
    return PromptEmbeddings(
        positive=_t5_embed(tokenizer, encoder, prompt, device, dtype),
        negative=_t5_embed(tokenizer, encoder, negative_prompt, device, dtype),
    )


def _t5_embed(
    tokenizer: T5Tokenizer, encoder: T5EncoderModel, text: str, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    # The reference encodes without caption cleaning, which reduces to this normalisation.
    tokens = tokenizer(
        text.lower().strip(),
        padding="max_length",
        max_length=T5_MAX_LENGTH,
        truncation=True,
        add_special_tokens=True,
        return_tensors="pt",
    )
    hidden = encoder(tokens.input_ids.to(device), attention_mask=tokens.attention_mask.to(device))[0]
    return hidden.to(device=device, dtype=dtype)


def encode_clip(
    tokenizer: CLIPTokenizer,
    encoder: CLIPTextModel,
    prompt: str,
    negative_prompt: str,
    device: torch.device,
    dtype: torch.dtype,
) -> PromptEmbeddings:
    """Stable-Diffusion-style encoding: raw text padded to the tokenizer's length, no attention mask."""
    return PromptEmbeddings(
        positive=_clip_embed(tokenizer, encoder, prompt, device, dtype),
        negative=_clip_embed(tokenizer, encoder, negative_prompt, device, dtype),
    )


def _clip_embed(
    tokenizer: CLIPTokenizer, encoder: CLIPTextModel, text: str, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    tokens = tokenizer(
        text,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    # diffusers passes a mask only for encoders configured to use one; CLIP's causal text model is not.
    mask = tokens.attention_mask.to(device) if getattr(encoder.config, "use_attention_mask", False) else None
    hidden = encoder(tokens.input_ids.to(device), attention_mask=mask)[0]
    return hidden.to(device=device, dtype=dtype)
