"""Canny builder: the conditioning image of each record becomes the Canny edge map of its image.

Edges are computed on the colour image by default, as ``cv2.Canny(np.array(image), low, high)`` in
users' scripts, the diffusers example and the ControlNet annotator do: OpenCV takes the strongest
gradient over the channels, so a border between two colours of equal brightness (common in designed
skins) still gives an edge. The edges are exactly OpenCV's, computed ~2x faster
(:func:`strongest_channel_gradients`). ``gray=True`` runs on luma instead (~3x faster again; what
some pipelines use). Edge maps are written as 1-bit PNGs (lossless for a 0/255 map, ~8x less to
compress; PIL and the trainer read them as 0/255). The target image is hard-linked into the output
(or copied, or re-encoded if it had to be converted, see :mod:`data.image_io`).

``shared_condition`` gives every record the same control image instead: copied once into the
output as ``shared_condition.png``; records whose image size differs from it fail with "wrong size".
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from data.build_types import BadInput, Built, Item
from data.builder_cli import add_builder_args, non_negative_int, run_cli
from data.image_io import DEFAULT_PNG_COMPRESSION, place_image, read_image, write_png
from data.inputs import input_record

__all__ = [
    "SHARED_CONDITION",
    "CannySettings",
    "add_cli",
    "canny_builder",
    "canny_edges",
    "strongest_channel_gradients",
]

SHARED_CONDITION = "shared_condition.png"
STRIPE_PIXELS = 1 << 17  # pixels per stripe of rows in the gradient passes: a stripe's arrays stay in cache


@dataclass(frozen=True)
class CannySettings:
    """Everything that decides the output; saved as ``canny_params.json``, which is also the dataset's
    record of how its conditions were made: evaluation scores with the same detector
    (inference.dataset_edges)."""

    low: int = 50
    high: int = 80
    blur: int = 0
    gray: bool = False
    shared_condition: str | None = None
    convert: bool = False
    compression: int = DEFAULT_PNG_COMPRESSION
    version: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.low <= self.high:
            raise ValueError(f"need 0 <= low <= high, got low={self.low}, high={self.high}")
        if self.blur and (self.blur < 3 or self.blur % 2 == 0):
            raise ValueError(f"blur must be 0 (off) or an odd kernel size >= 3, got {self.blur}")


def canny_edges(pixels: np.ndarray, settings: CannySettings) -> np.ndarray:
    """Single-channel 0/255 edge map of a BGR image (as :func:`data.image_io.read_image` gives): exactly
    ``cv2.Canny`` of the image in RGB order (or of its luma with ``gray``)."""
    if settings.gray and pixels.ndim == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY)
    if settings.blur:  # per channel, so the same in BGR as in RGB order
        pixels = cv2.GaussianBlur(pixels, (settings.blur, settings.blur), 0)
    if pixels.ndim == 2:
        return cv2.Canny(pixels, settings.low, settings.high)
    dx, dy = strongest_channel_gradients(pixels)
    return cv2.Canny(dx, dy, settings.low, settings.high)


def strongest_channel_gradients(bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 3x3 Sobel x/y derivatives (int16) of, per pixel, the channel with the largest |dx| + |dy|,
    the first of R, G, B on ties: what ``cv2.Canny`` picks inside for a colour image (multi-channel
    Canny breaks ties by channel order, and users' scripts pass RGB).

    Done here as whole-plane vector passes over stripes of rows small enough to stay in cache, ~2x
    faster than OpenCV's own per-pixel loop over the channels (bench/RESULTS.md).
    ``cv2.Canny(dx, dy, low, high)`` on the result equals ``cv2.Canny(rgb, low, high)`` bit for bit
    (tests/test_canny_edges.py).
    """
    if bgr.ndim != 3 or bgr.shape[2] != 3:
        raise ValueError(f"need a 3-channel BGR image, got shape {bgr.shape}")
    height, width = bgr.shape[:2]
    dx, dy = np.empty((height, width), np.int16), np.empty((height, width), np.int16)
    rows = max(1, STRIPE_PIXELS // width)
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        above, below = max(0, top - 1), min(height, bottom + 1)  # a 3x3 Sobel needs one row around
        stripe_dx, stripe_dy = _strongest_gradients(bgr[above:below])
        own = slice(top - above, bottom - above)
        dx[top:bottom], dy[top:bottom] = stripe_dx[own], stripe_dy[own]
    return dx, dy


def _strongest_gradients(bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`strongest_channel_gradients` of a whole (small) image, borders replicated."""
    best_dx = best_dy = best_norm = None
    for plane in cv2.split(bgr)[::-1]:  # R, G, B
        dx, dy = cv2.spatialGradient(plane, ksize=3, borderType=cv2.BORDER_REPLICATE)  # = 3x3 Sobel x, y
        norm = cv2.add(np.abs(dx), np.abs(dy))  # at most 2 * 4 * 255: no int16 overflow
        if best_norm is None:
            best_dx, best_dy, best_norm = dx, dy, norm
            continue
        stronger = cv2.compare(norm, best_norm, cv2.CMP_GT)  # strictly: ties keep the earlier channel
        cv2.copyTo(dx, stronger, best_dx)
        cv2.copyTo(dy, stronger, best_dy)
        cv2.max(best_norm, norm, best_norm)
    assert best_dx is not None and best_dy is not None
    return best_dx, best_dy


def _shared_condition(out: Path, settings: CannySettings, size: tuple[int, int]) -> str:
    """Copy the shared condition into ``out`` once (atomic, so racing workers are harmless) and
    check the image matches its size."""
    assert settings.shared_condition is not None
    target = out / SHARED_CONDITION
    if not target.exists():
        condition = read_image(settings.shared_condition, convert=settings.convert)
        write_png(target, condition.pixels, settings.compression)
    with Image.open(target) as condition_image:
        expected = condition_image.size
    if size != expected:
        raise BadInput(
            f"wrong size: image is {size[0]}x{size[1]}, the shared condition {expected[0]}x{expected[1]} "
            "(run resize first)"
        )
    return SHARED_CONDITION


def canny_builder(item: Item, out: Path, settings: CannySettings) -> Built:
    """One record: edge map (or the shared condition) as condition, the image carried over."""
    record = input_record(item)
    source = Path(record.image)
    image = read_image(source, convert=settings.convert)
    if settings.shared_condition is not None:
        condition_rel = _shared_condition(out, settings, image.size)
    else:
        condition_rel = f"conditioning_images/{item.key}.png"
        edges = canny_edges(image.pixels, settings)
        write_png(out / condition_rel, edges, settings.compression, bilevel=True)
    image_rel = place_image(source, image, out / f"images/{item.key}", settings.compression).relative_to(out)
    return Built(replace(record, image=image_rel.as_posix(), conditioning_image=condition_rel), image.notes)


def _odd_kernel(value: str) -> int:
    number = int(value)
    if number and (number < 3 or number % 2 == 0):
        raise argparse.ArgumentTypeError(f"must be 0 or an odd number >= 3, got {number}")
    return number


def _cmd_canny(args: argparse.Namespace) -> int:
    shared = args.shared_condition
    if shared is not None:
        read_image(shared, convert=args.convert)  # a bad shared image is one error, not N failures
    settings = CannySettings(
        low=args.low,
        high=args.high,
        blur=args.blur,
        gray=args.gray,
        shared_condition=None if shared is None else str(shared.resolve()),
        convert=args.convert,
        compression=args.compression,
    )
    return run_cli(args, "canny", canny_builder, settings)


def add_cli(sub: argparse._SubParsersAction) -> None:
    """Register ``python -m data canny``."""
    parser = sub.add_parser(
        "canny",
        help="make Canny edge maps the conditioning images",
        description="Compute cv2.Canny edges of every image as its conditioning image (or give every "
        "record one --shared-condition image). Parallel, resumable; bad inputs go to failed.jsonl.",
    )
    add_builder_args(parser)
    parser.add_argument("--low", type=non_negative_int, default=50, help="lower hysteresis threshold (50)")
    parser.add_argument("--high", type=non_negative_int, default=80, help="upper hysteresis threshold (80)")
    parser.add_argument("--blur", type=_odd_kernel, default=0, help="Gaussian blur kernel first (0 = off)")
    parser.add_argument("--gray", action="store_true", help="edges of the luma only (faster; colour default)")
    parser.add_argument(
        "--shared-condition", type=Path, metavar="IMG", help="give every record this control image instead"
    )
    parser.add_argument(
        "--compression",
        type=int,
        choices=range(10),
        metavar="0-9",
        default=DEFAULT_PNG_COMPRESSION,
        help=f"PNG compression level (default {DEFAULT_PNG_COMPRESSION}: fast, nearly as small)",
    )
    parser.set_defaults(func=_cmd_canny)
