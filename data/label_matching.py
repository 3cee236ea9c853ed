"""Match OCR lines to known labels, keep the true strings, and name what OCR got wrong.

OCR on keyboard skins misses single letters, reads "O" as "0", cuts "@/." to "@" and merges two keys
("Shift" and "符号") into one line. With the true labels and their key rectangles known
(:mod:`data.known_labels`), each label is settled on its own, and a line is never stretched across
two keys:

1. *matched*: the page's OCR lines inside its key read exactly the label;
2. *read in its box*: otherwise the label's text box alone is recognised (no detection), and reads
   exactly the label;
3. *corrected*: something was read there, but not the label: the true string is kept, and the
   misread is flagged (digit/letter confusion, partial string, merged neighbours, other misread);
4. *dropped*: nothing was read; what the condition shows there is the :data:`DROPPED_POLICIES`
   choice (draw the known label, black the box out, or keep the background's outline).

Every OCR misread seen on the page is also counted as *suspicious* with its reason. Without known
labels, OCR lines are kept by confidence as before, and the usual confusions are flagged instead of
written silently (:func:`suspicious_line`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from data.known_labels import Box, KnownLabel
from recognizer.ocr import OcrLine

__all__ = [
    "DROPPED_POLICIES",
    "LabelOutcome",
    "Polygon",
    "box_polygon",
    "match_labels",
    "misread_reason",
    "same_text",
    "suspicious_line",
]

Polygon = tuple[tuple[float, float], ...]
Recognize = Callable[[Sequence[np.ndarray]], list[tuple[str, float]]]

DROPPED_POLICIES = ("draw", "black", "keep")
"""What the condition shows for a label OCR could not read: ``draw`` the known label into its box
(needs the known string), ``black`` out its box, or ``keep`` the background there (e.g. the faint
Canny outline of the label, so one condition mixes drawn glyphs and edges)."""

# A line counts as inside a key when at least this share of its bounding box is in the key's rectangle;
# a line with that share in two keys is two neighbours merged.
IN_RECT_SHARE = 0.2
# Padding of a known text box, as a share of its height, to look like an OCR detector's box (measured on
# generated skins: median 0.16 left/right, 0.19-0.22 top/bottom).
PAD_X, PAD_Y = 0.15, 0.2
RECOGNITION_PAD = 0.1  # crop padding for recognising one label's box (0.25 turns "@/." into "@1.")

# Shapes OCR swaps between digits and letters.
CONFUSABLE = {"0": "OoD", "1": "Il|i", "2": "Zz", "5": "Ss", "6": "Gb", "8": "B", "9": "gq"}


@dataclass(frozen=True)
class LabelOutcome:
    """How one known label was settled: ``status`` (matched, read-in-box, corrected, dropped), the
    polygon it is recorded and drawn in (None: nowhere to put it), and misread reasons seen."""

    label: KnownLabel
    status: str
    polygon: Polygon | None
    suspicious: tuple[str, ...] = ()


def same_text(read: str, truth: str) -> bool:
    """Equal up to whitespace (OCR puts spaces between CJK and Latin as it likes)."""
    return "".join(read.split()) == "".join(truth.split())


def _is_digit_letter_swap(read: str, truth: str) -> bool:
    if len(read) != len(truth):
        return False
    pairs = [(r, t) for r, t in zip(read, truth, strict=True) if r != t]
    return bool(pairs) and all(t in CONFUSABLE.get(r, "") or r in CONFUSABLE.get(t, "") for r, t in pairs)


def misread_reason(read: str, truth: str, merged: bool = False) -> str:
    """Why ``read`` is not ``truth``: merged neighbours, digit/letter confusion, partial string, other."""
    read, truth = "".join(read.split()), "".join(truth.split())
    if merged:
        return "merged neighbours"
    if _is_digit_letter_swap(read, truth):
        return "digit/letter confusion"
    if read and read in truth:
        return "partial string"
    return "other misread"


def suspicious_line(text: str) -> str | None:
    """Without known labels: the reason a kept line looks like a usual OCR confusion, else None.

    A lone digit that OCR also gives for a letter ("0" for "O", "1" for "I", "5" for "S"; on a keyboard
    the letter key is far likelier), or a word mixing such digits into letters ("5hift", "B0X"). A real
    "123", "ABC" or a lone letter is not flagged: on generated skins every flag is then a real misread.
    """
    stripped = "".join(text.split())
    if len(stripped) == 1 and stripped in CONFUSABLE:
        return "digit/letter confusion"
    digits = [c for c in stripped if c.isdigit()]
    letters = [c for c in stripped if c.isascii() and c.isalpha()]
    if digits and letters and any(c in CONFUSABLE for c in digits):
        return "digit/letter confusion"
    return None


def _bbox(polygon: Sequence[tuple[float, float]]) -> Box:
    xs, ys = [p[0] for p in polygon], [p[1] for p in polygon]
    return min(xs), min(ys), max(xs), max(ys)


def _share_inside(box: Box, rect: Box) -> float:
    width = min(box[2], rect[2]) - max(box[0], rect[0])
    height = min(box[3], rect[3]) - max(box[1], rect[1])
    area = max(1e-6, (box[2] - box[0]) * (box[3] - box[1]))
    return max(0.0, width) * max(0.0, height) / area


def box_polygon(box: Box) -> Polygon:
    """Clockwise 4-point polygon of an axis-aligned box."""
    x0, y0, x1, y1 = box
    return ((x0, y0), (x1, y0), (x1, y1), (x0, y1))


def _clip(box: Box, limit: Box) -> Box:
    return (max(box[0], limit[0]), max(box[1], limit[1]), min(box[2], limit[2]), min(box[3], limit[3]))


def _text_box(label: KnownLabel, lines: Sequence[OcrLine], size: tuple[int, int]) -> Box | None:
    """Where the label's text is: its known box padded like a detector's, else its lines' box clipped to
    its key, else None."""
    image = (0.0, 0.0, float(size[0]), float(size[1]))
    if label.box is not None:
        x0, y0, x1, y1 = label.box
        pad_x, pad_y = PAD_X * (y1 - y0), PAD_Y * (y1 - y0)
        padded = _clip((x0 - pad_x, y0 - pad_y, x1 + pad_x, y1 + pad_y), image)
        return _clip(padded, label.rect) if label.rect is not None else padded
    if not lines:
        return None
    boxes = [_bbox(line.polygon) for line in lines]
    union = (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )
    return _clip(_clip(union, label.rect), image) if label.rect is not None else _clip(union, image)


def _crop(rgb: np.ndarray, box: Box) -> np.ndarray:
    """The box plus a little margin, for recognition alone."""
    pad = RECOGNITION_PAD * (box[3] - box[1])
    height, width = rgb.shape[:2]
    x0, y0 = max(0, int(box[0] - pad)), max(0, int(box[1] - pad))
    x1, y1 = min(width, int(box[2] + pad) + 1), min(height, int(box[3] + pad) + 1)
    return np.ascontiguousarray(rgb[y0:y1, x0:x1])


def _lines_in(
    label: KnownLabel, lines: Sequence[OcrLine], known: Sequence[KnownLabel]
) -> tuple[list[OcrLine], bool]:
    """The page lines inside the label's key (left to right) and whether one of them spans two keys."""
    if label.rect is None:
        return [line for line in lines if same_text(line.text, label.text)][:1], False
    inside, merged = [], False
    for line in lines:
        box = _bbox(line.polygon)
        if _share_inside(box, label.rect) < IN_RECT_SHARE:
            continue
        inside.append(line)
        keys = sum(
            1 for other in known if other.rect is not None and _share_inside(box, other.rect) >= IN_RECT_SHARE
        )
        merged = merged or keys > 1
    return sorted(inside, key=lambda line: _bbox(line.polygon)[0]), merged


