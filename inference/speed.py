"""Speed options applied to a loaded denoising pipeline, each falling back instead of failing the run.

xformers and torch.compile are optional accelerators: a missing xformers wheel, a GPU it does not
support or a compiler error costs speed, not the evaluation, so each failure is logged and the run
goes on with SDPA / the eager modules. torch.compile fails lazily (at the first call, not at
``torch.compile``), so the fallback for it wraps the pipeline call: see ``call_with_compile_fallback``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import TypeVar

import torch
from diffusers import ControlNetModel, DiffusionPipeline, StableDiffusionXLControlNetPipeline
from diffusers.models.attention_processor import AttnProcessor2_0
from torch._dynamo.exc import TorchDynamoException

from inference.settings import SpeedSettings

logger = logging.getLogger(__name__)

__all__ = [
    "EagerModules",
    "call_with_compile_fallback",
    "compile_denoiser",
    "configure",
    "place",
    "prepare_controlnet",
    "usable",
]

T = TypeVar("T")
EagerModules = dict[str, torch.nn.Module]
"""The UNet and ControlNet as they were before torch.compile, keyed by pipeline attribute; empty when
nothing is compiled."""
_XFORMERS_ERRORS = (ImportError, ValueError, NotImplementedError)
"""What diffusers raises when xformers is not installed (ModuleNotFoundError), needs CUDA (ValueError)
or cannot run its test op on this GPU."""


def _use_xformers(module: torch.nn.Module | StableDiffusionXLControlNetPipeline) -> bool:
    """Switch ``module`` to xformers attention; False (logged) when xformers cannot be used."""
    try:
        module.enable_xformers_memory_efficient_attention()
    except _XFORMERS_ERRORS as err:
        logger.warning("xformers attention unavailable (%s: %s); using SDPA", type(err).__name__, err)
        return False
    return True


def _use_sdpa(pipe: StableDiffusionXLControlNetPipeline) -> None:
    for module in (pipe.unet, pipe.controlnet, pipe.vae):
        module.set_attn_processor(AttnProcessor2_0())


def configure(pipe: StableDiffusionXLControlNetPipeline, speed: SpeedSettings) -> str:
    """Attention, memory format and VAE tiling/slicing; returns the attention actually in use."""
    attention = "xformers" if speed.attention == "xformers" and _use_xformers(pipe) else "sdpa"
    if attention == "sdpa":
        _use_sdpa(pipe)
    if speed.channels_last:
        for module in (pipe.unet, pipe.controlnet, pipe.vae):
            module.to(memory_format=torch.channels_last)
    if speed.vae_tiling:
        pipe.vae.enable_tiling()
    if speed.vae_slicing:
        pipe.vae.enable_slicing()
    return attention


def prepare_controlnet(controlnet: ControlNetModel, speed: SpeedSettings, attention: str) -> None:
    """Give a ControlNet swapped into a configured pipeline the same attention and memory format."""
    if attention != "xformers" or not _use_xformers(controlnet):
        controlnet.set_attn_processor(AttnProcessor2_0())
    if speed.channels_last:
        controlnet.to(memory_format=torch.channels_last)


def usable(speed: SpeedSettings, device: str) -> SpeedSettings:
    """``speed`` without the options ``device`` cannot use (logged): model offload needs a GPU."""
    if speed.cpu_offload and not device.startswith("cuda"):
        logger.warning("model CPU offload needs a GPU device, not %s; ignored", device)
        return dataclasses.replace(speed, cpu_offload=False)
    return speed


def place(pipe: DiffusionPipeline, device: str, offload: bool) -> None:
    """Move ``pipe`` to ``device``, or with ``offload`` let diffusers move each model there as it runs."""
    if offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)


def compile_denoiser(pipe: StableDiffusionXLControlNetPipeline) -> EagerModules:
    """torch.compile the UNet and ControlNet in place; returns the eager modules to fall back to."""
    eager: EagerModules = {"unet": pipe.unet, "controlnet": pipe.controlnet}
    try:
        pipe.unet = torch.compile(eager["unet"])
        pipe.controlnet = torch.compile(eager["controlnet"])
    except (TorchDynamoException, RuntimeError) as err:  # e.g. "Dynamo is not supported on Python 3.x"
        logger.warning("torch.compile unavailable (%s: %s); running eager", type(err).__name__, err)
        _restore(pipe, eager)
        return {}
    logger.info("UNet and ControlNet compiled with torch.compile (compiles on the first batch)")
    return eager


def _restore(pipe: StableDiffusionXLControlNetPipeline, eager: EagerModules) -> None:
    pipe.unet = eager["unet"]
    pipe.controlnet = eager["controlnet"]


def call_with_compile_fallback(
    pipe: StableDiffusionXLControlNetPipeline, eager: EagerModules, call: Callable[[], T]
) -> T:
    """Run ``call``; if the compiled modules fail to compile, put the eager ones back and run it again.

    ``eager`` is emptied on fallback so later calls do not retry. Errors without compiled modules
    propagate unchanged.
    """
    try:
        return call()
    except TorchDynamoException as err:
        if not eager:
            raise
        logger.warning(
            "torch.compile failed at the first call (%s: %s); continuing with the eager UNet and ControlNet",
            type(err).__name__,
            " ".join(str(err).splitlines()[:2]),
        )
        _restore(pipe, eager)
        eager.clear()
        return call()
