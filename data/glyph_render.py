"""Render text lines into their OCR polygons: the glyph part of a glyph-conditioning image.

Each line is drawn upright into a tile the size of its box (font size fitted to the box height and
width), then warped onto the polygon with a perspective transform, so rotated or skewed boxes get
text that fills them the way the original did. Glyphs are white, alpha-blended onto the background
(an edge map or any picture), as glyph ControlNets (AnyText-style) expect.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw

from common.fonts import load_font

__all__ = ["GLYPH_COLOUR", "render_glyphs", "render_line_mask"]

GLYPH_COLOUR = (255, 255, 255)
_FILL_HEIGHT = 0.85  # glyph height as a fraction of the box height
_FILL_WIDTH = 0.95
_REFERENCE_SIZE = 100
MIN_BOX_SIDE = 2.0

Polygon = Sequence[tuple[float, float]]


def _box_size(points: np.ndarray) -> tuple[float, float]:
    """Mean width (top and bottom edges) and height (left and right edges) of a 4-point polygon."""
    p0, p1, p2, p3 = points
    width = (np.linalg.norm(p1 - p0) + np.linalg.norm(p2 - p3)) / 2
    height = (np.linalg.norm(p3 - p0) + np.linalg.norm(p2 - p1)) / 2
    return float(width), float(height)


def _text_tile(text: str, width: int, height: int, font: str | Path | None) -> np.ndarray:
    """uint8 mask of ``text`` centred in a ``width`` x ``height`` tile, as large as fits."""
    natural = load_font(font, _REFERENCE_SIZE).getlength(text) or 1.0
    by_width = _REFERENCE_SIZE * width * _FILL_WIDTH / natural
    size = max(4, math.floor(min(height * _FILL_HEIGHT, by_width)))
    tile = Image.new("L", (width, height), 0)
    ImageDraw.Draw(tile).text(
        (width / 2, height / 2), text, font=load_font(font, size), fill=255, anchor="mm"
    )
    return np.asarray(tile)


def render_line_mask(
    shape: tuple[int, int], polygon: Polygon, text: str, font: str | Path | None = None
) -> tuple[np.ndarray, tuple[int, int]] | None:
    """Mask of ``text`` warped into ``polygon`` (clockwise from top-left), cropped to the polygon's
    bounding box inside an image of ``shape`` (h, w); returns (mask, (x0, y0)) or None if degenerate."""
    points = np.asarray(polygon, np.float32)
    width, height = _box_size(points)
    if width < MIN_BOX_SIDE or height < MIN_BOX_SIDE or not text.strip():
        return None
    tile_w, tile_h = math.ceil(width), math.ceil(height)
    tile = _text_tile(text, tile_w, tile_h, font)
    x0, y0 = (max(0, math.floor(v)) for v in points.min(axis=0))
    x1 = min(shape[1], math.ceil(points[:, 0].max()) + 1)
    y1 = min(shape[0], math.ceil(points[:, 1].max()) + 1)
    if x1 <= x0 or y1 <= y0:
        return None
    source = np.float32([[0, 0], [tile_w, 0], [tile_w, tile_h], [0, tile_h]])
    matrix = cv2.getPerspectiveTransform(source, points - np.float32([x0, y0]))
    mask = cv2.warpPerspective(tile, matrix, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR)
    return mask, (x0, y0)


def render_glyphs(
    background: Image.Image,
    lines: Sequence[tuple[Polygon, str]],
    font: str | Path | None = None,
    clear_boxes: bool = True,
) -> Image.Image:
    """``background`` (RGB) with every ``(polygon, text)`` line drawn into its polygon in white.

    ``clear_boxes`` blacks out each polygon first, so a background made from the target itself (its
    Canny edges) shows the clean rendered label instead of the label's own edges overlapped by it.
    """
    canvas = np.asarray(background.convert("RGB"), dtype=np.float32).copy()
    if clear_boxes and lines:
        polygons = [np.rint(np.asarray(polygon, np.float32)).astype(np.int32) for polygon, _ in lines]
        cv2.fillPoly(canvas, polygons, (0.0, 0.0, 0.0))
    colour = np.float32(GLYPH_COLOUR)
    for polygon, text in lines:
        rendered = render_line_mask(canvas.shape[:2], polygon, text, font)
        if rendered is None:
            continue
        mask, (x0, y0) = rendered
        alpha = mask[:, :, None].astype(np.float32) / 255.0
        region = canvas[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]]
        region[:] = region * (1 - alpha) + colour * alpha
    return Image.fromarray(np.rint(canvas).astype(np.uint8), "RGB")
