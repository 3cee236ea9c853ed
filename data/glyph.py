"""Glyph builder: OCR each target, keep the labels it can vouch for, render them as the condition.

A glyph ControlNet learns to draw legible labels where the condition shows them, and ``gt_text`` is
the text loss's ground truth, so a misread label taught as truth is worse than none. For every record
this runs OCR (:func:`recognizer.backends.load_ocr`) on the target image and settles its labels in one of
two ways:

* **Known labels** (``labels.jsonl`` from ``compose`` of generated skins, carried along the chain, or
  the user's own file; :mod:`data.known_labels`): OCR lines are matched to each label's key
  rectangle, a label OCR misses is recognised in its own box, and the *true* string is written
  (:mod:`data.label_matching`): never OCR's "0" for "O", "@" for "@/." or "Shift符号" across two keys.
* **No known labels**: lines at or above ``min_confidence`` (0.98) are kept as read; the usual OCR
  confusions are counted as suspicious rather than written silently.

``dropped`` decides what the condition shows for a label or line that is not kept: ``draw`` the known
label anyway, ``black`` out its box, or ``keep`` the background there (``auto``: draw with known
labels, keep without). Kept texts are drawn with a CJK font into their boxes on the background, and the
polygons (``box``) and texts (``gt_text``) go into the record. The counts (expected, matched, read in
their box, corrected, dropped, suspicious) are logged and written to ``glyph_report.json``.

The background is the record's current condition (``condition``, e.g. compose's layout outlines or a
Canny map), black (``black``), or one shared image file given as a path, which must match every
target's size (run ``resize`` first). A raw image without a condition gets a black background.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from common.atomic import atomic_write_json
from common.fonts import resolve_font_path
from data.build_types import BadInput, BuildSummary, Built, Item
from data.builder_cli import add_builder_args, build_from_args, exit_status
from data.glyph_render import render_glyphs
from data.image_io import DEFAULT_PNG_COMPRESSION, Decoded, place_image, read_image, write_png
from data.inputs import input_record, input_root
from data.known_labels import LABELS_FILE, KnownLabel, read_labels
from data.label_matching import DROPPED_POLICIES, LabelOutcome, Polygon, match_labels, suspicious_line
from data.records import Record
from data.worker_setup import worker_threads
from recognizer.backends import load_ocr
from recognizer.ocr import OcrBackend, OcrConfig, OcrLine

logger = logging.getLogger(__name__)

__all__ = ["GlyphSettings", "add_cli", "glyph_builder", "keep_lines", "label_report"]

DEFAULT_MIN_CONFIDENCE = 0.98
NO_TEXT_NOTE = "no text line at or above the confidence threshold (condition is the background only)"
REPORT_FILE = "glyph_report.json"
# Per-record notes the runner counts; label_report reads the dataset's numbers back from them.
KNOWN_NOTE = "labels known"
LABEL_NOTE = "label "  # + matched | read-in-box | corrected | dropped (policy)
SUSPICIOUS_NOTE = "suspicious OCR read: "  # + reason
LINE_KEPT_NOTE = "line kept (no known labels)"
LINE_DROPPED_NOTE = "line dropped below --min-confidence "  # + (policy)

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
    labels: str | None = None  # known labels file (absolute), see data.known_labels
    labels_sha256: str | None = None  # its content: a changed file is another build
    dropped: str = "auto"  # draw | black | keep | auto (draw with known labels, keep without)
    version: int = 2

    def __post_init__(self) -> None:
        if self.dropped not in (*DROPPED_POLICIES, "auto"):
            raise ValueError(
                f"dropped must be one of {', '.join(DROPPED_POLICIES)}, auto; got {self.dropped!r}"
            )
        if self.labels is None and self.dropped == "draw":
            raise ValueError(
                "--dropped draw needs known labels (--labels): without them there is no true text"
            )

    def policy(self, known: bool) -> str:
        """The dropped-label policy for an image with (or without) known labels."""
        if self.dropped != "auto":
            return self.dropped
        return "draw" if known else "keep"


def _ocr(config: OcrConfig) -> OcrBackend:
    """The process's backend for ``config``. In a builder worker (a pool process per core, a Ray task or
    actor) OCR gets the worker's thread budget, as OpenCV does there; in the main process
    (``workers=1``) it keeps the runtime's default."""
    threads = worker_threads()
    if config.num_threads is None and threads is not None:
        config = replace(config, num_threads=threads)
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
def _known_labels(path: str, sha256: str | None) -> dict[str, list[KnownLabel]]:
    """The labels file, read once per worker process (``sha256`` keys the cache to its content)."""
    return read_labels(path)


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


