"""The real-size models of a recipe, built from their config files alone: on the meta device (no memory,
no weights), then as fake tensors that a traced step can run on.

The configs come from `model.base` when it is a local diffusers folder, else from the SDXL base 1.0
configs shipped in `train/sdxl_configs` (a hub id is never downloaded to plan).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, ControlNetModel, DDPMScheduler, UNet2DConditionModel
from torch._subclasses.fake_tensor import FakeTensorMode
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from train.config import ModelConfig

logger = logging.getLogger(__name__)

SHIPPED_SDXL = Path(__file__).resolve().parent.parent / "sdxl_configs"


def config_folder(model: ModelConfig) -> Path:
    """`model.base` when it is a local folder with a UNet config, else the shipped SDXL base 1.0 configs."""
    base = Path(model.base).expanduser() if model.base else None
    if base is not None and (base / "unet" / "config.json").is_file():
        return base
    if model.base:
        logger.info("model.base %s is not a local folder: planning SDXL base 1.0's architecture", model.base)
    return SHIPPED_SDXL


@dataclass
class MetaModels:
    """The frozen UNet and the trainable ControlNet, as the trainer holds them, on the meta device."""

    unet: UNet2DConditionModel
    controlnet: ControlNetModel
    noise_scheduler: DDPMScheduler
    folder: Path


def build_meta_models(model: ModelConfig) -> MetaModels:
    """The UNet frozen in eval mode and the ControlNet in train mode (from `model.controlnet`'s config when
    it is a local folder, else copied from the UNet, as `train.sdxl_models.build_controlnet` does)."""
    folder = config_folder(model)
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder, subfolder="unet"))
        controlnet_dir = Path(model.controlnet).expanduser() if model.controlnet else None
        if controlnet_dir is not None and (controlnet_dir / "config.json").is_file():
            controlnet = ControlNetModel.from_config(ControlNetModel.load_config(controlnet_dir))
        else:
            controlnet = ControlNetModel.from_unet(unet)
    unet.requires_grad_(False)
    unet.eval()
    controlnet.train()
    scheduler = DDPMScheduler.from_config(DDPMScheduler.load_config(folder, subfolder="scheduler"))
    return MetaModels(unet, controlnet, scheduler, folder)


def build_meta_encoders(folder: Path) -> dict[str, torch.nn.Module]:
    """The VAE and the two text encoders on the meta device (what an uncached run keeps on the GPU)."""
    with torch.device("meta"):
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder, subfolder="vae"))
        text = CLIPTextModel(CLIPTextConfig.from_pretrained(folder, subfolder="text_encoder"))
        text_2 = CLIPTextModelWithProjection(
            CLIPTextConfig.from_pretrained(folder, subfolder="text_encoder_2")
        )
    for module in (vae, text, text_2):
        module.requires_grad_(False)
        module.eval()
    return {"vae": vae, "text_encoder": text, "text_encoder_2": text_2}


def to_fake(module: torch.nn.Module, mode: FakeTensorMode, device: torch.device) -> torch.nn.Module:
    """Swaps `module`'s meta parameters and buffers for fake tensors on `device`, in place (shape, dtype,
    strides and `requires_grad` kept; tied parameters stay tied)."""
    converter = mode.fake_tensor_converter
    done: dict[int, torch.nn.Parameter] = {}
    for sub in module.modules():
        for name, param in list(sub._parameters.items()):
            if param is None:
                continue
            if id(param) not in done:
                fake = converter.from_meta_and_device(mode, param.data, device)
                done[id(param)] = torch.nn.Parameter(fake, requires_grad=param.requires_grad)
            sub._parameters[name] = done[id(param)]
        for name, buffer in list(sub._buffers.items()):
            if buffer is not None:
                sub._buffers[name] = converter.from_meta_and_device(mode, buffer, device)
    return module
