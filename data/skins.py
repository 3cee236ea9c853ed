"""Procedural keyboard skins: per-skin folders of element images, the demo material for ``compose``.

The project cannot ship real skins, so this draws them: a background, a 26-key board, a 9-key board,
a function-key row and a navigation bar, with Chinese and English key labels ("Shift 上档", "Space 空格",
"确定", "删除", "A"...) in seed-dependent colours, radii, gaps and font sizes. Boards are RGBA with
transparent gaps, like the cut-out assets of real skin packages, so ``compose`` shows the background
between keys. Labels are large and high-contrast (see :mod:`data.skin_style`) so that OCR reads them
back, which is how the glyph builder is tested for real.

Every skin is a pure function of ``(seed, index, scale)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from PIL.ImageFont import FreeTypeFont

from common.fonts import load_font
from data.skin_style import RGB, SkinStyle, draw_style

__all__ = ["ELEMENTS", "ELEMENT_SIZES", "DrawnLabel", "Skin", "generate_skin"]

ELEMENTS: tuple[str, ...] = ("background", "keys26", "keys9", "function", "navbar")
# (width, height) at scale 1, matching data/layouts/default.yaml so that "contain" fills the slots.
ELEMENT_SIZES: dict[str, tuple[int, int]] = {
    "background": (1024, 1024),
    "navbar": (1024, 96),
    "keys26": (992, 432),
    "function": (992, 112),
    "keys9": (992, 320),
}

Row = Sequence[tuple[str, float]]  # (label, width weight)

_LETTER_ROWS = ("QWERTYUIOP", "ASDFGHJKL", "ZXCVBNM")
_FUNCTION_CHOICES: dict[str, tuple[str, ...]] = {
    "shift": ("Shift 上档", "上档", "Shift"),
    "symbols": ("123", "符号", "?123"),
    "space": ("Space 空格", "空格", "Space"),
    "enter": ("确定", "Enter 确定", "发送", "换行"),
    "delete": ("删除", "Del 删除"),
}
_NINE_KEY_ROWS = (
    ("分词", "@/.", "ABC", "DEF"),
    ("符号", "GHI", "JKL", "MNO"),
    ("重输", "PQRS", "TUV", "WXYZ"),
)
_NAV_CHOICES = ("设置", "表情", "剪贴板", "语音", "搜索", "翻译", "主题")


@dataclass(frozen=True)
class DrawnLabel:
    """One label as drawn: its key's rectangle and the text's own bounding box, ``(x0, y0, x1, y1)``
    in the element's pixels. The key rectangle bounds where OCR may find the label (no line may
    cross into a neighbour); the text box is where the glyph goes when OCR misses it."""

    label: str
    rect: tuple[int, int, int, int]
    box: tuple[int, int, int, int]

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "rect": list(self.rect), "box": list(self.box)}


@dataclass(frozen=True)
class Skin:
    """The element images of one skin, the labels drawn on each element, and the style used."""

    elements: dict[str, Image.Image]
    labels: dict[str, list[str]]
    style: SkinStyle
    keys: dict[str, list[DrawnLabel]] = field(default_factory=dict)

    def metadata(self, seed: int, index: int, scale: float) -> dict[str, Any]:
        """What ``skin.json`` holds: provenance, the labels (OCR ground truth) with where each was
        drawn (``keys``: element pixels), and the style."""
        return {
            "seed": seed,
            "index": index,
            "scale": scale,
            "labels": self.labels,
            "keys": {name: [key.to_json() for key in keys] for name, keys in self.keys.items()},
            "style": self.style.to_json(),
        }


def _scaled(name: str, scale: float) -> tuple[int, int]:
    width, height = ELEMENT_SIZES[name]
    return max(8, round(width * scale)), max(8, round(height * scale))


def _background(size: tuple[int, int], style: SkinStyle, rng: np.random.Generator) -> Image.Image:
    """Vertical two-colour gradient with a faint pattern (gives Canny something besides keys)."""
    width, height = size
    t = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    top = np.asarray(style.background_top, np.float32)
    bottom = np.asarray(style.background_bottom, np.float32)
    rows = (top * (1 - t) + bottom * t).astype(np.uint8)
    image = Image.fromarray(np.broadcast_to(rows, (height, width, 3)).copy(), "RGB")
    overlay = Image.new("RGBA", size, (0, 0, 0, 0))
    _draw_pattern(ImageDraw.Draw(overlay), size, style.pattern, rng)
    return Image.alpha_composite(image.convert("RGBA"), overlay).convert("RGB")


def _draw_pattern(
    draw: ImageDraw.ImageDraw, size: tuple[int, int], pattern: str, rng: np.random.Generator
) -> None:
    width, height = size
    tint = (255, 255, 255, 48) if rng.integers(2) else (0, 0, 0, 40)
    step = max(8, width // int(rng.integers(8, 20)))
    if pattern == "dots":
        for y in range(step // 2, height, step):
            for x in range(step // 2, width, step):
                draw.ellipse((x - step // 6, y - step // 6, x + step // 6, y + step // 6), fill=tint)
    elif pattern == "stripes":
        for x in range(-height, width, step):
            draw.line((x, height, x + height, 0), fill=tint, width=max(1, step // 4))
    elif pattern == "bubbles":
        for _ in range(int(rng.integers(6, 16))):
            cx, cy = int(rng.integers(width)), int(rng.integers(height))
            radius = int(rng.integers(width // 20 + 1, width // 5 + 2))
            draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=tint)


def _font(font: str | Path | None, size: int, style: SkinStyle) -> FreeTypeFont:
    """The style's face of the packaged TTC (regular or mono); a user's font file uses its first face."""
    return load_font(font, size, style.font_index if font is None else 0)


def _fit_font_size(label: str, box_w: int, box_h: int, style: SkinStyle, font: str | Path | None) -> int:
    """Largest size up to ``font_scale`` of the key height at which ``label`` fits the key with margins."""
    size = max(8, round(box_h * style.font_scale))
    while size > 8 and _font(font, size, style).getlength(label) > box_w * 0.84:
        size -= 1
    return size


def _draw_key(
    draw: ImageDraw.ImageDraw,
    rect: tuple[int, int, int, int],
    label: str,
    colours: tuple[RGB, RGB],
    style: SkinStyle,
    font: str | Path | None,
) -> tuple[int, int, int, int]:
    """Draw one key cap and its centred label; return the label's text bounding box."""
    x0, y0, x1, y1 = rect
    fill, ink = colours
    radius = round(min(x1 - x0, y1 - y0) * style.corner_radius)
    if style.shadow:
        offset = max(1, (y1 - y0) // 24)
        draw.rounded_rectangle((x0, y0 + offset, x1, y1 + offset), radius, fill=(0, 0, 0, 110))
    border = style.key_border if style.border_width else None
    draw.rounded_rectangle(rect, radius, fill=(*fill, 255), outline=border, width=style.border_width)
    size = _fit_font_size(label, x1 - x0, y1 - y0, style, font)
    centre = ((x0 + x1) / 2, (y0 + y1) / 2)
    face = _font(font, size, style)
    draw.text(centre, label, font=face, fill=(*ink, 255), anchor="mm")
    return _int_box(draw.textbbox(centre, label, font=face, anchor="mm"))


def _int_box(box: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
    return (int(box[0]), int(box[1]), int(box[2]), int(box[3]))


def _board(
    size: tuple[int, int],
    rows: Sequence[Row],
    style: SkinStyle,
    font: str | Path | None,
    accent: frozenset[str] = frozenset(),
) -> tuple[Image.Image, list[DrawnLabel]]:
    """RGBA board: rows of keys on a (maybe translucent) plate; key widths proportional to weights.
    Also returns every label with its key rectangle and text box."""
    width, height = size
    image = Image.new("RGBA", size, (*style.key_fill, style.plate_alpha // 3))
    draw = ImageDraw.Draw(image)
    pitch_y = height / len(rows)
    gap = max(2, round(pitch_y * style.gap))
    unit = width / max(sum(weight for _, weight in row) for row in rows)
    drawn = []
    for r, row in enumerate(rows):
        x = (width - unit * sum(weight for _, weight in row)) / 2  # short rows are centred
        for label, weight in row:
            left, right = round(x + gap / 2), round(x + unit * weight - gap / 2)
            top, bottom = round(r * pitch_y + gap / 2), round((r + 1) * pitch_y - gap / 2)
            colours = (
                (style.accent_fill, style.accent_label) if label in accent else (style.key_fill, style.label)
            )
            rect = (left, top, right, bottom)
            drawn.append(DrawnLabel(label, rect, _draw_key(draw, rect, label, colours, style, font)))
            x += unit * weight
    return image, drawn


def _navbar(
    size: tuple[int, int], labels: list[str], style: SkinStyle, font: str | Path | None
) -> tuple[Image.Image, list[DrawnLabel]]:
    """Opaque bar with evenly spaced text tabs (real nav bars mix icons and words; words are OCR-able);
    each tab's slot is its "key" rectangle."""
    image = Image.new("RGBA", size, (*style.nav_fill, 255))
    draw = ImageDraw.Draw(image)
    width, height = size
    font_size = max(8, round(height * 0.42))
    slot = width / len(labels)
    line_y = height - max(1, height // 24)
    drawn = []
    for i, label in enumerate(labels):
        ink = (*style.nav_label, 255)
        centre, face = ((i + 0.5) * slot, height / 2), _font(font, font_size, style)
        draw.text(centre, label, font=face, fill=ink, anchor="mm")
        rect = (round(i * slot), 0, round((i + 1) * slot), line_y)
        drawn.append(DrawnLabel(label, rect, _int_box(draw.textbbox(centre, label, font=face, anchor="mm"))))
    draw.line((0, line_y, width, line_y), fill=(*style.nav_label, 255), width=max(1, height // 32))
    return image, drawn


def _choose_labels(rng: np.random.Generator, style: SkinStyle) -> dict[str, list[list[str]]]:
    """Label rows of every element (chosen before drawing, so skin.json is the exact truth)."""
    letters = [[c.lower() if style.lowercase else c for c in row] for row in _LETTER_ROWS]
    function = [
        str(rng.choice(_FUNCTION_CHOICES[key])) for key in ("shift", "symbols", "space", "enter", "delete")
    ]
    nav_count = int(rng.integers(4, 6))
    nav = [str(label) for label in rng.choice(_NAV_CHOICES, size=nav_count, replace=False)]
    return {
        "keys26": letters,
        "function": [function],
        "keys9": [list(r) for r in _NINE_KEY_ROWS],
        "navbar": [nav],
    }


_FUNCTION_WEIGHTS = (1.5, 1.1, 3.4, 2.1, 1.9)


def generate_skin(index: int, seed: int = 0, scale: float = 1.0, font: str | Path | None = None) -> Skin:
    """Draw skin ``index``; deterministic in ``(seed, index, scale, font)``."""
    if index < 0 or seed < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    if not 0.1 <= scale <= 4.0:
        raise ValueError(f"scale must be in [0.1, 4], got {scale}")
    rng = np.random.default_rng([seed, index])
    style = draw_style(rng)
    rows = _choose_labels(rng, style)
    function_row = list(zip(rows["function"][0], _FUNCTION_WEIGHTS, strict=True))
    accent = frozenset({rows["function"][0][0], rows["function"][0][3], "确定"})
    drawn = {
        "keys26": _board(
            _scaled("keys26", scale), [[(c, 1.0) for c in row] for row in rows["keys26"]], style, font
        ),
        "keys9": _board(
            _scaled("keys9", scale), [[(c, 1.0) for c in row] for row in rows["keys9"]], style, font
        ),
        "function": _board(_scaled("function", scale), [function_row], style, font, accent),
        "navbar": _navbar(_scaled("navbar", scale), rows["navbar"][0], style, font),
    }
    elements = {"background": _background(_scaled("background", scale), style, rng)}
    elements.update({name: image for name, (image, _) in drawn.items()})
    labels = {name: [label for row in label_rows for label in row] for name, label_rows in rows.items()}
    keys = {name: keys for name, (_, keys) in drawn.items()}
    return Skin(elements=elements, labels=labels, style=style, keys=keys)
