"""Resize builder: every image and its conditioning image to one size, keeping the aspect ratio.

``mode="pad"`` scales the whole picture to fit and pads the rest (``pad_color`` for the image,
``condition_pad_color``, black by default, for the condition: black is "no edge/no glyph" in
condition maps); ``mode="crop"`` scales to cover and crops the centre. Both pictures get the same
geometry, and text boxes are mapped with it; in crop mode points are clamped to the image and
polygons entirely cut away are dropped with their ``gt_text``. Downscaling uses area averaging,
upscaling bicubic. A condition whose size differs from its image is a failure ("wrong size"),
because there is no single geometry that maps both. Images already at the size are carried over
byte for byte.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from PIL import ImageColor

from data.build_types import BadInput, Built, Item
from data.builder_cli import add_builder_args, run_cli
from data.image_io import DEFAULT_PNG_COMPRESSION, Decoded, place_image, read_image, write_png
from data.inputs import input_record
from data.records import Polygon, Record

__all__ = ["Geometry", "ResizeSettings", "add_cli", "fit", "resize_builder", "transform_boxes"]

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class ResizeSettings:
    """Everything that decides the output; saved as ``resize_params.json``."""

    width: int
    height: int
    mode: str = "pad"
    pad_color: RGB = (255, 255, 255)
    condition_pad_color: RGB = (0, 0, 0)
    convert: bool = False
    compression: int = DEFAULT_PNG_COMPRESSION
    version: int = 1

    def __post_init__(self) -> None:
        if self.mode not in ("pad", "crop"):
            raise ValueError(f"mode must be 'pad' or 'crop', got {self.mode!r}")
        if self.width < 1 or self.height < 1:
            raise ValueError(f"size must be positive, got {self.width}x{self.height}")


@dataclass(frozen=True)
class Geometry:
    """Scale to ``scaled`` (w, h), then shift by ``offset`` (x, y) onto the target canvas."""

    scaled: tuple[int, int]
    offset: tuple[int, int]
    scale: tuple[float, float]


def fit(size: tuple[int, int], target: tuple[int, int], mode: str) -> Geometry:
    """The keep-aspect geometry mapping an image of ``size`` onto ``target`` (both (w, h))."""
    (w, h), (tw, th) = size, target
    ratio = min(tw / w, th / h) if mode == "pad" else max(tw / w, th / h)
    sw, sh = max(1, round(w * ratio)), max(1, round(h * ratio))
    return Geometry((sw, sh), ((tw - sw) // 2, (th - sh) // 2), (sw / w, sh / h))


def apply(pixels: np.ndarray, geometry: Geometry, target: tuple[int, int], pad_rgb: RGB) -> np.ndarray:
    """Scale, then pad or centre-crop ``pixels`` (BGR) to ``target``."""
    h, w = pixels.shape[:2]
    (sw, sh), (ox, oy) = geometry.scaled, geometry.offset
    interpolation = cv2.INTER_AREA if sw * sh <= w * h else cv2.INTER_CUBIC
    scaled = cv2.resize(pixels, (sw, sh), interpolation=interpolation)
    tw, th = target
    canvas = np.empty((th, tw, 3), np.uint8)
    canvas[:] = pad_rgb[::-1]
    # Source and destination windows: offsets are >= 0 when padding, <= 0 when cropping.
    x0, y0 = max(ox, 0), max(oy, 0)
    sx0, sy0 = max(-ox, 0), max(-oy, 0)
    cw, ch = min(sw - sx0, tw - x0), min(sh - sy0, th - y0)
    canvas[y0 : y0 + ch, x0 : x0 + cw] = scaled[sy0 : sy0 + ch, sx0 : sx0 + cw]
    return canvas


def transform_boxes(
    record: Record, geometry: Geometry, target: tuple[int, int]
) -> tuple[tuple[Polygon, ...] | None, tuple[str, ...] | None]:
    """Map box polygons with ``geometry``; clamp to ``target``, drop polygons left with no area."""
    if record.box is None:
        return None, record.gt_text
    (kx, ky), (ox, oy), (tw, th) = geometry.scale, geometry.offset, target
    boxes: list[Polygon] = []
    texts: list[str] = []
    for i, polygon in enumerate(record.box):
        points = [(x * kx + ox, y * ky + oy) for x, y in polygon]
        clamped = tuple((min(max(x, 0.0), tw), min(max(y, 0.0), th)) for x, y in points)
        xs, ys = {x for x, _ in clamped}, {y for _, y in clamped}
        if len(xs) < 2 or len(ys) < 2:  # collapsed onto an edge: cut away entirely
            continue
        boxes.append(clamped)
        if record.gt_text is not None:
            texts.append(record.gt_text[i])
    return tuple(boxes), None if record.gt_text is None else tuple(texts)


def _resized(
    source: Path, image: Decoded, out: Path, rel_stem: str, settings: ResizeSettings, pad: RGB
) -> str:
    """Write ``image`` resized (or carry it over if already at size); return its relative path."""
    target = (settings.width, settings.height)
    if image.size == target:
        return place_image(source, image, out / rel_stem, settings.compression).relative_to(out).as_posix()
    geometry = fit(image.size, target, settings.mode)
    rel = f"{rel_stem}.png"
    write_png(out / rel, apply(image.pixels, geometry, target, pad), settings.compression)
    return rel


def _read_condition(path: Path, image: Decoded, convert: bool) -> Decoded:
    """Decode the condition; it must be the image's size, or no single geometry maps both."""
    condition = read_image(path, convert=convert)
    if condition.size != image.size:
        (cw, ch), (iw, ih) = condition.size, image.size
        raise BadInput(f"wrong size: condition is {cw}x{ch}, image {iw}x{ih}", path)
    return condition