def _settle_known(
    known: list[KnownLabel], lines: list[OcrLine], rgb: np.ndarray, settings: GlyphSettings
) -> tuple[list[tuple[Polygon, str]], list[Polygon], list[str]]:
    """Known labels: (kept (polygon, true text), polygons to black out, notes)."""
    outcomes: list[LabelOutcome] = match_labels(known, lines, rgb, _ocr(settings.ocr).recognize)
    policy = settings.policy(known=True)
    kept, blacked, notes = [], [], [KNOWN_NOTE]
    for outcome in outcomes:
        dropped = outcome.status == "dropped"
        notes.append(LABEL_NOTE + (f"dropped ({policy})" if dropped else outcome.status))
        notes.extend(SUSPICIOUS_NOTE + reason for reason in outcome.suspicious)
        if outcome.polygon is None:
            continue
        if not dropped or policy == "draw":
            kept.append((outcome.polygon, outcome.label.text))
        elif policy == "black":
            blacked.append(outcome.polygon)
    return kept, blacked, notes


def _settle_unknown(
    lines: list[OcrLine], settings: GlyphSettings, size: tuple[int, int]
) -> tuple[list[tuple[Polygon, str]], list[Polygon], list[str]]:
    """No known labels: confident lines as read, with usual confusions flagged; the rest dropped."""
    kept_lines = keep_lines(lines, settings.min_confidence, size)
    policy = settings.policy(known=False)
    kept = [(line.polygon, line.text) for line in kept_lines]
    notes = [LINE_KEPT_NOTE] * len(kept_lines)
    for line in kept_lines:
        reason = suspicious_line(line.text)
        if reason is not None:
            notes.append(SUSPICIOUS_NOTE + reason)
    below = [line for line in lines if line.text.strip() and line.confidence < settings.min_confidence]
    notes += [LINE_DROPPED_NOTE + f"({policy})"] * len(below)
    blacked = [line.polygon for line in below] if policy == "black" else []
    return kept, blacked, notes


def _black_out(background: Image.Image, polygons: Sequence[Polygon]) -> Image.Image:
    if not polygons:
        return background
    pixels = np.asarray(background.convert("RGB")).copy()
    cv2.fillPoly(pixels, [np.rint(np.asarray(p, np.float32)).astype(np.int32) for p in polygons], (0, 0, 0))
    return Image.fromarray(pixels, "RGB")


def glyph_builder(item: Item, out: Path, settings: GlyphSettings) -> Built:
    """One record: OCR the image, settle its labels, render them onto the background, record boxes/texts."""
    record = input_record(item)
    source = Path(record.image)
    image = read_image(source, convert=settings.convert)
    rgb = np.ascontiguousarray(image.pixels[:, :, ::-1])
    lines = _ocr(settings.ocr).read([rgb])[0]
    known = (
        None
        if settings.labels is None
        else _known_labels(settings.labels, settings.labels_sha256).get(source.stem)
    )
    if known is not None:
        kept, blacked, label_notes = _settle_known(known, lines, rgb, settings)
    else:
        kept, blacked, label_notes = _settle_unknown(lines, settings, image.size)
    background, background_notes = _background(record, settings, image.size)
    condition = render_glyphs(_black_out(background, blacked), kept, settings.font, settings.clear_boxes)
    condition_rel = f"conditioning_images/{item.key}.png"
    write_png(out / condition_rel, np.ascontiguousarray(np.asarray(condition)[:, :, ::-1]))
    placed = place_image(source, image, out / f"images/{item.key}", DEFAULT_PNG_COMPRESSION)
    image_rel = placed.relative_to(out)
    built = replace(
        record,
        image=image_rel.as_posix(),
        conditioning_image=condition_rel,
        box=[polygon for polygon, _ in kept],
        gt_text=[text for _, text in kept],
    )
    notes = image.notes + background_notes + tuple(label_notes) + (() if kept else (NO_TEXT_NOTE,))
    return Built(built, notes)


def label_report(notes: Counter[str]) -> dict[str, object]:
    """The dataset's label numbers, from the per-record notes the runner totalled (resumed ones too)."""
    labels = {note.removeprefix(LABEL_NOTE): n for note, n in notes.items() if note.startswith(LABEL_NOTE)}
    expected = sum(labels.values())
    dropped = {k: n for k, n in labels.items() if k.startswith("dropped")}
    drawn = sum(n for k, n in dropped.items() if k == "dropped (draw)")
    in_gt = expected - sum(dropped.values()) + drawn
    return {
        "images_with_known_labels": notes[KNOWN_NOTE],
        "expected": expected,
        "matched": labels.get("matched", 0),
        "read_in_box": labels.get("read-in-box", 0),
        "corrected": labels.get("corrected", 0),
        "dropped": sum(dropped.values()),
        "dropped_drawn_from_known_label": drawn,
        "in_gt_text_with_true_string": in_gt,
        "in_gt_text_share": round(in_gt / expected, 4) if expected else None,
        "suspicious": {
            note.removeprefix(SUSPICIOUS_NOTE): n
            for note, n in notes.items()
            if note.startswith(SUSPICIOUS_NOTE)
        },
        "lines_without_known_labels": {
            "kept": notes[LINE_KEPT_NOTE],
            "dropped": sum(n for note, n in notes.items() if note.startswith(LINE_DROPPED_NOTE)),
        },
    }


