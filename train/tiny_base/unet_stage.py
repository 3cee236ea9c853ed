"""Stage 2: train the base's UNet with the ordinary diffusion loss on the cached latents.

The latents and prompt embeddings come from the trainer's own encoded cache (`train.encoded_cache`), made
with the stage-1 VAE and the frozen random CLIP encoders; the target and the loss are the trainer's
(`train.losses`), with the same empty-prompt dropout, so classifier-free guidance works on the result.
The weights kept are an EMA of the trained ones (diffusers' `EMAModel`), which samples far better after
a short run than the last iterate.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers import DDPMScheduler, UNet2DConditionModel
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from common.diffusion import diffusion_target
from train.encoded_cache import EncodedCache
from train.losses import diffusion_loss, drop_prompts

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class UnetRecipe:
    steps: int = 2800
    batch_size: int = 16
    lr: float = 1e-3
    warmup_steps: int = 100
    ema_decay: float = 0.999
    empty_prompt_prob: float = 0.1


def cached_tensors(cache: EncodedCache) -> dict[str, torch.Tensor]:
    """Every record of the cache stacked in memory (a few MB for the base's corpus)."""
    rows = [cache[i] for i in range(len(cache))]
    return {key: torch.stack([row[key] for row in rows]).float() for key in rows[0]}


def _warmup_cosine(recipe: UnetRecipe) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < recipe.warmup_steps:
            return (step + 1) / recipe.warmup_steps
        progress = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def _step_loss(
    unet: UNet2DConditionModel,
    scheduler: DDPMScheduler,
    data: dict[str, torch.Tensor],
    empty: dict[str, torch.Tensor],
    recipe: UnetRecipe,
    generator: torch.Generator,
) -> torch.Tensor:
    index = torch.randint(0, len(data["latents"]), (recipe.batch_size,), generator=generator)
    latents = data["latents"][index]
    noise = torch.randn(latents.shape, generator=generator)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(index),), generator=generator)
    embeds, pooled = drop_prompts(
        data["prompt_embeds"][index], data["pooled_embeds"][index], empty, recipe.empty_prompt_prob, generator
    )
    prediction = unet(
        scheduler.add_noise(latents, noise, timesteps),
        timesteps,
        encoder_hidden_states=embeds,
        added_cond_kwargs={"text_embeds": pooled, "time_ids": data["time_ids"][index]},
    ).sample
    return diffusion_loss(prediction, diffusion_target(scheduler, latents, noise, timesteps))


def train_unet(
    unet: UNet2DConditionModel, cache: EncodedCache, scheduler: DDPMScheduler, recipe: UnetRecipe, seed: int
) -> dict[str, float]:
    """Trains `unet` in place and leaves the EMA weights in it; returns loss statistics."""
    data = cached_tensors(cache)
    empty = {k: v.float() for k, v in cache.empty_prompt.items()}
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=recipe.lr, weight_decay=1e-2)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(recipe))
    ema = EMAModel(unet.parameters(), decay=recipe.ema_decay, use_ema_warmup=True, power=2 / 3)
    unet.train()
    recent: list[float] = []
    bar = tqdm(range(recipe.steps), desc="UNet", unit="step", mininterval=5)
    for _ in bar:
        loss = _step_loss(unet, scheduler, data, empty, recipe, generator)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        ema.step(unet.parameters())
        recent = [*recent[-99:], loss.item()]
        bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}", refresh=False)
    ema.copy_to(unet.parameters())
    unet.eval()
    stats = {"loss_last_100_steps": sum(recent) / max(1, len(recent))}
    logger.info("UNet trained %d steps; %s", recipe.steps, stats)
    return stats