def match_labels(
    known: Sequence[KnownLabel], lines: Sequence[OcrLine], rgb: np.ndarray, recognize: Recognize
) -> list[LabelOutcome]:
    """Settle every known label of one image (see the module doc); ``rgb`` is the image, ``recognize``
    reads single-line crops (the OCR backend's recognition-only pass, called once per image)."""
    size = (rgb.shape[1], rgb.shape[0])
    outcomes: list[LabelOutcome | None] = []
    pending: list[tuple[int, list[OcrLine], bool, Box | None]] = []  # (index, lines inside, merged, box)
    for index, label in enumerate(known):
        inside, merged = _lines_in(label, lines, known)
        box = _text_box(label, inside, size)
        matched = inside and not merged and box is not None and same_text(_joined(inside), label.text)
        outcomes.append(LabelOutcome(label, "matched", box_polygon(box)) if matched and box else None)
        if not matched:
            pending.append((index, inside, merged, box))
    # recognised from the tight known box where there is one: padded twice, "@/." reads as "@1."
    crops = [_crop(rgb, known[index].box or box) for index, _, _, box in pending if box is not None]
    read_back = iter(recognize(crops) if crops else [])
    for index, inside, merged, box in pending:
        label = known[index]
        boxed = "" if box is None else next(read_back)[0]
        outcomes[index] = _settle(label, _joined(inside) if inside else None, merged, boxed, box)
    return [outcome for outcome in outcomes if outcome is not None]


def _joined(lines: Sequence[OcrLine]) -> str:
    return " ".join(line.text for line in lines)


def _settle(label: KnownLabel, page: str | None, merged: bool, boxed: str, box: Box | None) -> LabelOutcome:
    """A label the page pass did not match: read in its box, corrected, or dropped."""
    suspicious = () if page is None else (misread_reason(page, label.text, merged),)
    polygon = None if box is None else box_polygon(box)
    if boxed and same_text(boxed, label.text):
        return LabelOutcome(label, "read-in-box", polygon, suspicious)
    if (page or "").strip() or boxed.strip():
        return LabelOutcome(label, "corrected", polygon, suspicious or (misread_reason(boxed, label.text),))
    return LabelOutcome(label, "dropped", polygon)