def _log_report(report: dict[str, object], path: Path) -> None:
    suspicious = report["suspicious"]
    assert isinstance(suspicious, dict)
    flagged = ", ".join(f"{n} {reason}" for reason, n in sorted(suspicious.items(), key=lambda kv: -kv[1]))
    if report["expected"]:
        logger.info(
            "glyph labels (%d images with known labels): %d expected, %d in gt_text with the true string "
            "(%.1f%%): %d matched by OCR, %d read in their own box, %d corrected; %d dropped (%d drawn from "
            "the known label)",
            report["images_with_known_labels"],
            report["expected"],
            report["in_gt_text_with_true_string"],
            100 * float(report["in_gt_text_share"] or 0),  # type: ignore[arg-type]
            report["matched"],
            report["read_in_box"],
            report["corrected"],
            report["dropped"],
            report["dropped_drawn_from_known_label"],
        )
    lines = report["lines_without_known_labels"]
    assert isinstance(lines, dict)
    if lines["kept"] or lines["dropped"]:
        logger.info(
            "glyph lines without known labels: %d kept at or above --min-confidence, %d dropped below it",
            lines["kept"],
            lines["dropped"],
        )
    logger.info("glyph suspicious OCR reads: %s (report: %s)", flagged or "none", path)


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
    # No text-line orientation model ships for paddleocr (skins are upright anyway); rapidocr's does.
    ocr = OcrConfig(
        backend=args.ocr_backend,
        det_limit_side_len=args.det_limit_side_len,
        use_angle_cls=args.ocr_backend == "rapidocr",
    )
    labels = _labels_path(args.labels, args.input)
    sha = None if labels is None else hashlib.sha256(labels.read_bytes()).hexdigest()
    if labels is not None:
        logger.info("known labels: %s (%d images)", labels, len(read_labels(labels)))  # a bad file fails here
    settings = GlyphSettings(
        args.min_confidence,
        background,
        font,
        ocr,
        not args.keep_background,
        args.convert,
        None if labels is None else str(labels),
        sha,
        args.dropped,
    )
    summary: BuildSummary = build_from_args(args, "glyph", glyph_builder, settings)
    report = label_report(summary.notes)
    atomic_write_json(args.out / REPORT_FILE, report)
    _log_report(report, args.out / REPORT_FILE)
    return exit_status(summary, args.allow_failures)


def _labels_path(value: str, source: Path) -> Path | None:
    """``--labels``: ``none``, ``auto`` (the input dataset's own labels.jsonl, if any) or a file."""
    if value == "none":
        return None
    if value == "auto":
        candidate = input_root(source) / LABELS_FILE
        return candidate.resolve() if candidate.is_file() else None
    path = Path(value)
    if not path.is_file():
        raise FileNotFoundError(f"--labels {value} does not exist (a labels.jsonl; or auto, or none)")
    return path.resolve()


def add_cli(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``python -m data glyph``."""
    parser = sub.add_parser(
        "glyph",
        help="OCR the targets and render their labels as the condition (box, gt_text)",
        description="Run OCR over every image. With known labels (--labels), match OCR to each label's "
        "key and write the true strings; without, keep lines at or above --min-confidence. Draw the kept "
        "texts with a CJK font into their boxes on the background, write box/gt_text into the records, "
        f"and report expected/matched/corrected/dropped/suspicious counts ({REPORT_FILE}).",
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
    parser.add_argument(
        "--ocr-backend",
        choices=["rapidocr", "paddleocr"],
        default="rapidocr",
        help="rapidocr (default) or paddleocr (its own venv: make install-paddle)",
    )
    parser.add_argument(
        "--labels",
        default="auto",
        metavar="auto|none|FILE",
        help=f"true labels and their key rectangles ({LABELS_FILE}, see data/known_labels.py): the true "
        "strings are written and OCR only locates and checks them. auto (default): the input dataset's "
        f"own {LABELS_FILE} (compose writes it for generated skins; builders carry it along)",
    )
    parser.add_argument(
        "--dropped",
        choices=(*DROPPED_POLICIES, "auto"),
        default="auto",
        help="what the condition shows for a label OCR could not read: draw the known label anyway, black "
        "out its box, or keep the background (e.g. the label's faint Canny outline). auto (default): "
        "draw with known labels, keep without",
    )
    parser.set_defaults(func=_cmd_glyph, ray_actor_pool=True)  # OCR loaded once per actor on Ray
