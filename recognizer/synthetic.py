"""Keyboard-like images with known label boxes, so OCR and the text losses can be checked offline.

Used by the recognizer tests and benchmark: every label's exact 4-point box and string are known.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from common.fonts import load_font

__all__ = ["KEY_LABELS", "LabelledImage", "render_keyboard"]

KEY_LABELS: tuple[tuple[str, str], ...] = (
    ("Shift", "上档"),
    ("Space", "空格"),
    ("Enter", "回车"),
    ("Tab", "制表"),
    ("Ctrl", "控制"),
    ("Esc", "退出"),
    ("Alt", "切换"),
    ("Home", "首页"),
    ("Delete", "删除"),
    ("Caps", "大写"),
    ("Insert", "插入"),
    ("End", "末尾"),
)
"""(English, Chinese) label pairs of common keys."""


@dataclass
class LabelledImage:
    image: Image.Image
    boxes: np.ndarray
    """``(K, 4, 2)`` float boxes, clockwise from the top-left, a little larger than the glyphs."""
    texts: list[str]


def render_keyboard(
    labels: Sequence[tuple[str, str]] = KEY_LABELS,
    size: tuple[int, int] = (1024, 512),
    columns: int = 4,
    font_size: int = 40,
    font: str | Path | None = None,
) -> LabelledImage:
    """Dark keys on a light plate, an English label above a Chinese one on each key."""
    width, height = size
    rows = -(-len(labels) // columns)
    cell_w, cell_h = width / columns, height / rows
    image = Image.new("RGB", size, (228, 228, 234))
    draw = ImageDraw.Draw(image)
    face = load_font(font, font_size)
    margin = round(0.15 * font_size)
    boxes, texts = [], []
    for i, pair in enumerate(labels):
        x0, y0 = (i % columns) * cell_w + 0.06 * cell_w, (i // columns) * cell_h + 0.06 * cell_h
        x1, y1 = x0 + 0.88 * cell_w, y0 + 0.88 * cell_h
        draw.rounded_rectangle((x0, y0, x1, y1), radius=0.08 * cell_h, fill=(52, 54, 64))
        for line, (text, colour) in enumerate(zip(pair, ((245, 245, 245), (255, 196, 72)), strict=True)):
            origin = (x0 + 0.1 * cell_w, y0 + 0.1 * cell_h + line * 1.5 * font_size)
            draw.text(origin, text, font=face, fill=colour)
            left, top, right, bottom = draw.textbbox(origin, text, font=face)
            left, top, right, bottom = left - margin, top - margin, right + margin, bottom + margin
            boxes.append([(left, top), (right, top), (right, bottom), (left, bottom)])
            texts.append(text)
    return LabelledImage(image, np.asarray(boxes, dtype=np.float64), texts)
