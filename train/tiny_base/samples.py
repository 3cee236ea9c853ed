"""Does the trained base draw what it was trained on? Samples per prompt, and a score for fill prompts.

The fill score is the share of a sample's pixels close (RGB distance < `COLOUR_TOLERANCE`) to one of the
two colours its prompt names: a flat "red circle with navy background" scores near 1, noise or wrong
colours near 0. Keyboard samples are judged by eye from the saved grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from diffusers import StableDiffusionXLPipeline
from PIL import Image

from inference.fill_metrics import clean_circle, fill_colours
from inference.grid import make_grid

COLOUR_TOLERANCE = 60.0


def colour_coverage(image: Image.Image, colours: Sequence[tuple[int, int, int]]) -> float:
    """Share of pixels within `COLOUR_TOLERANCE` of any of `colours`."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float64).reshape(-1, 1, 3)
    distance = np.linalg.norm(pixels - np.asarray(colours, dtype=np.float64)[None], axis=-1)
    return float((distance.min(axis=1) < COLOUR_TOLERANCE).mean())


@torch.no_grad()
def sample_grid(
    pipe: StableDiffusionXLPipeline, prompts: Sequence[str], seeds: Sequence[int], steps: int = 20
) -> tuple[Image.Image, dict[str, float]]:
    """One row per prompt, one column per seed; the mean fill colour coverage over fill prompts, and the
    share of their samples that are one clean circle on a flat background (`clean_circle`)."""
    rows, coverage, clean = [], [], []
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    for prompt in prompts:
        images = pipe(
            [prompt] * len(seeds),
            num_inference_steps=steps,
            guidance_scale=5.0,
            height=size,
            width=size,
            generator=[torch.Generator().manual_seed(s) for s in seeds],
        ).images
        rows.append(images)
        if colours := fill_colours(prompt):
            coverage += [colour_coverage(image, colours) for image in images]
            clean += [clean_circle(image) for image in images]
    grid = make_grid(rows, [f"seed {s}" for s in seeds])
    return grid, {
        "fill_colour_coverage": float(np.mean(coverage)) if coverage else float("nan"),
        "fill_clean_circle_fraction": float(np.mean(clean)) if clean else float("nan"),
    }
