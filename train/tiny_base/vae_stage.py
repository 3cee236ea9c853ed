"""Stage 1: train the base's VAE (diffusers `AutoencoderKL`) to reconstruct the corpus.

Loss: L1 + MSE of the reconstruction, an L1 on image gradients (keeps the circles' and keys' edges
sharp, which Canny-based adherence needs), a small KL term as in Stable Diffusion's VAE, and a latent
prior: the posterior mean's first three channels are pulled towards the RGB image average-pooled to
the latent grid.
SD's latents are image-like on their own after long training; asking for it directly gives the encoder
a signal from the first step and makes a from-scratch VAE usable after minutes on a CPU instead of
hours. It trains on random crops: a fully convolutional VAE learns the same from a crop at a fraction
of the cost.
A second, decoder-only phase then sharpens the edges: with the encoder (and so the latents) frozen,
the decoder and `post_quant_conv` train on the posterior mode (what a pipeline decodes) with a heavier
gradient term. Joint training leaves edges blurred over several pixels, so Canny (100/200) misses half
of them even on a perfect latent; a few minutes of this phase is the cheapest way past that ceiling.
Afterwards the latents are centred (an exact re-parameterisation, see `center_latents`) and their scale
measured, as SD/SDXL did: `scaling_factor` = 1 / std of the latents.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from skimage.metrics import structural_similarity
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VaeRecipe:
    steps: int = 1200
    batch_size: int = 16
    crop: int = 64
    lr: float = 2e-3
    kl_weight: float = 1e-6
    gradient_weight: float = 0.5
    latent_prior_weight: float = 1.0
    decoder_steps: int = 1500
    """Decoder-only refinement steps after the joint phase (0: none)."""
    decoder_lr: float = 1e-3
    decoder_gradient_weight: float = 2.0


def _to_unit(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float in [-1, 1], the range diffusers' VAEs take."""
    return torch.from_numpy(images).float().div(127.5).sub(1.0)


def _random_crops(images: np.ndarray, size: int, count: int, generator: torch.Generator) -> torch.Tensor:
    n, _, height, width = images.shape
    index = torch.randint(0, n, (count,), generator=generator)
    ys = torch.randint(0, height - size + 1, (count,), generator=generator)
    xs = torch.randint(0, width - size + 1, (count,), generator=generator)
    crops = [images[i, :, y : y + size, x : x + size] for i, y, x in zip(index, ys, xs, strict=True)]
    return _to_unit(np.stack(crops))


