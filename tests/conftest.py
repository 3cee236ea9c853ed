"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_sdxl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight SDXL pipeline folder (diffusers layout), built once per test session."""
    from train.tiny_sdxl import build_tiny_sdxl

    return build_tiny_sdxl(tmp_path_factory.mktemp("tiny_models") / "sdxl", seed=0)


@pytest.fixture(scope="session")
def tiny_controlnet_dir(tiny_sdxl_dir: Path) -> Path:
    """A ControlNet made from the tiny SDXL UNet, with non-zero output convs, built once per session."""
    from train.tiny_sdxl import build_tiny_controlnet

    return build_tiny_controlnet(tiny_sdxl_dir, tiny_sdxl_dir.parent / "controlnet", seed=0)


@pytest.fixture(scope="session")
def fill_jsonl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 16-record procedural fill dataset at 64x64, built once per session."""
    from data.fill import build_fill

    return build_fill(tmp_path_factory.mktemp("datasets") / "fill", n=16, resolution=64, seed=0)


@pytest.fixture
def tiny_overrides(tiny_sdxl_dir: Path, fill_jsonl: Path, tmp_path: Path) -> list[str]:
    """Overrides pointing configs/fill_tiny.yaml at the tiny model, the fill data and a fresh run folder."""
    return [
        f"model.base={tiny_sdxl_dir}",
        f"data.train_jsonl={fill_jsonl}",
        "data.resolution=64",
        f"train.output_dir={tmp_path / 'run'}",
        "train.batch_size=2",
        "train.lr_warmup_steps=0",
        "train.num_threads=2",
        "log.progress_bar=false",
        "log.tensorboard=false",
    ]