def resize_builder(item: Item, out: Path, settings: ResizeSettings) -> Built:
    """One record: image and condition to ``settings``' size with one geometry, boxes mapped."""
    record = input_record(item)
    image_path, condition_path = Path(record.image), Path(record.conditioning_image)
    image = read_image(image_path, convert=settings.convert)
    # A raw image stands in as its own condition: resize it once.
    condition = (
        None if condition_path == image_path else _read_condition(condition_path, image, settings.convert)
    )
    image_rel = _resized(image_path, image, out, f"images/{item.key}", settings, settings.pad_color)
    condition_rel, notes = image_rel, image.notes
    if condition is not None:
        stem = f"conditioning_images/{item.key}"
        condition_rel = _resized(condition_path, condition, out, stem, settings, settings.condition_pad_color)
        notes += tuple(f"condition: {note}" for note in condition.notes)
    target = (settings.width, settings.height)
    box, gt_text = transform_boxes(record, fit(image.size, target, settings.mode), target)
    result = replace(record, image=image_rel, conditioning_image=condition_rel, box=box, gt_text=gt_text)
    return Built(result, notes)


def _size(value: str) -> tuple[int, int]:
    """``512`` or ``1024x768`` (width x height)."""
    width, _, height = value.lower().partition("x")
    try:
        size = (int(width), int(height or width))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or WxH, got {value!r}") from None
    if min(size) < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, got {value!r}")
    return size


def _color(value: str) -> RGB:
    try:
        return ImageColor.getrgb(value)[:3]  # type: ignore[return-value]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a colour name or #rrggbb: {value!r}") from None


def _cmd_resize(args: argparse.Namespace) -> int:
    width, height = args.size
    settings = ResizeSettings(
        width, height, args.mode, args.pad_color, args.condition_pad_color, args.convert, args.compression
    )
    return run_cli(args, "resize", resize_builder, settings, keeps_geometry=False)


def add_cli(sub: argparse._SubParsersAction) -> None:
    """Register ``python -m data resize``."""
    parser = sub.add_parser(
        "resize",
        help="resize images and conditions to one size (keep aspect: pad or crop)",
        description="Resize every image and its conditioning image to --size with one keep-aspect "
        "geometry (pad or centre-crop), mapping text boxes along. Parallel, resumable.",
    )
    add_builder_args(parser)
    parser.add_argument("--size", type=_size, required=True, help="target size: N (square) or WxH")
    parser.add_argument("--mode", choices=("pad", "crop"), default="pad", help="keep-aspect mode (pad)")
    parser.add_argument("--pad-color", type=_color, default=(255, 255, 255), help="image padding (white)")
    parser.add_argument(
        "--condition-pad-color", type=_color, default=(0, 0, 0), help="condition padding (black)"
    )
    parser.add_argument(
        "--compression",
        type=int,
        choices=range(10),
        metavar="0-9",
        default=DEFAULT_PNG_COMPRESSION,
        help=f"PNG compression level (default {DEFAULT_PNG_COMPRESSION})",
    )
    parser.set_defaults(func=_cmd_resize)
