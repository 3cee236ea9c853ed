"""Shared pytest fixtures."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

REQUIRE_PADDLE = "SKINFORGE_REQUIRE_PADDLE"


def pytest_runtest_setup(item: pytest.Item) -> None:
    """``paddle`` tests skip where PaddleOCR is not installed (the main venv, CI's ``make test``), except
    under ``make test-paddle`` (REQUIRE_PADDLE=1), where a missing paddle must fail, not pass as skipped."""
    if (
        item.get_closest_marker("paddle") is not None
        and os.environ.get(REQUIRE_PADDLE) != "1"
        and importlib.util.find_spec("paddleocr") is None
    ):
        pytest.skip(
            "the paddle OCR backend is not installed here; it runs in .venv-paddle (make test-paddle)"
        )


@pytest.fixture(scope="session", autouse=True)
def encoded_cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Latent/prompt caches of the whole session (and its `accelerate launch` subprocesses) go to a temp
    folder, never to ~/.cache; runs on the same model and data share them, as users' runs do."""
    root = tmp_path_factory.mktemp("encoded_cache")
    os.environ["SKINFORGE_CACHE"] = str(root)
    return root


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


@pytest.fixture(scope="session")
def bucket_jsonl(fill_jsonl: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """18 fill records in three shapes: 120x72 (landscape), 72x120 (portrait) and 64x64, six of each.
    With data.resolution=64, bucket_step=16 they fall into the buckets 48x80, 80x48 and 64x64."""
    from PIL import Image

    from common.atomic import atomic_save_image
    from data.records import Record, read_records, resolve_path, write_records

    root = tmp_path_factory.mktemp("datasets") / "buckets"
    shapes = [(120, 72), (72, 120), (64, 64)]
    records = []
    for i, record in enumerate((read_records(fill_jsonl) * 2)[:18]):
        size = shapes[i % 3]
        for key in ("image", "conditioning_image"):
            with Image.open(resolve_path(fill_jsonl.parent, getattr(record, key))) as image:
                atomic_save_image(image.resize(size), root / key / f"{i:03d}.png")
        records.append(Record(record.text, f"image/{i:03d}.png", f"conditioning_image/{i:03d}.png"))
    write_records(root / "train.jsonl", records)
    return root / "train.jsonl"


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


@pytest.fixture(scope="session")
def text_jsonl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight 128x128 keyboard-like records: six with label boxes and gt_text, the last two without."""
    from common.atomic import atomic_save_image
    from data.records import Record, write_records
    from recognizer.synthetic import KEY_LABELS, render_keyboard

    root = tmp_path_factory.mktemp("datasets") / "text"
    records = []
    for i in range(8):
        key = render_keyboard([KEY_LABELS[i]], size=(128, 128), columns=1, font_size=18)
        image, condition = f"images/{i:03d}.png", f"conditioning_images/{i:03d}.png"
        atomic_save_image(key.image, root / image)
        atomic_save_image(key.image.convert("L").convert("RGB"), root / condition)
        labelled = i < 6
        records.append(
            Record(
                text=f"a keyboard skin with the {KEY_LABELS[i][0]} key",
                image=image,
                conditioning_image=condition,
                box=key.boxes.round(1).tolist() if labelled else None,
                gt_text=key.texts if labelled else None,
            )
        )
    write_records(root / "train.jsonl", records)
    return root / "train.jsonl"
