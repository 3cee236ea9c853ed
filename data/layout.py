"""Layout specs for ``compose``: where each skin element goes on the canvas and how it is fitted.

A spec is YAML (see ``data/layouts/default.yaml`` for the documented format). Loading checks every
field and reports all problems at once as ``file: field: message``, so a typo in a spec that will be
applied to 100k skin folders fails before the first one, with the field named.
"""

from __future__ import annotations

import difflib
import importlib.resources
from dataclasses import dataclass
from pathlib import Path

import yaml

__all__ = [
    "FITS",
    "OUTLINES",
    "ElementSpec",
    "LayoutError",
    "LayoutSpec",
    "default_layout_path",
    "load_layout",
    "parse_layout",
]

FITS: tuple[str, ...] = ("stretch", "contain", "cover")
OUTLINES: tuple[str, ...] = ("alpha", "rect", "none")
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp")
_TOP_KEYS = ("canvas", "fill", "outline_width", "elements")
_ELEMENT_KEYS = ("rect", "fit", "required", "files", "outline")

Rect = tuple[int, int, int, int]  # x, y, width, height


@dataclass(frozen=True)
class ElementSpec:
    """One element slot of a layout."""

    name: str
    rect: Rect
    fit: str = "contain"
    required: bool = False
    files: tuple[str, ...] = ()
    outline: str = "alpha"


@dataclass(frozen=True)
class LayoutSpec:
    """A whole layout; ``elements`` are in drawing order (later on top)."""

    canvas: tuple[int, int]
    elements: tuple[ElementSpec, ...]
    fill: tuple[int, int, int] = (0, 0, 0)
    outline_width: int = 3


class LayoutError(ValueError):
    """A layout spec is invalid; the message lists every problem as ``file: field: message``."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"{source}: {p}" for p in problems)
        super().__init__(f"invalid layout spec {source} ({len(problems)} problem(s)):\n{lines}")


def default_layout_path() -> Path:
    """The packaged 1024x1024 layout (data/layouts/default.yaml)."""
    return Path(str(importlib.resources.files("data").joinpath("layouts", "default.yaml")))


def _unknown(keys: object, known: tuple[str, ...], where: str) -> list[str]:
    problems = []
    for key in keys:  # type: ignore[attr-defined]
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"
            problems.append(f"{where}{key}: unknown key{hint}")
    return problems


def _int_list(value: object, length: int, field: str, minimum: int) -> tuple[list[int], list[str]]:
    """Check ``value`` is a list of ``length`` ints >= ``minimum``."""
    ok = isinstance(value, list) and len(value) == length and all(type(v) is int for v in value)
    if not ok:
        return [], [f"{field}: must be a list of {length} integers, got {value!r}"]
    if any(v < minimum for v in value):  # type: ignore[union-attr]
        return [], [f"{field}: values must be >= {minimum}, got {value!r}"]
    return list(value), []  # type: ignore[arg-type]


def _choice(value: object, choices: tuple[str, ...], field: str) -> list[str]:
    return [] if value in choices else [f"{field}: must be one of {', '.join(choices)}, got {value!r}"]


def _parse_element(name: str, raw: object, canvas: tuple[int, int]) -> tuple[ElementSpec | None, list[str]]:
    where = f"elements.{name}"
    if not isinstance(raw, dict):
        return None, [f"{where}: must be a mapping with at least 'rect', got {raw!r}"]
    problems = _unknown(raw, _ELEMENT_KEYS, f"{where}.")
    if "rect" not in raw:
        problems.append(f"{where}.rect: missing required field")
    rect, rect_problems = _int_list(raw.get("rect", [0, 0, 1, 1]), 4, f"{where}.rect", 0)
    problems += rect_problems
    if rect and (rect[2] < 1 or rect[3] < 1):
        problems.append(f"{where}.rect: width and height must be >= 1, got {rect}")
    elif rect and (rect[0] + rect[2] > canvas[0] or rect[1] + rect[3] > canvas[1]):
        problems.append(f"{where}.rect: {rect} reaches outside the {canvas[0]}x{canvas[1]} canvas")
    fit, outline = raw.get("fit", "contain"), raw.get("outline", "alpha")
    problems += _choice(fit, FITS, f"{where}.fit") + _choice(outline, OUTLINES, f"{where}.outline")
    required = raw.get("required", False)
    if not isinstance(required, bool):
        problems.append(f"{where}.required: must be true or false, got {required!r}")
    files = raw.get("files", [name + suffix for suffix in IMAGE_SUFFIXES])
    files = [files] if isinstance(files, str) else files
    if not (isinstance(files, list) and files and all(isinstance(f, str) and f for f in files)):
        problems.append(
            f"{where}.files: must be a file name or a non-empty list of file names, got {files!r}"
        )
    if problems:
        return None, problems
    return ElementSpec(name, tuple(rect), fit, required, tuple(files), outline), []  # type: ignore[arg-type]


def parse_layout(raw: object, source: str = "<memory>") -> LayoutSpec:
    """Validate decoded YAML into a LayoutSpec; raises LayoutError listing every problem."""
    if not isinstance(raw, dict):
        raise LayoutError(
            source, [f"top level: must be a mapping with canvas and elements, got {type(raw).__name__}"]
        )
    problems = _unknown(raw, _TOP_KEYS, "")
    for key in ("canvas", "elements"):
        if key not in raw:
            problems.append(f"{key}: missing required field")
    canvas, canvas_problems = _int_list(raw.get("canvas", [1, 1]), 2, "canvas", 1)
    fill, fill_problems = _int_list(raw.get("fill", [0, 0, 0]), 3, "fill", 0)
    problems += canvas_problems + fill_problems
    if fill and max(fill) > 255:
        problems.append(f"fill: RGB values must be <= 255, got {fill}")
    width = raw.get("outline_width", 3)
    if type(width) is not int or width < 1:
        problems.append(f"outline_width: must be an integer >= 1, got {width!r}")
    elements_raw = raw.get("elements", {})
    if not isinstance(elements_raw, dict) or not elements_raw:
        problems.append(
            f"elements: must be a non-empty mapping of element name to settings, got {elements_raw!r}"
        )
        elements_raw = {}
    elements = []
    for name, element_raw in elements_raw.items():
        element, element_problems = _parse_element(
            str(name), element_raw, tuple(canvas or (1 << 30, 1 << 30))
        )
        problems += element_problems
        elements.append(element)
    if problems:
        raise LayoutError(source, problems)
    return LayoutSpec(tuple(canvas), tuple(elements), tuple(fill), width)  # type: ignore[arg-type]


def load_layout(path: str | Path | None = None) -> LayoutSpec:
    """Read and validate a layout YAML file (the packaged default if ``path`` is None)."""
    path = default_layout_path() if path is None else Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"layout spec {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise LayoutError(str(path), [f"not valid YAML: {exc}"]) from exc
    return parse_layout(raw, str(path))
