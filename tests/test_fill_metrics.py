"""Circle IoU of fill records, and adherence measured through plain diffusers on the shipped base."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data.fill import build_fill, fill_record
from inference.adherence import ZERO_INITIALISED, measure_adherence, no_control, random_control
from inference.fill_metrics import circle_iou, condition_disk, fill_colours

BASE = Path(__file__).parent.parent / "assets" / "tiny-sdxl-trained"


def test_a_records_own_image_fills_its_outline_and_another_does_not() -> None:
    image, condition, text = fill_record(3, 128, seed=0)
    other, other_condition, _ = fill_record(4, 128, seed=0)
    assert fill_colours(text) is not None
    assert circle_iou(image, condition, text) > 0.9
    assert circle_iou(other, condition, text) < 0.5
    disk = condition_disk(condition)
    assert 0 < disk.mean() < 1 and not (disk & condition_disk(other_condition)).all()


def test_the_circle_counts_in_any_colour_and_noise_does_not() -> None:
    image, condition, text = fill_record(3, 128, seed=0)
    recoloured = Image.fromarray(255 - np.asarray(image))  # other colours than the prompt's, same circle
    assert circle_iou(recoloured, condition, text) > 0.9
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8))
    assert circle_iou(noise, condition, text) < 0.3


def test_non_fill_prompts_get_no_circle_score() -> None:
    image, condition, _ = fill_record(0, 64, seed=0)
    assert fill_colours("a keyboard skin") is None
    assert circle_iou(image, condition, "a keyboard skin") is None


def test_adherence_through_plain_diffusers(tmp_path: Path) -> None:
    jsonl = build_fill(tmp_path / "val", n=1, resolution=128, seed=1)
    result = measure_adherence(BASE, no_control(BASE), jsonl, seeds=(0, 1), steps=2)
    assert len(result.images) == 2 and all(image.size == (128, 128) for image in result.images)
    assert 0 <= result.edge_f1_tolerant <= 1
    assert result.circle_iou is not None and 0 <= result.circle_iou <= 1


def test_random_control_has_a_trained_controlnets_scale_and_no_learned_relation() -> None:
    """The baseline a learning claim must beat: zero-initialised layers drawn at another net's scale."""
    like = no_control(BASE)
    for name, param in like.named_parameters():
        if name.startswith(ZERO_INITIALISED):
            param.data.normal_(0.0, 0.02, generator=torch.Generator().manual_seed(1))
    control = random_control(BASE, like=like, seed=0)
    trained, drawn = like.state_dict(), control.state_dict()
    for name in drawn:
        if name.startswith(ZERO_INITIALISED):
            assert not torch.equal(drawn[name], trained[name])
            if drawn[name].numel() > 100:  # a weight: enough values for its scale to be compared
                assert drawn[name].std().item() == pytest.approx(trained[name].std().item(), rel=0.2)
        elif not name.startswith("controlnet_cond_embedding."):  # the rest of the embedder starts random
            assert torch.equal(drawn[name], trained[name])  # copied from the UNet, as in training


def test_adherence_bench_prints_the_table_with_both_baselines(tmp_path: Path) -> None:
    jsonl = build_fill(tmp_path / "val", n=1, resolution=128, seed=1)
    no_control(BASE).save_pretrained(tmp_path / "controlnet")
    command = [sys.executable, "bench/bench_adherence.py", "--base", str(BASE), "--data", str(jsonl)]
    command += ["--controlnet", str(tmp_path / "controlnet"), "--seeds", "0", "--steps", "2"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line for line in result.stderr.splitlines() if line.startswith("| ") and "---" not in line]
    assert [row.split(" | ")[0] for row in rows[1:]] == [
        "| no control (step 0)",
        f"| random control at {tmp_path / 'controlnet'}'s scale",
        f"| {tmp_path / 'controlnet'}",
    ]
    assert all(row.endswith("| n/a (one record) |") for row in rows[1:]), "one record: nothing to exchange"
