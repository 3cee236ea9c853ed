"""What training and inference must agree on about the SDXL models, so both compute it the same way.

The diffusion target a UNet is trained (and its denoising judged) against, pixels as the tensors the
models take, and a ControlNet built from a UNet whose condition embedder matches the base's VAE.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import AutoencoderKL, ControlNetModel, DDPMScheduler, UNet2DConditionModel
from PIL import Image

SDXL_CONDITION_EMBEDDING = (16, 32, 96, 256)
"""`ControlNetModel`'s conditioning embedder widths: 3 stride-2 convolutions, for SDXL's 8x VAE."""


def diffusion_target(
    scheduler: DDPMScheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """What the UNet should predict under the base model's parameterisation."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"unsupported prediction_type {kind!r} in the base model's scheduler config")


def to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float tensor [3, H, W] in [0, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def vae_scale_factor(base: str, vae: str | None = None, revision: str | None = None) -> int:
    """Pixels per latent side of the base's VAE (or the separate `vae`), from its config alone:
    2^(blocks - 1), as diffusers' pipelines compute it."""
    if vae:
        config = AutoencoderKL.load_config(vae, revision=revision)
    else:
        config = AutoencoderKL.load_config(base, subfolder="vae", revision=revision)
    return 2 ** (len(config["block_out_channels"]) - 1)


def controlnet_from_unet(unet: UNet2DConditionModel, scale_factor: int = 8) -> ControlNetModel:
    """diffusers' `from_unet`, with a conditioning embedder that downsamples the condition image as much
    as the VAE downsamples the image (SDXL's 8x: diffusers' default widths; a 4x VAE: one stride fewer),
    so a pipeline's full-resolution condition meets the latents at their size."""
    strides = scale_factor.bit_length() - 1
    if scale_factor != 2**strides or not 1 <= strides <= len(SDXL_CONDITION_EMBEDDING) - 1:
        raise ValueError(f"VAE scale factor {scale_factor}: expected 2, 4 or 8")
    widths = SDXL_CONDITION_EMBEDDING[: strides + 1]
    return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=widths)
