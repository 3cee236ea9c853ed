"""Validation images during training: fixed prompts and conditions, saved as one grid per step."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from diffusers import ControlNetModel, UNet2DConditionModel
from PIL import Image

from data.atomic import atomic_save_image
from inference.grid import make_grid
from inference.pipeline import GenerationSettings, generate, load_pipeline
from train.config import ValidationConfig

logger = logging.getLogger(__name__)


def _copy_in_dtype(controlnet: ControlNetModel, dtype: torch.dtype) -> ControlNetModel:
    """A plain copy in the pipeline's dtype: the fp32 master weights stay untouched, and accelerate's
    mixed-precision forward wrapper (which returns fp32 outputs) is not carried over."""
    copy = ControlNetModel.from_config(controlnet.config)
    copy.load_state_dict(controlnet.state_dict())
    return copy.to(device=controlnet.device, dtype=dtype)


class TrainingValidator:
    """Runs on the main process; borrows the trainer's UNet and ControlNet, loads VAE and text encoders."""

    def __init__(self, cfg: ValidationConfig, base: str, resolution: int, output_dir: Path) -> None:
        self.cfg = cfg
        self.base = base
        self.folder = output_dir / "validation"
        self.settings = GenerationSettings(
            num_inference_steps=cfg.num_inference_steps,
            guidance_scale=cfg.guidance_scale,
            resolution=resolution,
        )
        self.conditions = [Image.open(path).convert("RGB") for path in cfg.conditioning_images]

    def due(self, step: int, max_steps: int) -> bool:
        every = self.cfg.every_n_steps
        return bool(every) and (step % every == 0 or step == max_steps)

    @torch.no_grad()
    def run(
        self, step: int, controlnet: ControlNetModel, unet: UNet2DConditionModel, accelerator: Accelerator
    ) -> Path:
        """Generates the validation grid for `step`, saves it and sends it to the trackers."""
        if controlnet.dtype != unet.dtype:
            controlnet = _copy_in_dtype(controlnet, unet.dtype)
        was_training = controlnet.training
        controlnet.eval()
        try:
            pipe = load_pipeline(self.base, controlnet, str(accelerator.device), dtype=unet.dtype, unet=unet)
            seeds = [self.cfg.seed] * len(self.conditions)
            images = generate(pipe, self.cfg.prompts, self.conditions, seeds, self.settings)
        finally:
            controlnet.train(was_training)
        del pipe
        rows = [[condition, image] for condition, image in zip(self.conditions, images, strict=True)]
        grid = make_grid(rows, ["condition", f"step {step}"])
        path = self.folder / f"step-{step:06d}.png"
        atomic_save_image(grid, path)
        batch = np.stack([np.asarray(grid)])
        for tracker in accelerator.trackers:
            layout = {"dataformats": "NHWC"} if tracker.name == "tensorboard" else {}
            tracker.log_images({"validation": batch}, step=step, **layout)
        logger.info("Validation images for step %d: %s", step, path)
        return path
