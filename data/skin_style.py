"""Random but legible colour styles for the procedural keyboard skins.

Labels must stay readable by OCR (the glyph builder is tested by reading them back), so every label
colour is checked against its key colour with the WCAG contrast ratio; the rest (hues, radii, gaps,
font size, patterns) varies freely with the seed.
"""

from __future__ import annotations

import colorsys
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["RGB", "SkinStyle", "contrast_ratio", "draw_style"]

RGB = tuple[int, int, int]

MIN_LABEL_CONTRAST = 7.0  # WCAG "AAA" for normal text
PATTERNS = ("plain", "dots", "stripes", "bubbles")


def _linear(channel: float) -> float:
    c = channel / 255.0
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def luminance(colour: RGB) -> float:
    """WCAG relative luminance in [0, 1]."""
    r, g, b = (_linear(c) for c in colour)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast_ratio(a: RGB, b: RGB) -> float:
    """WCAG contrast ratio in [1, 21]."""
    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def _hsv(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float]) -> RGB:
    h = float(rng.uniform(0, 1))
    s, v = float(rng.uniform(*sat)), float(rng.uniform(*val))
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return round(r * 255), round(g * 255), round(b * 255)


def _key_and_label(rng: np.random.Generator) -> tuple[RGB, RGB]:
    """A key colour and a label colour that contrasts with it by at least MIN_LABEL_CONTRAST."""
    dark_keys = bool(rng.integers(2))
    key = _hsv(rng, (0.1, 0.7), (0.08, 0.3) if dark_keys else (0.85, 1.0))
    label = _hsv(rng, (0.0, 0.35), (0.92, 1.0) if dark_keys else (0.0, 0.15))
    if contrast_ratio(key, label) < MIN_LABEL_CONTRAST:
        label = (255, 255, 255) if dark_keys else (0, 0, 0)
    while contrast_ratio(key, label) < MIN_LABEL_CONTRAST:  # a saturated key can still be too close
        key = _shade(key, 0.8) if dark_keys else _mix_white(key, 0.3)
    return key, label


def _mix_white(colour: RGB, amount: float) -> RGB:
    r, g, b = (round(c + (255 - c) * amount) for c in colour)
    return r, g, b


def _shade(colour: RGB, factor: float) -> RGB:
    r, g, b = (min(255, max(0, round(c * factor))) for c in colour)
    return r, g, b


@dataclass(frozen=True)
class SkinStyle:
    """Everything random about one skin; recorded in ``skin.json`` so a skin can be explained."""

    background_top: RGB
    background_bottom: RGB
    pattern: str
    key_fill: RGB
    key_border: RGB
    label: RGB
    accent_fill: RGB
    accent_label: RGB
    nav_fill: RGB
    nav_label: RGB
    plate_alpha: int
    corner_radius: float  # fraction of the key's shorter side
    gap: float  # fraction of the key pitch
    border_width: int
    shadow: bool
    font_scale: float  # label height as a fraction of the key height
    font_index: int  # face inside the TTC (WenQuanYi: 0 = Micro Hei, 1 = Micro Hei Mono)
    lowercase: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def draw_style(rng: np.random.Generator) -> SkinStyle:
    """Draw one style; deterministic in the generator's state."""
    key_fill, label = _key_and_label(rng)
    accent_fill, accent_label = _key_and_label(rng)
    nav_fill, nav_label = _key_and_label(rng)
    top = _hsv(rng, (0.2, 0.9), (0.3, 1.0))
    return SkinStyle(
        background_top=top,
        background_bottom=_hsv(rng, (0.2, 0.9), (0.2, 0.9)),
        pattern=PATTERNS[int(rng.integers(len(PATTERNS)))],
        key_fill=key_fill,
        key_border=_shade(key_fill, 0.6 if luminance(key_fill) > 0.5 else 1.8),
        label=label,
        accent_fill=accent_fill,
        accent_label=accent_label,
        nav_fill=nav_fill,
        nav_label=nav_label,
        plate_alpha=int(rng.choice([0, 0, 90, 160])),
        corner_radius=float(rng.uniform(0.05, 0.3)),
        gap=float(rng.uniform(0.06, 0.14)),
        border_width=int(rng.integers(0, 4)),
        shadow=bool(rng.integers(2)),
        font_scale=float(rng.uniform(0.38, 0.55)),
        font_index=int(rng.integers(2)),
        lowercase=bool(rng.random() < 0.3),
    )
