"""Does a ControlNet follow its condition? Measured through plain diffusers, no skinforge pipeline code.

`StableDiffusionXLControlNetPipeline.from_pretrained(base, controlnet=...)` with the base's own scheduler
generates each held-out record's condition; each image is scored with the edge F1 within `tolerance`
pixels (inference.metrics: Canny 100/200 of the image against the condition's outline) and, for fill
records, the IoU of the generated circle with the condition's disk (inference.fill_metrics). A fresh
`ControlNetModel.from_unet` (zero output convolutions: no control at all) is the baseline any claim is
made against. This is the yardstick of the demo's README numbers and of the learning test.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from diffusers import ControlNetModel, StableDiffusionXLControlNetPipeline, UNet2DConditionModel
from PIL import Image

from common.diffusion import controlnet_from_unet, vae_scale_factor
from data.records import read_records, resolve_path
from inference.fill_metrics import circle_hue_error, circle_iou, clean_circle
from inference.metrics import EdgeSettings, edge_scores

__all__ = ["Adherence", "measure_adherence", "no_control", "random_control"]

ZERO_INITIALISED = ("controlnet_cond_embedding.conv_out", "controlnet_down_blocks", "controlnet_mid_block")
"""The layers `ControlNetModel.from_unet` starts at zero: the only path from the condition to the UNet."""


@dataclass(frozen=True)
class Adherence:
    edge_f1_tolerant: float
    circle_iou: float | None
    """Mean over fill records; None when no record is a fill record."""
    images: list[Image.Image]
    edge_f1s: list[float] = field(default_factory=list)
    """Per image, in `images` order; the lists below hold fill records' images only."""
    ious: list[float] = field(default_factory=list)
    clean: list[bool] = field(default_factory=list)
    """`clean_circle`: one clean circle on a flat background."""
    hue_errors: list[float] = field(default_factory=list)
    """`circle_hue_error`, for circles whose colour has a hue."""

    def median(self, name: str) -> float:
        values = getattr(self, name)
        return float(np.median(values)) if values else float("nan")


def no_control(base: str | Path) -> ControlNetModel:
    """A ControlNet as training starts from the UNet: its output convolutions are zero, so no control."""
    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
    return controlnet_from_unet(unet, vae_scale_factor(str(base)))


@torch.no_grad()
def random_control(base: str | Path, like: ControlNetModel, seed: int = 0) -> ControlNetModel:
    """`no_control` with its zero-initialised layers drawn at random, each at the scale (std) the same
    layer has in `like`: a ControlNet that changes the output as much as a trained one, but in no learned
    relation to the condition. A learning claim must beat this as well as `no_control`."""
    controlnet = no_control(base)
    trained = like.state_dict()
    generator = torch.Generator().manual_seed(seed)
    for name, param in controlnet.named_parameters():
        if name.startswith(ZERO_INITIALISED):
            noise = torch.randn(param.shape, generator=generator)
            param.copy_(noise * trained[name].float().std() + trained[name].float().mean())
    return controlnet


@torch.no_grad()
def measure_adherence(
    base: str | Path,
    controlnet: ControlNetModel | str | Path,
    jsonl: Path,
    seeds: Sequence[int] = (0,),
    steps: int = 20,
    guidance_scale: float = 5.0,
    tolerance: int = 2,
) -> Adherence:
    """Generates every record of `jsonl` × `seeds` at the condition's size and scores the images."""
    if not isinstance(controlnet, ControlNetModel):
        controlnet = ControlNetModel.from_pretrained(controlnet)
    pipe = StableDiffusionXLControlNetPipeline.from_pretrained(base, controlnet=controlnet)
    pipe.set_progress_bar_config(disable=True)
    settings = EdgeSettings(tolerance=tolerance)
    f1s, ious, images, clean, hues = [], [], [], [], []
    for record in read_records(jsonl):
        with Image.open(resolve_path(jsonl.parent, record.conditioning_image)) as image:
            condition = image.convert("RGB")
        for seed in seeds:
            generated = pipe(
                record.text,
                image=condition,
                num_inference_steps=steps,
                guidance_scale=guidance_scale,
                height=condition.height,
                width=condition.width,
                generator=torch.Generator().manual_seed(seed),
            ).images[0]
            images.append(generated)
            f1s.append(edge_scores(generated, condition, settings).f1_tolerant)
            if (iou := circle_iou(generated, condition, record.text)) is not None:
                ious.append(iou)
                clean.append(clean_circle(generated))
            if (hue := circle_hue_error(generated, condition, record.text)) is not None:
                hues.append(hue)
    mean_iou = float(np.mean(ious)) if ious else None
    return Adherence(float(np.mean(f1s)), mean_iou, images, f1s, ious, clean, hues)
