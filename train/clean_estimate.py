"""The clean latent x̂0 implied by a noise prediction, in one step or by unrolling the sampler.

Both follow the training scheduler's own parameterisation (`prediction_type` and `alphas_cumprod`),
per sample, so a batch can mix timesteps.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import DDPMScheduler

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(noisy latents, timesteps) -> the model's prediction, in the scheduler's parameterisation."""


def _alpha_bar(scheduler: DDPMScheduler, timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    alphas = scheduler.alphas_cumprod.to(device=like.device, dtype=torch.float32)[timesteps.long()]
    return alphas.view(-1, *([1] * (like.ndim - 1)))


def predicted_clean_latents(
    scheduler: DDPMScheduler, noisy: torch.Tensor, prediction: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """x̂0 from x_t and the model output (DDPM's `pred_original_sample`), in fp32."""
    alpha_bar = _alpha_bar(scheduler, timesteps, noisy)
    noisy, prediction = noisy.float(), prediction.float()
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return (noisy - (1 - alpha_bar).sqrt() * prediction) / alpha_bar.sqrt()
    if kind == "v_prediction":
        return alpha_bar.sqrt() * noisy - (1 - alpha_bar).sqrt() * prediction
    if kind == "sample":
        return prediction
    raise ValueError(f"unsupported prediction_type {kind!r} in the base model's scheduler config")


def predicted_noise(
    scheduler: DDPMScheduler, noisy: torch.Tensor, clean: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """ε implied by x_t and x̂0 (the DDIM direction), in fp32."""
    alpha_bar = _alpha_bar(scheduler, timesteps, noisy)
    return (noisy.float() - alpha_bar.sqrt() * clean) / (1 - alpha_bar).sqrt().clamp_min(1e-8)


def unrolled_clean_latents(
    scheduler: DDPMScheduler,
    denoise: Denoiser,
    noisy: torch.Tensor,
    prediction: torch.Tensor,
    timesteps: torch.Tensor,
    steps: int,
) -> torch.Tensor:
    """x̂0 after `steps` deterministic DDIM steps from x_t down to t=0, each sample on its own schedule.

    `prediction` is the model output at (x_t, t) that the training step already computed. The first
    `steps - 1` steps run without gradients; the last prediction keeps them, so the loss reaches the
    ControlNet through one forward pass, as in the hand-written full-loop approach this reproduces.
    """
    if steps < 1:
        raise ValueError(f"unroll needs at least one step, got {steps}")
    fractions = torch.linspace(1.0, 0.0, steps + 1, device=timesteps.device)[1:-1]
    schedule = [(timesteps.float() * f).long() for f in fractions]  # decreasing, per sample
    x, t, current = noisy.float(), timesteps, prediction
    for k, next_t in enumerate(schedule):
        with torch.no_grad():
            clean = predicted_clean_latents(scheduler, x, current, t)
            eps = predicted_noise(scheduler, x, clean, t)
            alpha_next = _alpha_bar(scheduler, next_t, x)
            x, t = alpha_next.sqrt() * clean + (1 - alpha_next).sqrt() * eps, next_t
        if k < len(schedule) - 1:
            with torch.no_grad():
                current = denoise(x.to(noisy.dtype), t)
        else:
            current = denoise(x.to(noisy.dtype), t)  # the one model call that keeps gradients
    return predicted_clean_latents(scheduler, x, current, t)
