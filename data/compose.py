"""Compose a keyboard skin from its element images by a layout spec, plus the layout's outline map.

Real skin packages arrive as folders of cut-out assets (background, 26-key board, 9-key board, function
keys, navigation bar). Training needs one picture per skin and a control image that pins where every
key goes; this places each element into its layout rectangle (stretch/contain/cover) and draws the
outline of what was placed: the edges of each element's opaque pixels (every key cap of a cut-out
board) or its rectangle.

A missing optional element is skipped and reported; a missing required one (or an element file that
cannot be decoded) fails the skin with the path and reason.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from data.layout import ElementSpec, LayoutSpec

logger = logging.getLogger(__name__)

__all__ = [
    "ComposedSkin",
    "ElementError",
    "Placement",
    "compose_skin",
    "find_element",
    "fit_element",
    "placement",
]

ALPHA_OPAQUE = 128  # alpha at or above this counts as part of the element (shadows and plates are fainter)


class ElementError(ValueError):
    """A skin folder cannot be composed: a required element is missing or an element is unreadable."""

    def __init__(self, reason: str, path: Path) -> None:
        super().__init__(f"{path}: {reason}")
        self.reason = reason
        self.path = path


@dataclass(frozen=True)
class ComposedSkin:
    image: Image.Image  # RGB, the layout's canvas size
    condition: Image.Image  # RGB, white outlines on black
    missing: tuple[str, ...]  # optional elements that the folder lacks


def find_element(skin_dir: Path, spec: ElementSpec) -> Path | None:
    """The first of the spec's candidate files present in ``skin_dir``."""
    for name in spec.files:
        path = skin_dir / name
        if path.is_file():
            return path
    return None


def _load_rgba(path: Path) -> Image.Image:
    """Decode any PIL-readable element (palette, CMYK, 16-bit, greyscale...) as 8-bit RGBA."""
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit greyscale: scale, don't clip
                image = Image.fromarray((np.asarray(image, dtype=np.uint32) >> 8).astype(np.uint8), "L")
            return image.convert("RGBA")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ElementError(f"cannot read element image ({type(exc).__name__}: {exc})", path) from exc


@dataclass(frozen=True)
class Placement:
    """Where an element image lands: canvas = element pixels * scale + offset, clipped to ``rect``."""

    size: tuple[int, int]  # the resized element image, before a cover crop
    scale: tuple[float, float]
    offset: tuple[int, int]  # canvas position of the resized image's top-left corner
    rect: tuple[int, int, int, int]  # x0, y0, x1, y1 the placed pixels cover on the canvas

    def map_box(self, box: Sequence[float]) -> tuple[float, float, float, float] | None:
        """An ``(x0, y0, x1, y1)`` box in element pixels on the canvas, clipped; None if cropped away."""
        (sx, sy), (ox, oy), (cx0, cy0, cx1, cy1) = self.scale, self.offset, self.rect
        x0, x1 = max(cx0, box[0] * sx + ox), min(cx1, box[2] * sx + ox)
        y0, y1 = max(cy0, box[1] * sy + oy), min(cy1, box[3] * sy + oy)
        return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def placement(image_size: tuple[int, int], spec: ElementSpec) -> Placement:
    """How :func:`fit_element` resizes and positions an image of ``image_size`` for ``spec``."""
    x, y, width, height = spec.rect
    image_w, image_h = image_size
    if spec.fit == "stretch":
        return Placement(
            (width, height), (width / image_w, height / image_h), (x, y), (x, y, x + width, y + height)
        )
    scale_x, scale_y = width / image_w, height / image_h
    scale = min(scale_x, scale_y) if spec.fit == "contain" else max(scale_x, scale_y)
    size = (max(1, round(image_w * scale)), max(1, round(image_h * scale)))
    factors = (size[0] / image_w, size[1] / image_h)
    if spec.fit == "contain":
        left, top = x + (width - size[0]) // 2, y + (height - size[1]) // 2
        return Placement(size, factors, (left, top), (left, top, left + size[0], top + size[1]))
    left, top = (size[0] - width) // 2, (size[1] - height) // 2  # cover: centre crop
    return Placement(size, factors, (x - left, y - top), (x, y, x + width, y + height))


def fit_element(image: Image.Image, spec: ElementSpec) -> tuple[Image.Image, tuple[int, int]]:
    """Resize ``image`` for its rectangle; return it and its top-left canvas position."""
    where = placement(image.size, spec)
    resized = image.resize(where.size, Image.Resampling.LANCZOS)
    if spec.fit != "cover":
        return resized, where.offset
    x, y = spec.rect[0], spec.rect[1]
    left, top = x - where.offset[0], y - where.offset[1]
    return resized.crop((left, top, left + spec.rect[2], top + spec.rect[3])), (x, y)


def _outline(placed: Image.Image, spec: ElementSpec, width: int) -> np.ndarray:
    """uint8 0/255 edge map of one placed element, in its own pixel frame."""
    edges = np.zeros((placed.height, placed.width), np.uint8)
    if spec.outline == "rect":
        cv2.rectangle(edges, (0, 0), (placed.width - 1, placed.height - 1), 255, width)
    elif spec.outline == "alpha":
        mask = np.pad(np.asarray(placed.getchannel("A")) >= ALPHA_OPAQUE, 1).astype(np.uint8) * 255
        eroded = cv2.erode(mask, np.ones((3, 3), np.uint8), iterations=width)
        edges = (mask - eroded)[1:-1, 1:-1]  # inner band of ``width`` px along every opaque region's edge
    return edges


def _paste_edges(condition: np.ndarray, edges: np.ndarray, position: tuple[int, int]) -> None:
    """OR ``edges`` into the canvas-sized ``condition`` at ``position`` (clipped to the canvas)."""
    x, y = position
    height, width = condition.shape
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(width, x + edges.shape[1]), min(height, y + edges.shape[0])
    if x1 > x0 and y1 > y0:
        region = edges[y0 - y : y1 - y, x0 - x : x1 - x]
        np.maximum(condition[y0:y1, x0:x1], region, out=condition[y0:y1, x0:x1])


def compose_skin(skin_dir: str | Path, layout: LayoutSpec) -> ComposedSkin:
    """Compose one skin folder; raises ElementError for a missing required or unreadable element."""
    skin_dir = Path(skin_dir)
    if not skin_dir.is_dir():
        raise ElementError("skin folder does not exist or is not a folder", skin_dir)
    canvas = Image.new("RGBA", layout.canvas, (*layout.fill, 255))
    condition = np.zeros((layout.canvas[1], layout.canvas[0]), np.uint8)
    missing: list[str] = []
    for spec in layout.elements:
        path = find_element(skin_dir, spec)
        if path is None and spec.required:
            raise ElementError(
                f"required element {spec.name!r} missing (looked for {', '.join(spec.files)})", skin_dir
            )
        if path is None:
            missing.append(spec.name)
            continue
        placed, position = fit_element(_load_rgba(path), spec)
        canvas.alpha_composite(placed, position)
        _paste_edges(condition, _outline(placed, spec, layout.outline_width), position)
    rgb_condition = Image.fromarray(np.repeat(condition[:, :, None], 3, axis=2), "RGB")
    return ComposedSkin(canvas.convert("RGB"), rgb_condition, tuple(missing))
