"""The base's training corpus, made by the project's own builders: fill circles and keyboard skins.

Both sets are written as ordinary fill50k-format datasets (so the encoded cache and the readers are the
trainer's own), then listed in one `train.jsonl` whose paths are relative to the corpus folder.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from data.compose_builder import build_compose
from data.fill import build_fill
from data.inputs import load_items
from data.records import Record, read_records, resolve_path, write_records
from data.resize import ResizeSettings, resize_builder
from data.runner import run_builder
from data.skins_builder import build_skins

logger = logging.getLogger(__name__)

SKIN_ELEMENT_SCALE = 0.25
"""Skins are drawn at a quarter of the 1024² layout, then composed and resized: enough detail for 128²."""


@dataclass(frozen=True)
class CorpusRecipe:
    resolution: int = 128
    fill: int = 2048
    """Fill-circle records (prompt: "<colour> circle with <colour> background")."""
    skins: int = 256
    """Generated keyboard skins (prompt: "a keyboard skin")."""
    heldout_fill: int = 32
    heldout_skins: int = 16
    """Held-out records (other seeds), for the VAE's reconstruction scores."""


@dataclass(frozen=True)
class Corpus:
    train_jsonl: Path
    heldout_jsonl: Path


def _fill(out: Path, n: int, resolution: int, seed: int) -> list[Record]:
    return _rebased(build_fill(out, n, resolution=resolution, seed=seed), out.parent)


def _skins(out: Path, n: int, resolution: int, seed: int) -> list[Record]:
    """skins -> compose (default 1024² layout) -> resize, each step the `python -m data` builder."""
    parts = build_skins(out / "parts", n, seed=seed, scale=SKIN_ELEMENT_SCALE)
    build_compose(parts, out / "composed")
    resized = run_builder(
        "resize",
        resize_builder,
        load_items(out / "composed"),
        out / f"r{resolution}",
        ResizeSettings(resolution, resolution),
    )
    return _rebased(resized.jsonl, out.parent)


def _rebased(jsonl: Path, root: Path) -> list[Record]:
    """The dataset's records with image paths relative to `root` instead of the dataset's own folder."""
    folder = jsonl.parent.relative_to(root)
    return [
        Record(
            text=r.text,
            image=str(folder / r.image),
            conditioning_image=str(folder / r.conditioning_image),
        )
        for r in read_records(jsonl)
    ]


def build_corpus(root: Path, recipe: CorpusRecipe, seed: int) -> Corpus:
    """Builds (or resumes: every builder keeps finished files) the training and held-out sets in `root`."""
    res = recipe.resolution
    train = _fill(root / "fill", recipe.fill, res, seed)
    heldout = _fill(root / "heldout_fill", recipe.heldout_fill, res, seed + 1)
    if recipe.skins:
        train += _skins(root / "skins", recipe.skins, res, seed)
    if recipe.heldout_skins:
        heldout += _skins(root / "heldout_skins", recipe.heldout_skins, res, seed + 1)
    corpus = Corpus(root / "train.jsonl", root / "heldout.jsonl")
    write_records(corpus.train_jsonl, train)
    write_records(corpus.heldout_jsonl, heldout)
    logger.info("Corpus in %s: %d training and %d held-out records", root, len(train), len(heldout))
    return corpus


def load_images(jsonl: Path) -> np.ndarray:
    """Every record's target image as uint8 (N, 3, H, W)."""
    arrays = []
    for record in read_records(jsonl):
        with Image.open(resolve_path(jsonl.parent, record.image)) as image:
            arrays.append(np.asarray(image.convert("RGB")).transpose(2, 0, 1))
    return np.stack(arrays)
