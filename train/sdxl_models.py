"""Loading the frozen SDXL parts and the trainable ControlNet, the same way for real and tiny weights.

Each part loads on its own, so that a run whose latents and prompt embeddings are cached never loads the
VAE or the text encoders at all.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import AutoencoderKL, ControlNetModel, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from common.diffusion import controlnet_from_unet, vae_scale_factor
from train.config import ModelConfig

logger = logging.getLogger(__name__)


@dataclass
class PromptEncoders:
    """SDXL's two tokenizers and CLIP text encoders."""

    tokenizers: tuple[CLIPTokenizer, CLIPTokenizer]
    text_encoders: tuple[CLIPTextModel, CLIPTextModelWithProjection]

    def to(self, device: torch.device) -> PromptEncoders:
        for encoder in self.text_encoders:
            encoder.to(device)
        return self


def _freeze(module: torch.nn.Module) -> torch.nn.Module:
    module.requires_grad_(False)
    module.eval()
    return module


def _weights(cfg: ModelConfig) -> dict[str, Any]:
    return {"revision": cfg.revision, "variant": cfg.variant}


def load_unet(cfg: ModelConfig) -> UNet2DConditionModel:
    return _freeze(UNet2DConditionModel.from_pretrained(cfg.base, subfolder="unet", **_weights(cfg)))


def load_vae(cfg: ModelConfig) -> AutoencoderKL:
    """`cfg.vae` (e.g. an fp16-safe SDXL VAE) when set, else the base model's VAE."""
    if cfg.vae:
        return _freeze(AutoencoderKL.from_pretrained(cfg.vae, revision=cfg.revision))
    return _freeze(AutoencoderKL.from_pretrained(cfg.base, subfolder="vae", **_weights(cfg)))


def load_prompt_encoders(cfg: ModelConfig) -> PromptEncoders:
    weights = _weights(cfg)
    return PromptEncoders(
        tokenizers=(
            CLIPTokenizer.from_pretrained(cfg.base, subfolder="tokenizer", revision=cfg.revision),
            CLIPTokenizer.from_pretrained(cfg.base, subfolder="tokenizer_2", revision=cfg.revision),
        ),
        text_encoders=(
            _freeze(CLIPTextModel.from_pretrained(cfg.base, subfolder="text_encoder", **weights)),
            _freeze(
                CLIPTextModelWithProjection.from_pretrained(cfg.base, subfolder="text_encoder_2", **weights)
            ),
        ),
    )


def load_noise_scheduler(cfg: ModelConfig) -> DDPMScheduler:
    return DDPMScheduler.from_pretrained(cfg.base, subfolder="scheduler", revision=cfg.revision)


def build_controlnet(cfg: ModelConfig, unet: UNet2DConditionModel) -> ControlNetModel:
    """The trainable ControlNet: an existing one to fine-tune, or a copy of the UNet's encoder."""
    if cfg.controlnet:
        logger.info("Fine-tuning the ControlNet from %s", cfg.controlnet)
        controlnet = ControlNetModel.from_pretrained(cfg.controlnet, revision=cfg.revision)
    else:
        logger.info("Initialising the ControlNet from the UNet's weights")
        controlnet = controlnet_from_unet(unet, vae_scale_factor(cfg.base, cfg.vae, cfg.revision))
    controlnet.train()
    return controlnet


@torch.no_grad()
def match_condition_scale(controlnet: ControlNetModel, samples: Sequence[dict[str, Any]], seed: int) -> float:
    """Gives the condition embedding's zero-initialised last convolution nn.Conv2d's default weights,
    scaled so that on `samples` (training items: `conditioning_pixel_values`, `latents`) the embedded
    condition has the spread of the latents' features it is added to. Returns the scale.

    At zero, no gradient reaches that convolution until the output convolutions have grown, and at the
    default scale the condition is ~100× quieter than the latents in the trunk: either way the condition
    is ignored for hundreds of steps. The output convolutions stay zero, so step 0 is still the base.
    """
    embedder = controlnet.controlnet_cond_embedding
    conv = embedder.conv_out
    torch.nn.init.kaiming_uniform_(conv.weight, a=5**0.5, generator=torch.Generator().manual_seed(seed))
    dtype = conv.weight.dtype
    embedded = torch.stack([embedder(s["conditioning_pixel_values"][None].to(dtype)).std() for s in samples])
    trunk = torch.stack([controlnet.conv_in(s["latents"][None].to(dtype)).std() for s in samples])
    scale = float(trunk.mean() / embedded.mean())
    conv.weight.mul_(scale)
    return scale
