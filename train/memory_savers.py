"""The speed and memory switches of `train` applied to the models and the optimizer, each one on its own.

Every switch is explicit in the config and measured in `bench/`. A switch that cannot work where the run
is (8-bit AdamW without CUDA or bitsandbytes, xformers without its wheel) stops the run at set-up with
the reason, rather than silently training with a different memory footprint than the recipe asked for.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import torch
from diffusers import ControlNetModel, UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0

from train.config import TrainConfig

logger = logging.getLogger(__name__)

NEW_LAYER_PREFIXES = ("controlnet_cond_embedding.", "controlnet_down_blocks.", "controlnet_mid_block.")
"""ControlNet parts that `ControlNetModel.from_unet` initialises fresh (conditioning embedder, zero
convolutions) rather than copying from the UNet."""


class SaverUnavailable(RuntimeError):
    """A requested memory/speed switch cannot run on this machine."""


def set_tf32(enabled: bool) -> None:
    """TF32 matmuls and convolutions on Ampere+ GPUs (fp32 ops at ~8x the speed, 10-bit mantissa)."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def set_attention(modules: Iterable[torch.nn.Module], attention: str) -> None:
    """SDPA (torch's fused attention, the default) or xformers' memory-efficient attention."""
    for module in modules:
        if attention == "sdpa":
            module.set_attn_processor(AttnProcessor2_0())
            continue
        try:
            module.enable_xformers_memory_efficient_attention()
        except (ImportError, ValueError, NotImplementedError) as err:
            raise SaverUnavailable(
                f"train.attention=xformers: {type(err).__name__}: {err}. Install an xformers wheel built "
                "for this torch and CUDA, or use train.attention=sdpa"
            ) from err


def apply_model_savers(cfg: TrainConfig, controlnet: ControlNetModel, unet: UNet2DConditionModel) -> None:
    """Gradient checkpointing, attention kernel, memory layout and compilation of both models."""
    set_attention((controlnet, unet), cfg.attention)
    if cfg.gradient_checkpointing in ("controlnet", "both"):
        controlnet.enable_gradient_checkpointing()
    if cfg.gradient_checkpointing in ("unet", "both"):
        unet.enable_gradient_checkpointing()
    if cfg.channels_last:
        controlnet.to(memory_format=torch.channels_last)
        unet.to(memory_format=torch.channels_last)
    if cfg.compile:
        # In place (nn.Module.compile): parameter names and the module type stay as they are, so
        # checkpoints, `save_pretrained` and validation see the plain modules.
        controlnet.compile()
        unet.compile()


def controlnet_param_groups(
    controlnet: ControlNetModel, lr: float, lr_new_layers: float | None
) -> list[dict[str, Any]]:
    """One group at `lr`, or two when the freshly initialised layers get their own learning rate."""
    params = [(n, p) for n, p in controlnet.named_parameters() if p.requires_grad]
    if lr_new_layers is None:
        return [{"params": [p for _, p in params], "lr": lr, "name": "controlnet"}]
    new = [p for n, p in params if n.startswith(NEW_LAYER_PREFIXES)]
    copied = [p for n, p in params if not n.startswith(NEW_LAYER_PREFIXES)]
    return [
        {"params": copied, "lr": lr, "name": "copied_from_unet"},
        {"params": new, "lr": lr_new_layers, "name": "new_layers"},
    ]


def make_optimizer(
    cfg: TrainConfig, groups: list[dict[str, Any]], device: torch.device
) -> torch.optim.Optimizer:
    """AdamW: torch's (fused kernel by default) or bitsandbytes' 8-bit one (CUDA only)."""
    common = {
        "betas": (cfg.adam_beta1, cfg.adam_beta2),
        "weight_decay": cfg.weight_decay,
        "eps": cfg.adam_epsilon,
    }
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, fused=cfg.fused_adamw or None, **common)
    if device.type != "cuda":
        raise SaverUnavailable(f"train.optimizer=adamw_8bit needs a CUDA device, not {device.type}")
    try:
        import bitsandbytes
    except ImportError as err:
        raise SaverUnavailable(
            "train.optimizer=adamw_8bit needs bitsandbytes: pip install 'skinforge[gpu]'"
        ) from err
    return bitsandbytes.optim.AdamW8bit(groups, lr=cfg.lr, **common)
