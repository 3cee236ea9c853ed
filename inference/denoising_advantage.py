"""Does a ControlNet read its condition? The denoising error with each record's own condition against
the error with another record's, on held-out records, with the same noise and timesteps for both.

This is the earliest measurable sign of learning: a ControlNet starts to lower its own-condition error
hundreds of steps before its samples follow the condition (the ControlNet paper's "sudden convergence"
comes later). It cannot be faked: a ControlNet that ignores its condition, whatever its weights (zero
output convolutions at step 0, random ones, a UNet-only improvement), has the same expected error with
any record's condition, because the records' conditions are exchangeable; only reading the condition
lowers the error with the right one. The error is the training loss (MSE against the base's target:
epsilon or v) on the base's own VAE latents and prompt embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import ControlNetModel, DDPMScheduler
from PIL import Image

from common.diffusion import diffusion_target, to_tensor
from data.records import Record, read_records, resolve_path
from inference.pipeline import ControlNetPipeline, load_pipeline

__all__ = ["DenoisingAdvantage", "HeldOut", "denoising_advantage", "measure_denoising_advantage"]

TIMESTEPS = (500, 750, 900)
"""Where the condition matters (the layout is decided at high noise) and the error is not all noise."""


@dataclass(frozen=True)
class DenoisingAdvantage:
    timestep: int
    own: float
    """Mean error with each record's own condition."""
    other: float
    """Mean error with the next record's condition (same noise, prompt and image)."""
    wins: int
    """Records whose own-condition error is the lower one."""
    records: int

    @property
    def relative(self) -> float:
        """(other - own) / other: 0 for a ControlNet that ignores its condition."""
        return (self.other - self.own) / self.other


@dataclass(frozen=True)
class HeldOut:
    """Held-out records as pixels (RGB, [0, 1], one size for all): target, condition and prompt."""

    images: torch.Tensor
    conditions: torch.Tensor
    prompts: list[str]

    @classmethod
    def read(cls, jsonl: Path, limit: int | None = None, size: int | None = None) -> HeldOut:
        """The first `limit` records of `jsonl`; see `from_records`."""
        return cls.from_records(read_records(jsonl)[:limit], jsonl.parent, size)

    @classmethod
    def from_records(cls, records: Sequence[Record], root: Path, size: int | None = None) -> HeldOut:
        """`records` (paths relative to `root`), resized to `size`² when given (else all must share one
        size)."""
        if len(records) < 2:
            raise ValueError(f"{root}: the denoising advantage needs at least two records to exchange")
        return cls(
            torch.stack([_pixels(resolve_path(root, r.image), size) for r in records]),
            torch.stack([_pixels(resolve_path(root, r.conditioning_image), size) for r in records]),
            [r.text for r in records],
        )


def _pixels(path: Path, size: int | None) -> torch.Tensor:
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    if size is not None and rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BICUBIC)
    return to_tensor(rgb)


@torch.no_grad()
def denoising_advantage(
    pipe: ControlNetPipeline, held_out: HeldOut, timesteps: Sequence[int] = TIMESTEPS, seed: int = 0
) -> list[DenoisingAdvantage]:
    """One `DenoisingAdvantage` per timestep over the held-out records, with `pipe`'s ControlNet."""
    denoiser, unet = pipe.denoiser, pipe.unet
    device, dtype = unet.device, unet.dtype
    vae = denoiser.vae
    pixels = (held_out.images * 2 - 1).to(vae.device, vae.dtype)
    latents = (vae.encode(pixels).latent_dist.mode() * vae.config.scaling_factor).to(device, torch.float32)
    embeds = pipe.encoder(held_out.prompts, negative_prompt="", guidance=False)
    height, width = held_out.images.shape[-2:]
    count = len(held_out.prompts)
    kwargs = {
        "encoder_hidden_states": embeds["prompt_embeds"].to(device, dtype),
        "added_cond_kwargs": {
            "text_embeds": embeds["pooled_prompt_embeds"].to(device, dtype),
            "time_ids": torch.tensor(
                [[height, width, 0, 0, height, width]] * count, device=device, dtype=dtype
            ),
        },
    }
    conditions = held_out.conditions.to(device, dtype)
    scheduler = DDPMScheduler.from_config(denoiser.scheduler.config)

    def errors(
        noisy: torch.Tensor, t: torch.Tensor, target: torch.Tensor, cond: torch.Tensor
    ) -> torch.Tensor:
        down, mid = pipe.controlnet(noisy, t, controlnet_cond=cond, return_dict=False, **kwargs)
        residuals = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
        prediction = unet(noisy, t, return_dict=False, **kwargs, **residuals)[0]
        return (prediction.float() - target).square().mean(dim=(1, 2, 3))

    results = []
    for timestep in timesteps:
        generator = torch.Generator().manual_seed(seed + timestep)
        noise = torch.randn(latents.shape, generator=generator).to(device)
        t = torch.full((count,), timestep, device=device)
        noisy = scheduler.add_noise(latents, noise, t)
        target = diffusion_target(scheduler, latents, noise, t)
        own = errors(noisy.to(dtype), t, target, conditions)
        other = errors(noisy.to(dtype), t, target, conditions.roll(1, 0))
        mean_own, mean_other = own.mean().item(), other.mean().item()
        results.append(DenoisingAdvantage(timestep, mean_own, mean_other, int((own < other).sum()), count))
    return results


def measure_denoising_advantage(
    base: str | Path, controlnet: ControlNetModel, jsonl: Path, timesteps: Sequence[int] = TIMESTEPS
) -> list[DenoisingAdvantage]:
    """`denoising_advantage` of `controlnet` on the base's own pipeline (CPU, fp32) for `jsonl`."""
    return denoising_advantage(load_pipeline(str(base), controlnet), HeldOut.read(jsonl), timesteps)
