"""What decides the pictures (GenerationSettings) and what only decides the speed (SpeedSettings).

The split matters for resuming: a changed GenerationSettings makes existing images unusable together
with new ones (params.json refuses it), while SpeedSettings may change between runs of the same
output folder (dtype makes tiny pixel differences, not different pictures).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Literal

import torch

__all__ = [
    "DTYPES",
    "SCHEDULER_NAMES",
    "SIZE_MULTIPLE",
    "ComponentDtypes",
    "GenerationSettings",
    "SpeedSettings",
    "dtype_name",
]

SIZE_MULTIPLE = 8  # the VAE downsamples 8x; other sizes fail inside the UNet
SCHEDULER_NAMES = ("unipc", "dpm++2m", "euler", "ddim")
"""Schedulers a run may ask for; None (not listed) keeps the base model's own scheduler."""
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@dataclass
class GenerationSettings:
    """Sampling settings; everything here changes the pictures, so it goes into params.json.

    ``negative_prompt=""`` means SDXL's default (zeroed negative embeddings), not an encoded empty
    string. ``resolution`` None keeps each condition's own size (rounded down to a multiple of 8);
    an int makes square images of that side, stretching the condition to fit. ``scheduler`` None
    keeps the base model's scheduler. The ControlNet acts only between ``control_guidance_start`` and
    ``control_guidance_end`` (fractions of the denoising steps).
    """

    num_inference_steps: int = 20
    guidance_scale: float = 5.0
    controlnet_conditioning_scale: float = 1.0
    negative_prompt: str = ""
    resolution: int | None = None
    scheduler: str | None = None
    control_guidance_start: float = 0.0
    control_guidance_end: float = 1.0

    def __post_init__(self) -> None:
        problems = []
        if self.num_inference_steps < 1:
            problems.append(f"num_inference_steps must be >= 1, got {self.num_inference_steps}")
        if self.resolution is not None and self.resolution < SIZE_MULTIPLE:
            problems.append(f"resolution must be >= {SIZE_MULTIPLE}, got {self.resolution}")
        if self.scheduler is not None and self.scheduler not in SCHEDULER_NAMES:
            problems.append(f"scheduler must be one of {', '.join(SCHEDULER_NAMES)}, got {self.scheduler!r}")
        if not 0.0 <= self.control_guidance_start < self.control_guidance_end <= 1.0:
            problems.append(
                "need 0 <= control_guidance_start < control_guidance_end <= 1, got "
                f"{self.control_guidance_start} and {self.control_guidance_end}"
            )
        if problems:
            raise ValueError("invalid GenerationSettings: " + "; ".join(problems))


@dataclass(frozen=True)
class SpeedSettings:
    """How to run the models; none of it changes what the pictures show.

    Dtypes are names from ``DTYPES``; None picks per device (see ComponentDtypes.resolve).
    ``attention="xformers"`` and ``compile`` are optional accelerators: when they fail to load or to
    compile, a warning is logged and generation goes on with SDPA / eager modules.
    """

    unet_dtype: str | None = None
    """UNet and ControlNet (they add their activations together, so they share one dtype)."""
    vae_dtype: str | None = None
    text_encoder_dtype: str | None = None
    attention: Literal["sdpa", "xformers"] = "sdpa"
    compile: bool = False
    """torch.compile the UNet and the ControlNet (first batch of each size pays the compile time)."""
    channels_last: bool = False
    vae_tiling: bool = False
    vae_slicing: bool = False
    cpu_offload: bool = False
    """Keep models on the CPU and move each to the GPU only while it runs (diffusers model offload)."""

    def __post_init__(self) -> None:
        dtypes = {
            "unet_dtype": self.unet_dtype,
            "vae_dtype": self.vae_dtype,
            "text_encoder_dtype": self.text_encoder_dtype,
        }
        for field, value in dtypes.items():
            if value is not None and value not in DTYPES:
                raise ValueError(f"{field} must be one of {', '.join(DTYPES)}, got {value!r}")
        if self.attention not in ("sdpa", "xformers"):
            raise ValueError(f"attention must be 'sdpa' or 'xformers', got {self.attention!r}")


@dataclass(frozen=True)
class ComponentDtypes:
    """The dtype each part of the pipeline is loaded in."""

    unet: torch.dtype
    vae: torch.dtype
    text_encoders: torch.dtype

    @classmethod
    def uniform(cls, dtype: torch.dtype) -> ComponentDtypes:
        """Everything in ``dtype`` except an fp16 VAE, which decodes in fp32 (SDXL's VAE overflows in
        fp16; diffusers upcasts it for the same reason)."""
        return cls(dtype, torch.float32 if dtype == torch.float16 else dtype, dtype)

    @classmethod
    def resolve(
        cls, device: str, speed: SpeedSettings, default: torch.dtype | None = None
    ) -> ComponentDtypes:
        """Per-component choices of ``speed`` over ``default`` over the device's default (fp16 on CUDA,
        fp32 on CPU where half precision is slow or missing)."""
        fallback = default or (torch.float16 if device.startswith("cuda") else torch.float32)
        base = cls.uniform(DTYPES[speed.unet_dtype] if speed.unet_dtype else fallback)
        return cls(
            base.unet,
            DTYPES[speed.vae_dtype] if speed.vae_dtype else base.vae,
            DTYPES[speed.text_encoder_dtype] if speed.text_encoder_dtype else base.text_encoders,
        )

    def as_dict(self) -> dict[str, str]:
        return {
            "unet": dtype_name(self.unet),
            "vae": dtype_name(self.vae),
            "text_encoders": dtype_name(self.text_encoders),
        }


def speed_from_args(args: argparse.Namespace) -> SpeedSettings:
    """The speed options shared by `python -m inference` and `python -m serve`, from their parsed flags."""
    return SpeedSettings(
        unet_dtype=args.unet_dtype,
        vae_dtype=args.vae_dtype,
        text_encoder_dtype=args.text_encoder_dtype,
        attention=args.attention,
        compile=args.compile,
        channels_last=args.channels_last,
        vae_tiling=args.vae_tiling,
        vae_slicing=args.vae_slicing,
        cpu_offload=args.cpu_offload,
    )
