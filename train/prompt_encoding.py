"""SDXL prompt encoding: penultimate hidden states of both CLIP encoders, pooled output of the second."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import CLIPTextModelWithProjection

from train.sdxl_models import PromptEncoders


@torch.no_grad()
def encode_prompts(prompts: Sequence[str], encoders: PromptEncoders) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt_embeds [N, 77, C1+C2], pooled_embeds [N, P]), exactly as the SDXL pipeline builds them."""
    hidden_states = []
    pooled = None
    for tokenizer, encoder in zip(encoders.tokenizers, encoders.text_encoders, strict=True):
        ids = tokenizer(
            list(prompts),
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(encoder.device)
        out = encoder(ids, output_hidden_states=True)
        hidden_states.append(out.hidden_states[-2])
        if isinstance(encoder, CLIPTextModelWithProjection):
            pooled = out.text_embeds
    if pooled is None:
        raise ValueError("SDXL needs a CLIPTextModelWithProjection as one of its text encoders")
    return torch.cat(hidden_states, dim=-1), pooled
