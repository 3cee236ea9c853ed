"""Glyph builder: OCR each target, keep confident lines, render them onto a background as the condition.

A glyph ControlNet learns to draw legible labels where the condition shows them. For every record this
runs OCR (:func:`recognizer.ocr.load_ocr`) on the target image, keeps the lines whose confidence is at
least ``min_confidence`` (0.98 by default: a misread label taught as ground truth is worse than none),
draws them with a CJK font into their boxes on the background, and writes the polygons (``box``) and
texts (``gt_text``) into the record.

The background is the record's current condition (``condition``, e.g. compose's layout outlines or a
Canny map), black (``black``), or one shared image file given as a path, which must match every
target's size (run ``resize`` first). A raw image without a condition gets a black background.
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from data.builder_cli import add_builder_args, run_cli
from data.fonts import resolve_font_path
from data.glyph_render import render_glyphs
from data.image_io import DEFAULT_PNG_COMPRESSION, Decoded, place_image, read_image, write_png
from data.inputs import input_record
from data.records import Record
from data.runner import BadInput, Built, Item
from recognizer.ocr import OcrBackend, OcrConfig, OcrLine, load_ocr

__all__ = ["GlyphSettings", "add_cli", "glyph_builder", "keep_lines"]

DEFAULT_MIN_CONFIDENCE = 0.98
NO_TEXT_NOTE = "no text line at or above the confidence threshold (condition is the background only)"

_OCR_BACKENDS: dict[str, OcrBackend] = {}  # one backend per worker process and config (loading is slow)


@dataclass(frozen=True)
class GlyphSettings:
    """Everything that decides the output; saved as ``glyph_params.json``."""

    min_confidence: float = DEFAULT_MIN_CONFIDENCE
    background: str = "condition"  # "condition", "black", or a path to a shared image
    font: str | None = None  # None: the packaged CJK font
    ocr: OcrConfig = field(default_factory=OcrConfig)
    clear_boxes: bool = True  # black out each kept box on the background before drawing its text
    convert: bool = False
    version: int = 1


def _ocr(config: OcrConfig) -> OcrBackend:
    """The process's backend for ``config``. In a runner worker process (one per core) OCR gets one
    thread, as OpenCV does there; in the main process (``workers=1``) it keeps the runtime's default."""
    if config.num_threads is None and multiprocessing.parent_process() is not None:
        config = replace(config, num_threads=1)
    key = repr(config)
    if key not in _OCR_BACKENDS:
        _OCR_BACKENDS[key] = load_ocr(config)
    return _OCR_BACKENDS[key]


def keep_lines(lines: list[OcrLine], min_confidence: float, size: tuple[int, int]) -> list[OcrLine]:
    """Lines with non-empty text at or above ``min_confidence``, polygons clipped to the image."""
    width, height = size
    kept = []
    for line in lines:
        text = line.text.strip()
        if line.confidence < min_confidence or not text:
            continue
        polygon = tuple((min(max(x, 0.0), width), min(max(y, 0.0), height)) for x, y in line.polygon)
        kept.append(OcrLine(polygon, text, line.confidence))
    return kept


@functools.lru_cache(maxsize=2)
def _shared_background(path: str, convert: bool) -> Decoded:
    """A shared background is decoded once per worker process, not once per record."""
    return read_image(path, convert=convert)


def _background(
    record: Record, settings: GlyphSettings, size: tuple[int, int]
) -> tuple[Image.Image, tuple[str, ...]]:
    """The picture the glyphs are drawn on, at the target's ``size``, and conversion notes."""
    if settings.background == "black" or (
        settings.background == "condition" and record.conditioning_image == record.image
    ):
        return Image.new("RGB", size), ()
    if settings.background == "condition":
        decoded = read_image(record.conditioning_image, convert=settings.convert)
        what = "the record's condition"
    else:
        decoded = _shared_background(settings.background, settings.convert)
        what = "the shared background"
    if decoded.size != size:
        width, height = decoded.size
        raise BadInput(f"wrong size: image is {size[0]}x{size[1]}, {what} {width}x{height}")
    notes = tuple(f"background: {note}" for note in decoded.notes)  # not to be mistaken for the image's
    return Image.fromarray(cv2.cvtColor(decoded.pixels, cv2.COLOR_BGR2RGB)), notes


def glyph_builder(item: Item, out: Path, settings: GlyphSettings) -> Built:
    """One record: OCR the image, render kept lines onto the background, record boxes and texts."""
    record = input_record(item)
    source = Path(record.image)
    image = read_image(source, convert=settings.convert)
    rgb = np.ascontiguousarray(image.pixels[:, :, ::-1])
    lines = keep_lines(_ocr(settings.ocr).read([rgb])[0], settings.min_confidence, image.size)
    background, background_notes = _background(record, settings, image.size)
    drawn = [(line.polygon, line.text) for line in lines]
    condition = render_glyphs(background, drawn, settings.font, settings.clear_boxes)
    condition_rel = f"conditioning_images/{item.key}.png"
    write_png(out / condition_rel, np.ascontiguousarray(np.asarray(condition)[:, :, ::-1]))
    placed = place_image(source, image, out / f"images/{item.key}", DEFAULT_PNG_COMPRESSION)
    image_rel = placed.relative_to(out)
    built = replace(
        record,
        image=image_rel.as_posix(),
        conditioning_image=condition_rel,
        box=[line.polygon for line in lines],
        gt_text=[line.text for line in lines],
    )
    notes = image.notes + background_notes + (() if lines else (NO_TEXT_NOTE,))
    return Built(built, notes)


def _confidence(value: str) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {number}")
    return number


def _cmd_glyph(args: argparse.Namespace) -> int:
    font = str(resolve_font_path(args.font)) if args.font else None  # a missing font is one error up front
    background = args.background
    if background not in ("condition", "black"):
        try:  # a bad shared image is one error, not N failures
            read_image(background, convert=args.convert)
        except BadInput as exc:
            raise ValueError(f"--background {exc.path}: {exc.reason}") from None
        background = str(Path(background).resolve())
    ocr = OcrConfig(det_limit_side_len=args.det_limit_side_len)
    settings = GlyphSettings(
        args.min_confidence, background, font, ocr, not args.keep_background, args.convert
    )
    return run_cli(args, "glyph", glyph_builder, settings)


def add_cli(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``python -m data glyph``."""
    parser = sub.add_parser(
        "glyph",
        help="OCR the targets and render confident text lines as the condition (box, gt_text)",
        description="Run OCR over every image, keep lines at or above --min-confidence, draw them with a "
        "CJK font into their boxes on the background, and write box/gt_text into the records.",
    )
    add_builder_args(parser)
    parser.add_argument(
        "--min-confidence",
        type=_confidence,
        default=DEFAULT_MIN_CONFIDENCE,
        help="keep lines at or above (0.98)",
    )
    parser.add_argument(
        "--background",
        default="condition",
        metavar="condition|black|IMG",
        help="draw on each record's condition (default), on black, or on one shared image of the same size",
    )
    parser.add_argument(
        "--keep-background",
        action="store_true",
        help="do not black out the text boxes before drawing the text",
    )
    parser.add_argument(
        "--font", type=Path, default=None, help="TTF/TTC/OTF font (default: packaged CJK font)"
    )
    parser.add_argument("--det-limit-side-len", type=int, default=736, help="OCR detector input size (736)")
    parser.set_defaults(func=_cmd_glyph)
