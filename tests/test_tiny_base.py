"""The trained tiny SDXL base: the shipped folder loads with plain diffusers and reconstructs/denoises
as its pretraining report says; the recipe still builds (a few steps of every stage)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionXLPipeline

from train.tiny_base.build import REPORT_FILE, SAMPLES_FILE

ROOT = Path(__file__).parent.parent
SHIPPED = ROOT / "assets" / "tiny-sdxl-trained"
MAX_SHIPPED_BYTES = 20 * 2**20


def test_shipped_base_is_small_and_loads_with_plain_diffusers() -> None:
    weights = list(SHIPPED.rglob("*.safetensors"))
    assert {p.parent.name for p in weights} == {"unet", "vae", "text_encoder", "text_encoder_2"}
    assert sum(p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file()) <= MAX_SHIPPED_BYTES
    pipe = StableDiffusionXLPipeline.from_pretrained(SHIPPED)
    assert pipe.vae_scale_factor == 8 and pipe.unet.config.addition_embed_type == "text_time"
    image = pipe(
        "red circle with navy background",
        num_inference_steps=8,
        height=128,
        width=128,
        generator=torch.Generator().manual_seed(0),
    ).images[0]
    assert image.size == (128, 128)


def test_shipped_base_report_shows_it_was_trained() -> None:
    """Thresholds far above what random weights give (random VAE: PSNR ~11 dB, SSIM ~0.1 on skins)."""
    report = json.loads((SHIPPED / REPORT_FILE).read_text())
    reconstruction = report["vae_heldout_reconstruction"]
    assert reconstruction["fill"]["psnr"] >= 28 and reconstruction["fill"]["ssim"] >= 0.9
    assert reconstruction["skins"]["psnr"] >= 18
    assert report["samples"]["fill_colour_coverage"] >= 0.6
    assert (SHIPPED / SAMPLES_FILE).is_file()


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
