"""Loss pieces of a training step, each a plain function of tensors so they can be tested alone."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def drop_prompts(
    embeds: torch.Tensor,
    pooled: torch.Tensor,
    empty: dict[str, torch.Tensor],
    prob: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replaces each sample's prompt by the empty prompt with probability `prob`, drawn anew every step."""
    drop = torch.rand(embeds.shape[0], generator=generator) < prob
    if not drop.any():
        return embeds, pooled
    mask = drop.to(embeds.device)
    embeds = torch.where(mask[:, None, None], empty["prompt_embeds"].to(embeds), embeds)
    pooled = torch.where(mask[:, None], empty["pooled_embeds"].to(pooled), pooled)
    return embeds, pooled


def sample_timesteps(
    batch_size: int, num_train_timesteps: int, sampling: str, generator: torch.Generator
) -> torch.Tensor:
    """Training timesteps: `uniform` over the schedule, or `cubic`, t = (1 - u^3) T, which puts half of
    them above 0.875 T (T2I-Adapter's schedule for learning structure from a condition)."""
    if sampling == "uniform":
        return torch.randint(0, num_train_timesteps, (batch_size,), generator=generator)
    if sampling == "cubic":
        u = torch.rand(batch_size, generator=generator)
        return ((1 - u**3) * num_train_timesteps).long().clamp(0, num_train_timesteps - 1)
    raise ValueError(f"unknown timestep sampling {sampling!r}")


def diffusion_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE in fp32, whatever precision the forward pass ran in."""
    return F.mse_loss(prediction.float(), target.float())
