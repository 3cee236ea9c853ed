"""Loading the frozen SDXL parts and the trainable ControlNet, the same way for real and tiny weights."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from diffusers import AutoencoderKL, ControlNetModel, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from train.config import ModelConfig

logger = logging.getLogger(__name__)


@dataclass
class FrozenSDXL:
    """The parts of SDXL that training reads but never updates."""

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    text_encoder_2: CLIPTextModelWithProjection
    tokenizer: CLIPTokenizer
    tokenizer_2: CLIPTokenizer
    noise_scheduler: DDPMScheduler


def _freeze(module: torch.nn.Module) -> torch.nn.Module:
    module.requires_grad_(False)
    module.eval()
    return module


def load_frozen_sdxl(cfg: ModelConfig) -> FrozenSDXL:
    """Loads every frozen component from `cfg.base` (the VAE optionally from `cfg.vae`), on CPU, fp32."""
    common = {"revision": cfg.revision}
    weights = {**common, "variant": cfg.variant}
    vae = (
        AutoencoderKL.from_pretrained(cfg.vae, revision=cfg.revision)
        if cfg.vae
        else AutoencoderKL.from_pretrained(cfg.base, subfolder="vae", **weights)
    )
    return FrozenSDXL(
        unet=_freeze(UNet2DConditionModel.from_pretrained(cfg.base, subfolder="unet", **weights)),
        vae=_freeze(vae),
        text_encoder=_freeze(CLIPTextModel.from_pretrained(cfg.base, subfolder="text_encoder", **weights)),
        text_encoder_2=_freeze(
            CLIPTextModelWithProjection.from_pretrained(cfg.base, subfolder="text_encoder_2", **weights)
        ),
        tokenizer=CLIPTokenizer.from_pretrained(cfg.base, subfolder="tokenizer", **common),
        tokenizer_2=CLIPTokenizer.from_pretrained(cfg.base, subfolder="tokenizer_2", **common),
        noise_scheduler=DDPMScheduler.from_pretrained(cfg.base, subfolder="scheduler", **common),
    )


def build_controlnet(cfg: ModelConfig, unet: UNet2DConditionModel) -> ControlNetModel:
    """The trainable ControlNet: an existing one to fine-tune, or a copy of the UNet's encoder."""
    if cfg.controlnet:
        logger.info("Fine-tuning the ControlNet from %s", cfg.controlnet)
        controlnet = ControlNetModel.from_pretrained(cfg.controlnet, revision=cfg.revision)
    else:
        logger.info("Initialising the ControlNet from the UNet's weights")
        controlnet = ControlNetModel.from_unet(unet)
    controlnet.train()
    return controlnet
