"""CJK-capable fonts for drawing key labels and OCR glyph conditions.

PIL's built-in font has no CJK glyphs: Chinese labels would render as empty boxes, silently teaching a
glyph ControlNet to draw tofu. The packaged default is WenQuanYi Micro Hei (from the
``paperang-p2-fonts-cjk`` wheel, SIL OFL 1.1), which covers Latin and Simplified/Traditional Chinese.
Any TTF/TTC/OTF can be used instead by passing its path.
"""

from __future__ import annotations

import functools
import importlib.resources
import logging
from pathlib import Path

from PIL import ImageFont

logger = logging.getLogger(__name__)

__all__ = ["FontNotFoundError", "default_cjk_font_path", "load_font", "resolve_font_path"]

_DEFAULT_PACKAGE = "paperang_p2_fonts_cjk"
_DEFAULT_RESOURCE = ("fonts", "wqy-microhei.ttc")


class FontNotFoundError(FileNotFoundError):
    """A font file that was asked for (or the packaged default) does not exist or cannot be loaded."""


def default_cjk_font_path() -> Path:
    """Path of the packaged WenQuanYi Micro Hei TTC; raises FontNotFoundError if it is not installed."""
    try:
        resource = importlib.resources.files(_DEFAULT_PACKAGE).joinpath(*_DEFAULT_RESOURCE)
    except ModuleNotFoundError as exc:
        raise FontNotFoundError(
            f"the default CJK font package {_DEFAULT_PACKAGE!r} is not installed; "
            "run `pip install paperang-p2-fonts-cjk` or pass a font path (--font)"
        ) from exc
    path = Path(str(resource))
    if not path.is_file():
        raise FontNotFoundError(f"the default CJK font is missing from its package: {path}")
    return path


def resolve_font_path(font: str | Path | None = None) -> Path:
    """``font`` if given (must be an existing file), else the packaged default."""
    if font is None:
        return default_cjk_font_path()
    path = Path(font).expanduser()
    if not path.is_file():
        reason = "is not a file" if path.exists() else "does not exist"
        raise FontNotFoundError(f"font {path} {reason}; pass a TTF/TTC/OTF file or omit it for the default")
    return path


@functools.lru_cache(maxsize=64)
def _load(path: str, size: int, index: int) -> ImageFont.FreeTypeFont:
    try:
        return ImageFont.truetype(path, size, index=index)
    except OSError as exc:  # FreeType says "cannot open resource" / "unknown file format"
        raise FontNotFoundError(f"cannot load font {path}: {exc}") from exc


def load_font(font: str | Path | None, size: int, index: int = 0) -> ImageFont.FreeTypeFont:
    """A FreeType font at ``size`` px, face ``index`` of a collection (TTC).

    Cached per (path, size, index): builders draw thousands of labels at a handful of sizes.
    """
    if size < 1:
        raise ValueError(f"font size must be >= 1 px, got {size}")
    return _load(str(resolve_font_path(font)), int(size), int(index))
