"""A ControlNet trained for a few steps on the shipped trained base follows held-out conditions.

Held-out fill outlines (seed 1, never trained on) are generated through plain diffusers'
`StableDiffusionXLControlNetPipeline` with the base's scheduler, and the images' Canny edges are
compared with the outlines (F1 within 2 px). Why the margin cannot be met by chance: without control
(`ControlNetModel.from_unet`, zero output convolutions) the base draws its circle wherever its noise
puts it, and a circle's edge lands within 2 px of a given outline only by coincidence; the same
images, seeds and prompts are scored for both, so only the ControlNet differs. A ControlNet whose
output convolutions are random (not trained) is measured too: it perturbs the UNet but cannot aim.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from diffusers import ControlNetModel
from training_helpers import reset_accelerator, run_training

from data.fill import build_fill
from inference.adherence import measure_adherence, no_control
from train.tiny_sdxl import _perturb_zero_convs

ROOT = Path(__file__).parent.parent
BASE = ROOT / "assets" / "tiny-sdxl-trained"
STEPS = 150
MARGIN = 0.2
"""Absolute gain in edge F1 (2 px) over the no-control baseline on the same images and seeds."""


@pytest.fixture(autouse=True)
def fresh_accelerator_state() -> Iterator[None]:
    yield
    reset_accelerator()


@pytest.mark.slow
def test_a_few_hundred_steps_follow_held_out_outlines(tmp_path: Path) -> None:
    train = build_fill(tmp_path / "fill", n=256, resolution=128, seed=0)
    held_out = build_fill(tmp_path / "val", n=4, resolution=128, seed=1)
    run = tmp_path / "run"
    run_training(
        [
            f"model.base={BASE}",
            f"data.train_jsonl={train}",
            f"train.output_dir={run}",
            f"train.max_steps={STEPS}",
            "validation.every_n_steps=0",
            "log.progress_bar=false",
            "log.tensorboard=false",
        ],
        config="configs/fill_demo.yaml",
    )
    seeds = (0, 1)
    trained = measure_adherence(BASE, run / "controlnet", held_out, seeds=seeds, steps=10)
    baseline = measure_adherence(BASE, no_control(BASE), held_out, seeds=seeds, steps=10)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        aimless = no_control(BASE)
        _perturb_zero_convs(aimless, 0.02)
    untrained = measure_adherence(BASE, aimless, held_out, seeds=seeds, steps=10)

    assert trained.edge_f1_tolerant >= baseline.edge_f1_tolerant + MARGIN, (trained, baseline)
    assert trained.edge_f1_tolerant >= untrained.edge_f1_tolerant + MARGIN, (trained, untrained)
    assert trained.circle_iou is not None and baseline.circle_iou is not None
    assert trained.circle_iou > baseline.circle_iou
    assert isinstance(ControlNetModel.from_pretrained(run / "controlnet"), ControlNetModel)
