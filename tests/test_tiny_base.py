"""The trained tiny SDXL base: the shipped folder loads with plain diffusers, and its VAE and UNet do
measurably what a random one of the same architecture cannot; the recipe still builds (a few steps)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

from common.diffusion import diffusion_target
from data.fill import fill_record
from train.prompt_encoding import encode_prompts
from train.sdxl_models import PromptEncoders
from train.tiny_base.build import REPORT_FILE, SAMPLES_FILE
from train.tiny_base.vae_stage import reconstruct, reconstruction_scores
from train.tiny_sdxl import tiny_pipeline

ROOT = Path(__file__).parent.parent
SHIPPED = ROOT / "assets" / "tiny-sdxl-trained"
MAX_SHIPPED_BYTES = 20 * 2**20


@pytest.fixture(scope="module")
def shipped() -> StableDiffusionXLPipeline:
    return StableDiffusionXLPipeline.from_pretrained(SHIPPED)


@pytest.fixture(scope="module")
def random_twin() -> StableDiffusionXLPipeline:
    """The same architecture with the recipe's initial (random) weights."""
    return tiny_pipeline(seed=0, vae_size="trained")


def _held_out_fill(n: int = 8) -> tuple[np.ndarray, list[str]]:
    """Fill records of a seed the base never saw (its corpus uses seeds 0 and 1)."""
    records = [fill_record(i, 128, seed=7) for i in range(n)]
    images = np.stack([np.asarray(image).transpose(2, 0, 1) for image, _, _ in records])
    return images, [text for _, _, text in records]


def test_shipped_base_is_small_and_loads_with_plain_diffusers(shipped: StableDiffusionXLPipeline) -> None:
    weights = list(SHIPPED.rglob("*.safetensors"))
    assert {p.parent.name for p in weights} == {"unet", "vae", "text_encoder", "text_encoder_2"}
    assert sum(p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file()) <= MAX_SHIPPED_BYTES
    assert shipped.vae_scale_factor == 8 and shipped.unet.config.addition_embed_type == "text_time"
    image = shipped(
        "red circle with navy background",
        num_inference_steps=4,
        height=128,
        width=128,
        generator=torch.Generator().manual_seed(0),
    ).images[0]
    assert image.size == (128, 128)
    report = json.loads((SHIPPED / REPORT_FILE).read_text())
    assert report["vae_scaling_factor"] == pytest.approx(shipped.vae.config.scaling_factor)
    assert (SHIPPED / SAMPLES_FILE).is_file()


def test_shipped_vae_reconstructs_held_out_images(
    shipped: StableDiffusionXLPipeline, random_twin: StableDiffusionXLPipeline
) -> None:
    images, _ = _held_out_fill()
    trained = reconstruction_scores(images, reconstruct(shipped.vae, images))
    untrained = reconstruction_scores(images, reconstruct(random_twin.vae, images))
    assert trained["psnr"] >= 21 and trained["ssim"] >= 0.7, trained
    assert untrained["psnr"] < 12, untrained


@torch.no_grad()
def _denoising_loss(
    pipe: StableDiffusionXLPipeline,
    latents_vae: AutoencoderKL,
    scheduler: DDPMScheduler,
    images: np.ndarray,
    texts: list[str],
) -> float:
    """Mean diffusion MSE (the target of `scheduler`'s parameterisation: the shipped base's) over fixed
    timesteps and noise, on latents of `latents_vae` (the shipped one)."""
    pixels = torch.from_numpy(images).float() / 127.5 - 1
    latents = latents_vae.encode(pixels).latent_dist.mode() * latents_vae.config.scaling_factor
    encoders = PromptEncoders((pipe.tokenizer, pipe.tokenizer_2), (pipe.text_encoder, pipe.text_encoder_2))
    embeds, pooled = encode_prompts(texts, encoders)
    time_ids = torch.tensor([[128, 128, 0, 0, 128, 128]], dtype=torch.float32).repeat(len(texts), 1)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for t in (100, 300, 500, 700, 900):
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = torch.full((len(texts),), t)
        unet: UNet2DConditionModel = pipe.unet
        prediction = unet(
            scheduler.add_noise(latents, noise, timesteps),
            timesteps,
            encoder_hidden_states=embeds,
            added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids},
        ).sample
        target = diffusion_target(scheduler, latents, noise, timesteps)
        losses.append(torch.nn.functional.mse_loss(prediction, target).item())
    return float(np.mean(losses))


def test_shipped_unet_denoises_held_out_latents(
    shipped: StableDiffusionXLPipeline, random_twin: StableDiffusionXLPipeline
) -> None:
    images, texts = _held_out_fill()
    scheduler = DDPMScheduler.from_config(shipped.scheduler.config)
    trained = _denoising_loss(shipped, shipped.vae, scheduler, images, texts)
    untrained = _denoising_loss(random_twin, shipped.vae, scheduler, images, texts)
    assert trained < 0.3 and untrained > 3 * trained, (trained, untrained)


@pytest.mark.slow
def test_recipe_rebuilds_a_loadable_base(tmp_path: Path) -> None:
    """`python -m train.tiny_base OUT --quick`: every stage for a few steps, then plain diffusers loads it."""
    out = tmp_path / "base"
    result = subprocess.run(
        [sys.executable, "-m", "train.tiny_base", str(out), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / REPORT_FILE).read_text())
    assert report["recipe"]["vae"]["steps"] == 3 and report["recipe"]["unet"]["steps"] == 3
    assert set(report["vae_heldout_reconstruction"]) == {"fill", "skins"}
    assert 0 < report["vae_scaling_factor"] < 100
    pipe = StableDiffusionXLPipeline.from_pretrained(out)
    assert pipe.vae.config.scaling_factor == pytest.approx(report["vae_scaling_factor"])
    assert not list(tmp_path.glob(".base.tmp-*")), "the temp build folder was left behind"


CIRCLES = ROOT / "assets" / "tiny-sdxl-circles"


def test_shipped_circles_base_loads_with_plain_diffusers_and_draws_flat_shapes() -> None:
    """The demo's base: a 4x VAE (32² latents at 128²) that diffusers' pipeline reads from the config."""
    from inference.fill_metrics import two_colours

    assert sum(p.stat().st_size for p in CIRCLES.rglob("*") if p.is_file()) <= MAX_SHIPPED_BYTES
    pipe = StableDiffusionXLPipeline.from_pretrained(CIRCLES)
    assert pipe.vae_scale_factor == 4 and pipe.unet.config.sample_size == 32
    images = pipe(
        ["red circle with navy background"] * 2,
        num_inference_steps=20,
        guidance_scale=1.0,
        generator=[torch.Generator().manual_seed(s) for s in (0, 1)],
    ).images
    assert all(image.size == (128, 128) for image in images)
    # Two flat colours (a shape on a background), not noise or texture: what a ControlNet then places.
    spreads = [two_colours(image)[1] for image in images]
    assert max(spreads) < 25.0, spreads
    report = json.loads((CIRCLES / REPORT_FILE).read_text())
    assert report["recipe"]["vae_size"] == "trained4x"
    assert 0.0 <= report["samples"]["fill_clean_circle_fraction"] <= 1.0
