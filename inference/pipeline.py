"""Load an SDXL ControlNet pipeline and generate reproducible, batched images from it.

Shared by batch inference and by the trainer's validation (which passes its in-memory UNet and
ControlNet so nothing is reloaded from disk). Every image gets its own ``torch.Generator`` seeded
from its own seed, so an image depends only on (prompt, condition, seed, settings), not on which
batch it happened to land in: a resumed or re-batched run reproduces the same pictures.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import ControlNetModel, StableDiffusionXLControlNetPipeline, UNet2DConditionModel
from PIL import Image

logger = logging.getLogger(__name__)

__all__ = ["GenerationSettings", "generate", "load_pipeline", "output_size", "swap_controlnet"]

SIZE_MULTIPLE = 8  # the VAE downsamples 8x; other sizes fail inside the UNet


@dataclass
class GenerationSettings:
    """Sampling settings; everything here changes the pictures, so it goes into report.json.

    ``negative_prompt=""`` means SDXL's default (zeroed negative embeddings), not an encoded empty
    string. ``resolution`` None keeps each condition's own size (rounded down to a multiple of 8);
    an int makes square images of that side, stretching the condition to fit.
    """

    num_inference_steps: int = 20
    guidance_scale: float = 5.0
    controlnet_conditioning_scale: float = 1.0
    negative_prompt: str = ""
    resolution: int | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.num_inference_steps < 1:
            problems.append(f"num_inference_steps must be >= 1, got {self.num_inference_steps}")
        if self.resolution is not None and self.resolution < SIZE_MULTIPLE:
            problems.append(f"resolution must be >= {SIZE_MULTIPLE}, got {self.resolution}")
        if problems:
            raise ValueError("invalid GenerationSettings: " + "; ".join(problems))


def load_pipeline(
    base: str,
    controlnet: ControlNetModel | str | Path,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    unet: UNet2DConditionModel | None = None,
) -> StableDiffusionXLControlNetPipeline:
    """Build the pipeline from the ``base`` SDXL folder/hub id and a ControlNet (model or folder).

    Components loaded here get ``dtype``; models passed in (``controlnet``, ``unet``) are used as they
    are and only moved to ``device``, never cast, because casting would silently change the weights
    the trainer is still optimising.
    """
    if not isinstance(controlnet, ControlNetModel):
        controlnet = ControlNetModel.from_pretrained(str(controlnet), dtype=dtype)
    components: dict[str, object] = {"controlnet": controlnet}
    if unet is not None:
        components["unet"] = unet
    pipe = StableDiffusionXLControlNetPipeline.from_pretrained(str(base), dtype=dtype, **components)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def swap_controlnet(
    pipe: StableDiffusionXLControlNetPipeline, controlnet: ControlNetModel | str | Path
) -> StableDiffusionXLControlNetPipeline:
    """Put another ControlNet into a loaded pipeline, so comparing checkpoints loads the base once.

    A folder is loaded in the dtype of the pipeline's UNet and moved to its device.
    """
    if not isinstance(controlnet, ControlNetModel):
        controlnet = ControlNetModel.from_pretrained(str(controlnet), dtype=pipe.unet.dtype)
        controlnet.to(pipe.device)
    pipe.register_modules(controlnet=controlnet)
    return pipe


def output_size(condition: Image.Image, settings: GenerationSettings) -> tuple[int, int]:
    """(width, height) of the image generated for ``condition``."""
    if settings.resolution is not None:
        side = settings.resolution - settings.resolution % SIZE_MULTIPLE
        return side, side
    width, height = condition.size
    width, height = width - width % SIZE_MULTIPLE, height - height % SIZE_MULTIPLE
    if width == 0 or height == 0:
        raise ValueError(f"condition image of size {condition.size} is smaller than {SIZE_MULTIPLE} px")
    return width, height


def _batches(
    indices: Sequence[int], sizes: Sequence[tuple[int, int]], batch_size: int
) -> Iterator[list[int]]:
    """Consecutive runs of indices with the same output size, at most ``batch_size`` long.

    One pipeline call makes one size, so a size change starts a new batch.
    """
    batch: list[int] = []
    for index in indices:
        if batch and (len(batch) == batch_size or sizes[batch[0]] != sizes[index]):
            yield batch
            batch = []
        batch.append(index)
    if batch:
        yield batch


def _generate_batch(
    pipe: StableDiffusionXLControlNetPipeline,
    prompts: list[str],
    conditions: list[Image.Image],
    seeds: list[int],
    size: tuple[int, int],
    settings: GenerationSettings,
) -> list[Image.Image]:
    """One pipeline call; CPU generators make the noise identical on every device."""
    generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
    negative = [settings.negative_prompt] * len(prompts) if settings.negative_prompt else None
    width, height = size
    with torch.inference_mode():
        result = pipe(
            prompt=prompts,
            image=[condition.convert("RGB") for condition in conditions],
            negative_prompt=negative,
            height=height,
            width=width,
            num_inference_steps=settings.num_inference_steps,
            guidance_scale=settings.guidance_scale,
            controlnet_conditioning_scale=settings.controlnet_conditioning_scale,
            generator=generators,
            output_type="pil",
        )
    return list(result.images)


def generate(
    pipe: StableDiffusionXLControlNetPipeline,
    prompts: list[str],
    conditions: list[Image.Image],
    seeds: list[int],
    settings: GenerationSettings,
    batch_size: int = 4,
) -> list[Image.Image]:
    """One image per (prompt, condition, seed) triple, in order, ``batch_size`` per pipeline call."""
    if not len(prompts) == len(conditions) == len(seeds):
        raise ValueError(
            f"prompts, conditions and seeds must have one entry per image, got "
            f"{len(prompts)}, {len(conditions)} and {len(seeds)}"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    sizes = [output_size(condition, settings) for condition in conditions]
    images: list[Image.Image] = []
    for batch in _batches(range(len(prompts)), sizes, batch_size):
        images += _generate_batch(
            pipe,
            [prompts[i] for i in batch],
            [conditions[i] for i in batch],
            [seeds[i] for i in batch],
            sizes[batch[0]],
            settings,
        )
    return images
