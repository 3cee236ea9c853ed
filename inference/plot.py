"""A small inline-SVG line chart (metric vs training step) for the HTML report.

Inline SVG keeps report.html one self-contained file with no plotting dependency; a chart of a few
checkpoints needs axes, a line, labelled points and an optional reference level, nothing more.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

__all__ = ["line_chart"]

WIDTH, HEIGHT = 320, 200
_LEFT, _RIGHT, _TOP, _BOTTOM = 58, 14, 26, 34
_LINE = "#2563eb"
_REFERENCE = "#9ca3af"


def _span(values: Sequence[float]) -> tuple[float, float]:
    """A y range around ``values`` with 10 % headroom (a flat line gets a unit-wide band)."""
    low, high = min(values), max(values)
    pad = (high - low) * 0.1 or max(abs(high) * 0.1, 0.05)
    return low - pad, high + pad


def _format(value: float) -> str:
    return f"{value:.3g}"


def _text(x: float, y: float, label: str, anchor: str = "middle") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" class="tick">{escape(label)}</text>'


def line_chart(
    points: Sequence[tuple[int, float]], title: str, reference: float | None = None, reference_label: str = ""
) -> str:
    """SVG markup of ``points`` (step, value), sorted by step, with an optional reference level.

    The y axis spans the points only, so small changes between checkpoints stay visible; the reference
    is written in the corner, and drawn as a dashed line when it falls inside that span.
    """
    points = sorted(points)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    y_low, y_high = _span(ys)
    x_low = min(xs)
    x_high = max(xs) if max(xs) > x_low else x_low + 1
    plot_w, plot_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM

    def x_of(step: float) -> float:
        return _LEFT + (step - x_low) / (x_high - x_low) * plot_w

    def y_of(value: float) -> float:
        return _TOP + (y_high - value) / (y_high - y_low) * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)} vs step">',
        f'<text x="{WIDTH / 2}" y="16" text-anchor="middle" class="chart-title">{escape(title)}</text>',
        f'<line x1="{_LEFT}" y1="{_TOP + plot_h}" x2="{_LEFT + plot_w}" y2="{_TOP + plot_h}" class="axis"/>',
        f'<line x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{_TOP + plot_h}" class="axis"/>',
    ]
    parts += [_text(_LEFT - 4, y_of(v) + 4, _format(v), "end") for v in (y_low, (y_low + y_high) / 2, y_high)]
    parts += [_text(x_of(step), _TOP + plot_h + 14, str(step)) for step in sorted(set(xs))]
    parts.append(_text(_LEFT + plot_w / 2, HEIGHT - 4, "step"))
    if reference is not None:
        parts.append(_text(_LEFT + plot_w, _TOP + 10, f"{reference_label} {_format(reference)}", "end"))
    if reference is not None and y_low <= reference <= y_high:
        y = y_of(reference)
        parts.append(
            f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{_LEFT + plot_w}" y2="{y:.1f}" stroke="{_REFERENCE}" '
            f'stroke-dasharray="4 3"/>'
        )
    path = " ".join(f"{x_of(s):.1f},{y_of(v):.1f}" for s, v in points)
    parts.append(f'<polyline points="{path}" fill="none" stroke="{_LINE}" stroke-width="2"/>')
    for step, value in points:
        parts.append(
            f'<circle cx="{x_of(step):.1f}" cy="{y_of(value):.1f}" r="3.5" fill="{_LINE}">'
            f"<title>step {step}: {_format(value)}</title></circle>"
        )
    parts.append("</svg>")
    return "\n".join(parts)
