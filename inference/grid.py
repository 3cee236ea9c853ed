"""A comparison grid: one row per sample, one titled column per source (condition, target, checkpoints).

Comparing checkpoints is done by eye, side by side, so every cell gets the same square size and the
column titles say which checkpoint is which. Missing cells (a record without a target image) stay
grey rather than shifting the row, so columns always line up.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

__all__ = ["BACKGROUND", "SEPARATOR", "TITLE_HEIGHT", "grid_size", "make_grid"]

SEPARATOR = 2  # white pixels between cells and below the title bar
TITLE_HEIGHT = 24
BACKGROUND = (255, 255, 255)
TITLE_BAR = (32, 32, 32)
TITLE_TEXT = (255, 255, 255)
MISSING_CELL = (200, 200, 200)
_FONT_SIZE = 14
_ELLIPSIS = "…"


def grid_size(n_rows: int, n_columns: int, cell: int = 256) -> tuple[int, int]:
    """(width, height) of a grid, so callers and tests need not repeat the layout arithmetic."""
    width = n_columns * cell + (n_columns - 1) * SEPARATOR
    height = TITLE_HEIGHT + n_rows * (SEPARATOR + cell)
    return width, height


def _fit(image: Image.Image, cell: int) -> Image.Image:
    """``image`` scaled to fit a ``cell`` square (aspect kept), centred on the background colour."""
    scale = cell / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    canvas = Image.new("RGB", (cell, cell), BACKGROUND)
    # Upscaled pixels stay sharp squares (judging small labels needs the real pixels); downscaling smooths.
    resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS
    resized = image.convert("RGB").resize(size, resample)
    canvas.paste(resized, ((cell - size[0]) // 2, (cell - size[1]) // 2))
    return canvas


def _shorten(
    draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: int
) -> str:
    """``text`` cut (with an ellipsis) so it fits ``width`` pixels; long run names are common."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + _ELLIPSIS, font=font) > width:
        text = text[:-1]
    return text + _ELLIPSIS


def _draw_titles(grid: Image.Image, titles: Sequence[str], cell: int) -> None:
    """Dark title bar across the top with each title centred over its column."""
    draw = ImageDraw.Draw(grid)
    draw.rectangle((0, 0, grid.width - 1, TITLE_HEIGHT - 1), fill=TITLE_BAR)
    font = ImageFont.load_default(size=_FONT_SIZE)
    for column, title in enumerate(titles):
        text = _shorten(draw, title, font, cell - 4)
        centre_x = column * (cell + SEPARATOR) + cell // 2
        draw.text((centre_x, TITLE_HEIGHT // 2), text, fill=TITLE_TEXT, font=font, anchor="mm")


def make_grid(
    rows: Sequence[Sequence[Image.Image | None]], column_titles: Sequence[str], cell: int = 256
) -> Image.Image:
    """Lay ``rows`` out under ``column_titles``; ``None`` cells are drawn as grey placeholders."""
    if cell < 1:
        raise ValueError(f"cell must be >= 1, got {cell}")
    n_columns = len(column_titles)
    if n_columns == 0:
        raise ValueError("a grid needs at least one column title")
    for index, row in enumerate(rows):
        if len(row) != n_columns:
            raise ValueError(f"row {index} has {len(row)} cells but there are {n_columns} column titles")
    grid = Image.new("RGB", grid_size(len(rows), n_columns, cell), BACKGROUND)
    _draw_titles(grid, column_titles, cell)
    missing = Image.new("RGB", (cell, cell), MISSING_CELL)
    for r, row in enumerate(rows):
        y = TITLE_HEIGHT + SEPARATOR + r * (cell + SEPARATOR)
        for c, image in enumerate(row):
            grid.paste(missing if image is None else _fit(image, cell), (c * (cell + SEPARATOR), y))
    return grid
