"""Procedural "fill" dataset: coloured circles conditioned on their outlines (fill50k style).

This is the demo's embedded default dataset: it needs no download, is tiny to build, and a ControlNet
visibly learns it within a few hundred steps (the circle must land exactly on the outline and take
the colours named in the prompt), so it exercises the whole training stack end to end.

Everything is a pure function of ``(seed, index, resolution)``; two builds with the same arguments are
byte-identical, and an interrupted build resumes by skipping files that already exist (every file is
written atomically, so an existing file is always complete).
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageColor, ImageDraw

from common.atomic import atomic_save_image
from data.build_state import params_path
from data.build_types import Built, Item
from data.records import Record
from data.runner import run_builder

if TYPE_CHECKING:
    from data.ray_engine import RayOptions

logger = logging.getLogger(__name__)

__all__ = [
    "COLOURS",
    "FILL_VERSION",
    "PARAMS_FILE",
    "FillSettings",
    "build_fill",
    "fill_builder",
    "fill_record",
    "outline_width",
]

# Bump when the pictures or texts change, so resuming over files from an older generator is refused.
FILL_VERSION = 1
PARAMS_FILE = params_path(Path(), "fill").name  # fill_params.json
MIN_RESOLUTION = 16
# Pairs closer than this (Euclidean RGB) are never drawn together: a "snow circle with white
# background" is an invisible target and a useless training signal.
MIN_PAIR_DISTANCE = 120.0

# PIL colormap key -> prompt words. An explicit table beats a word splitter ("goldenrod",
# "oldlace", "lightseagreen" all split ambiguously); every RGB value here is distinct.
COLOURS: dict[str, str] = {
    "black": "black",
    "white": "white",
    "red": "red",
    "lime": "lime",
    "blue": "blue",
    "yellow": "yellow",
    "orange": "orange",
    "purple": "purple",
    "pink": "pink",
    "brown": "brown",
    "gray": "gray",
    "navy": "navy",
    "teal": "teal",
    "olive": "olive",
    "maroon": "maroon",
    "cyan": "cyan",
    "magenta": "magenta",
    "gold": "gold",
    "silver": "silver",
    "indigo": "indigo",
    "violet": "violet",
    "turquoise": "turquoise",
    "salmon": "salmon",
    "crimson": "crimson",
    "chocolate": "chocolate",
    "khaki": "khaki",
    "orchid": "orchid",
    "lightcoral": "light coral",
    "palegoldenrod": "pale golden rod",
    "oldlace": "old lace",
    "darkslateblue": "dark slate blue",
    "mediumseagreen": "medium sea green",
    "deepskyblue": "deep sky blue",
    "hotpink": "hot pink",
    "lightsteelblue": "light steel blue",
    "saddlebrown": "saddle brown",
    "forestgreen": "forest green",
    "royalblue": "royal blue",
    "lemonchiffon": "lemon chiffon",
    "midnightblue": "midnight blue",
    "yellowgreen": "yellow green",
    "firebrick": "fire brick",
    "cornflowerblue": "cornflower blue",
    "lightseagreen": "light sea green",
    "sandybrown": "sandy brown",
    "darkorange": "dark orange",
}

_KEYS: tuple[str, ...] = tuple(COLOURS)
_RGB: tuple[tuple[int, int, int], ...] = tuple(ImageColor.getrgb(key)[:3] for key in _KEYS)  # type: ignore[misc]


def _distinct_pairs() -> tuple[tuple[int, int], ...]:
    """All ordered (foreground, background) index pairs that are clearly different colours."""
    rgb = np.asarray(_RGB, dtype=np.float64)
    pairs = []
    for fg, bg in itertools.permutations(range(len(_KEYS)), 2):
        if np.linalg.norm(rgb[fg] - rgb[bg]) >= MIN_PAIR_DISTANCE:
            pairs.append((fg, bg))
    return tuple(pairs)


_PAIRS = _distinct_pairs()


def outline_width(resolution: int) -> int:
    """Outline stroke width: about 2 px at 128, thin enough to be an edge, thick enough to survive
    the VAE's 8x downsampling at 1024."""
    return max(1, resolution // 64)


def _check_args(resolution: int, seed: int, index: int = 0) -> None:
    """Reject arguments numpy or the geometry would choke on, with a readable message."""
    if resolution < MIN_RESOLUTION:
        raise ValueError(f"resolution must be >= {MIN_RESOLUTION}, got {resolution}")
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")


def _circle(rng: np.random.Generator, resolution: int) -> tuple[int, int, int]:
    """Centre and radius of a circle inside the image with a margin of one outline width, so the
    whole outline is visible and background surrounds it on every side."""
    margin = outline_width(resolution)
    r_min = max(4 * margin, resolution // 10)
    r_max = max(r_min, min(resolution * 3 // 8, (resolution - 1) // 2 - margin))
    radius = int(rng.integers(r_min, r_max, endpoint=True))
    low, high = radius + margin, resolution - 1 - radius - margin
    cx, cy = (int(v) for v in rng.integers(low, high, size=2, endpoint=True))
    return cx, cy, radius


def fill_record(index: int, resolution: int, seed: int) -> tuple[Image.Image, Image.Image, str]:
    """Return ``(image, condition, text)`` for sample ``index``; deterministic in (seed, index).

    ``image`` is a filled circle of one named colour on another's background; ``condition`` is the
    same circle's outline, white on black (RGB); ``text`` reads e.g. "pale golden rod circle with old
    lace background". The outline is drawn with the circle's bounding box, so it lies exactly on the
    inner edge of the filled disc.
    """
    _check_args(resolution, seed, index)
    rng = np.random.default_rng([seed, index])
    fg, bg = _PAIRS[int(rng.integers(len(_PAIRS)))]
    cx, cy, radius = _circle(rng, resolution)
    bbox = (cx - radius, cy - radius, cx + radius, cy + radius)

    image = Image.new("RGB", (resolution, resolution), _RGB[bg])
    ImageDraw.Draw(image).ellipse(bbox, fill=_RGB[fg])
    condition = Image.new("RGB", (resolution, resolution), (0, 0, 0))
    ImageDraw.Draw(condition).ellipse(bbox, outline=(255, 255, 255), width=outline_width(resolution))
    text = f"{COLOURS[_KEYS[fg]]} circle with {COLOURS[_KEYS[bg]]} background"
    return image, condition, text


def _relative_paths(index: int) -> tuple[str, str]:
    """The record's image and condition paths, relative to the dataset folder."""
    name = f"{index:05d}.png"
    return f"images/{name}", f"conditioning_images/{name}"


@dataclass(frozen=True)
class FillSettings:
    """What decides the pictures; saved as ``fill_params.json`` so resumes never mix builds."""

    version: int = FILL_VERSION
    resolution: int = 128
    seed: int = 0


def fill_builder(item: Item, out: Path, settings: FillSettings) -> Built:
    """Runner builder for sample ``int(item.key)``: write whichever of its two files are missing.

    Files are written atomically, so one that exists is complete and identical to a rebuild.
    """
    index = int(item.key)
    image_rel, condition_rel = _relative_paths(index)
    image, condition, text = fill_record(index, settings.resolution, settings.seed)
    for picture, path in ((image, out / image_rel), (condition, out / condition_rel)):
        if not path.exists():
            atomic_save_image(picture, path)
    return Built(Record(text=text, image=image_rel, conditioning_image=condition_rel))


def build_fill(
    out_dir: str | Path,
    n: int,
    resolution: int = 128,
    seed: int = 0,
    overwrite: bool = False,
    workers: int = 1,
    engine: RayOptions | None = None,
) -> Path:
    """Build (or resume) an ``n``-sample fill dataset in ``out_dir``; return the ``train.jsonl`` path.

    Images go to ``images/%05d.png`` and ``conditioning_images/%05d.png``; ``train.jsonl`` is written
    last, atomically, so its presence means the build finished. Re-running with the same arguments
    keeps existing images and rewrites the jsonl; a larger ``n`` extends a previous build.
    ``workers`` > 1 uses a process pool (:mod:`data.runner`), ``engine`` Ray tasks; output is identical
    either way.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    _check_args(resolution, seed)
    items = [Item(key=f"{index:05d}", source=f"fill sample {index}") for index in range(n)]
    settings = FillSettings(resolution=resolution, seed=seed)
    summary = run_builder(
        "fill", fill_builder, items, out_dir, settings, workers=workers, overwrite=overwrite, engine=engine
    )
    return summary.jsonl