def _gradients(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return images[..., 1:, :] - images[..., :-1, :], images[..., :, 1:] - images[..., :, :-1]


def pixel_losses(output: torch.Tensor, batch: torch.Tensor) -> dict[str, torch.Tensor]:
    """L1, MSE and the L1 of image gradients (edge sharpness) of a reconstruction."""
    gy, gx = _gradients(output)
    ty, tx = _gradients(batch)
    return {
        "l1": F.l1_loss(output, batch),
        "mse": F.mse_loss(output, batch),
        "gradient": F.l1_loss(gy, ty) + F.l1_loss(gx, tx),
    }


def _downscale(vae: AutoencoderKL) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


def reconstruction_loss(
    vae: AutoencoderKL, batch: torch.Tensor, recipe: VaeRecipe
) -> dict[str, torch.Tensor]:
    """Named loss terms of one batch; `total` is what is back-propagated."""
    posterior = vae.encode(batch).latent_dist
    losses = pixel_losses(vae.decode(posterior.sample()).sample, batch) | {
        "kl": posterior.kl().mean() / batch[0].numel(),
        "latent_prior": F.mse_loss(posterior.mean[:, :3], F.avg_pool2d(batch, _downscale(vae))),
    }
    losses["total"] = (
        losses["l1"]
        + losses["mse"]
        + recipe.gradient_weight * losses["gradient"]
        + recipe.kl_weight * losses["kl"]
        + recipe.latent_prior_weight * losses["latent_prior"]
    )
    return losses


def decoder_loss(vae: AutoencoderKL, batch: torch.Tensor, recipe: VaeRecipe) -> dict[str, torch.Tensor]:
    """The refinement phase's loss: the encoder is frozen, the decoder sees the posterior mode."""
    with torch.no_grad():
        latents = vae.encode(batch).latent_dist.mode()
    losses = pixel_losses(vae.decode(latents).sample, batch)
    losses["total"] = losses["l1"] + losses["mse"] + recipe.decoder_gradient_weight * losses["gradient"]
    return losses


def _optimize(
    params: list[torch.nn.Parameter],
    loss_fn: Callable[[torch.Tensor], dict[str, torch.Tensor]],
    images: np.ndarray,
    recipe: VaeRecipe,
    phase: tuple[str, int, float],
    generator: torch.Generator,
) -> dict[str, float]:
    """AdamW with a cosine decay over random crops for one phase (name, steps, lr); the last losses."""
    name, steps, lr = phase
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))
    )
    last: dict[str, float] = {}
    for _ in tqdm(range(steps), desc=name, unit="step", mininterval=5):
        losses = loss_fn(_random_crops(images, recipe.crop, recipe.batch_size, generator))
        losses["total"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        last = {k: v.item() for k, v in losses.items()}
    logger.info("%s: %d steps; last losses %s", name, steps, last)
    return last


def train_vae(vae: AutoencoderKL, images: np.ndarray, recipe: VaeRecipe, seed: int) -> dict[str, float]:
    """Trains `vae` in place on random crops of `images` (uint8 NCHW), jointly and then the decoder
    alone; returns the last losses of each phase."""
    generator = torch.Generator().manual_seed(seed)
    vae.train()
    last = _optimize(
        list(vae.parameters()),
        lambda batch: reconstruction_loss(vae, batch, recipe),
        images,
        recipe,
        ("VAE", recipe.steps, recipe.lr),
        generator,
    )
    if recipe.decoder_steps:
        decoder = [*vae.decoder.parameters(), *vae.post_quant_conv.parameters()]
        refined = _optimize(
            decoder,
            lambda batch: decoder_loss(vae, batch, recipe),
            images,
            recipe,
            ("VAE decoder", recipe.decoder_steps, recipe.decoder_lr),
            generator,
        )
        last |= {f"decoder_{k}": v for k, v in refined.items()}
    vae.eval()
    return last


@torch.no_grad()
def reconstruct(vae: AutoencoderKL, images: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Encode (posterior mode) and decode, back to uint8: what a pipeline round trip gives."""
    out = []
    for start in range(0, len(images), batch_size):
        batch = _to_unit(images[start : start + batch_size])
        decoded = vae.decode(vae.encode(batch).latent_dist.mode()).sample
        out.append(decoded.add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8).numpy())
    return np.concatenate(out)


def reconstruction_scores(original: np.ndarray, reconstructed: np.ndarray) -> dict[str, float]:
    """Mean PSNR (dB, peak 255) and SSIM (colour, skimage) over images, uint8 NCHW."""
    psnr, ssim = [], []
    for a, b in zip(original, reconstructed, strict=True):
        mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
        psnr.append(10 * math.log10(255.0**2 / max(mse, 1e-10)))
        ssim.append(structural_similarity(a, b, channel_axis=0, data_range=255))
    return {"psnr": float(np.mean(psnr)), "ssim": float(np.mean(ssim))}


@torch.no_grad()
def center_latents(vae: AutoencoderKL, images: np.ndarray, batch_size: int = 16) -> list[float]:
    """Moves the mean latent to zero without changing a single reconstruction; returns the mean removed.

    The latent prior makes latents image-like, so their mean is the corpus's mean colour (far from 0).
    Diffusion starts from zero-mean noise: a UNet must then learn that offset at high noise levels, which
    a short run does not. Subtracting the mean from `quant_conv`'s mean bias and adding it back through
    `post_quant_conv` (b' += W·mean) is exact: the decoder sees the same input as before.
    """
    latents = [
        vae.encode(_to_unit(images[s : s + batch_size])).latent_dist.mean
        for s in range(0, len(images), batch_size)
    ]
    mean = torch.cat(latents).mean(dim=(0, 2, 3))
    channels = len(mean)
    vae.quant_conv.bias[:channels] -= mean
    vae.post_quant_conv.bias += vae.post_quant_conv.weight[:, :, 0, 0] @ mean
    return mean.tolist()


@torch.no_grad()
def latent_scaling_factor(vae: AutoencoderKL, images: np.ndarray, batch_size: int = 16) -> float:
    """1 / std of the posterior-mode latents over `images`: SD/SDXL's convention for unit-variance latents."""
    latents = [
        vae.encode(_to_unit(images[s : s + batch_size])).latent_dist.mode()
        for s in range(0, len(images), batch_size)
    ]
    return float(1.0 / torch.cat(latents).std())
