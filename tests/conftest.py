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
