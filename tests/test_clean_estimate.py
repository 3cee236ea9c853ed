"""x̂0 from a prediction, in one step and unrolled, against the scheduler's own noising."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from data.records import Record
from train.clean_estimate import predicted_clean_latents, unrolled_clean_latents
from train.controlnet_dataset import boxes_on_canvas
from train.sample_geometry import CropGeometry


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(3, 4, 8, 8, generator=generator)
    noise = torch.randn(3, 4, 8, 8, generator=generator)
    return latents, noise, torch.tensor([0, 350, 999])


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_a_perfect_prediction_gives_back_the_clean_latents(kind: str, batch) -> None:
    latents, noise, timesteps = batch
    scheduler = DDPMScheduler(prediction_type=kind)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    perfect = {
        "epsilon": noise,
        "v_prediction": scheduler.get_velocity(latents, noise, timesteps),
        "sample": latents,
    }[kind]
    clean = predicted_clean_latents(scheduler, noisy, perfect, timesteps)
    assert torch.allclose(clean, latents, atol=2e-3), (clean - latents).abs().max()


def test_unroll_with_the_true_noise_stays_on_the_clean_latents(batch) -> None:
    """A denoiser that always predicts the true ε walks DDIM straight to x0; one call keeps gradients."""
    latents, noise, timesteps = batch
    scheduler = DDPMScheduler()
    noisy = scheduler.add_noise(latents, noise, timesteps)
    calls: list[bool] = []

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls.append(torch.is_grad_enabled())
        alpha = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
        return (x - alpha.sqrt() * latents) / (1 - alpha).sqrt()

    clean = unrolled_clean_latents(scheduler, denoise, noisy, noise, timesteps, steps=5)
    assert torch.allclose(clean, latents, atol=1e-3)
    assert calls == [False, False, False, True]


def test_unroll_of_one_step_is_the_one_step_estimate(batch) -> None:
    latents, noise, timesteps = batch
    scheduler = DDPMScheduler()
    noisy = scheduler.add_noise(latents, noise, timesteps)
    prediction = torch.randn_like(noise)
    one = predicted_clean_latents(scheduler, noisy, prediction, timesteps)
    unrolled = unrolled_clean_latents(scheduler, lambda x, t: x / 0, noisy, prediction, timesteps, steps=1)
    assert torch.equal(one, unrolled)


def test_boxes_follow_the_resize_and_crop_and_cut_ones_are_dropped() -> None:
    # 200x100 image -> shorter side 50 -> 100x50 -> centre crop 50x50 from left=25
    geometry = CropGeometry.centre_crop(200, 100, 50)
    inside = [[60, 20], [120, 20], [120, 40], [60, 40]]
    cut = [[0, 0], [40, 0], [40, 20], [0, 20]]
    record = Record("t", "i.png", "c.png", box=[inside, cut], gt_text=["keep", "cut"])
    boxes, texts = boxes_on_canvas(record, geometry)
    assert texts == ["keep"]
    np.testing.assert_allclose(boxes[0], [[5, 10], [35, 10], [35, 20], [5, 20]])
