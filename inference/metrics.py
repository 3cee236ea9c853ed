"""Evaluation metrics of generated skins: how well the key labels read (OCR) and how well the output
follows the control edges.

Text metrics (native) follow the idea of AnyText's evaluation: each box is read on its own, and a line
counts as correct only on an exact match (sentence accuracy); normalised edit distance is 1 -
Levenshtein / max length over characters. Over a checkpoint both are pooled over all lines, as AnyText
reports them. Unlike AnyText's code, lines are not cut to 20 characters, every character counts as
itself, the crop is a perspective warp of the box and lines turn at h >= 1.5 w.

Edge adherence (the project's own, "native" protocol): Canny edges of the output against the
condition's edges, scored per pixel with F1 and with SSIM, averaged over images. The detector is the one
that made the dataset's conditions when ``data canny`` recorded it (see inference.dataset_edges), so a
dataset's own targets score 1.0; otherwise cv2.Canny 100/200 (the ControlNet annotator's). A one-pixel
shift of a thin edge scores 0 in the exact F1, so a tolerant F1 also counts an edge pixel as found when
the other map has one within ``tolerance`` pixels (the boundary-matching idea of BSDS-style edge
benchmarks). ControlNet++'s and AnyText's own protocols are in inference.controlnetpp and
inference.anytext.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein
from scipy.optimize import linear_sum_assignment
from skimage.metrics import structural_similarity

from data.canny import CannySettings, canny_edges
from inference import controlnetpp
from recognizer.box_reading import read_boxes
from recognizer.ocr import OcrBackend

__all__ = [
    "EdgeScores",
    "EdgeSettings",
    "TextScores",
    "aggregate",
    "canny",
    "condition_edges",
    "edge_f1",
    "edge_scores",
    "edge_ssim",
    "read_text_scores",
    "text_scores",
    "unordered_text_scores",
]


# --------------------------------------------------------------------------- text


@dataclass(frozen=True)
class TextScores:
    lines: int
    sentence_accuracy: float
    """Fraction of lines read exactly as their ground truth."""
    normalized_edit_distance: float
    """Mean over lines of 1 - Levenshtein(read, truth) / max(len(read), len(truth)); 1 is perfect."""

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {
            f"{prefix}lines": float(self.lines),
            f"{prefix}sentence_accuracy": self.sentence_accuracy,
            f"{prefix}normalized_edit_distance": self.normalized_edit_distance,
        }


def text_scores(read: Sequence[str], truth: Sequence[str]) -> TextScores:
    """Scores of `read[i]` against `truth[i]`; both empty counts as a perfect line."""
    if len(read) != len(truth):
        raise ValueError(f"{len(read)} read lines for {len(truth)} ground-truth lines")
    if not truth:
        return TextScores(0, 0.0, 0.0)
    exact = sum(r == t for r, t in zip(read, truth, strict=True))
    similarity = sum(Levenshtein.normalized_similarity(r, t) for r, t in zip(read, truth, strict=True))
    return TextScores(len(truth), exact / len(truth), similarity / len(truth))


def unordered_text_scores(read: Sequence[str], truth: Sequence[str]) -> TextScores:
    """Scores of a whole image's OCR lines against its labels when neither order nor places are known.

    Each label is paired with at most one line read and each line with at most one label, the pairs
    chosen to maximise the summed similarity (Hungarian assignment); a label left without a line scores
    0. Lines read beyond the labels cost nothing here: count them separately where noise matters.
    """
    if not truth:
        return TextScores(0, 0.0, 0.0)
    if not read:
        return TextScores(len(truth), 0.0, 0.0)
    similarity = process.cdist(truth, read, scorer=Levenshtein.normalized_similarity, dtype=np.float64)
    rows, cols = linear_sum_assignment(similarity, maximize=True)
    exact = sum(truth[r] == read[c] for r, c in zip(rows, cols, strict=True))
    return TextScores(len(truth), exact / len(truth), float(similarity[rows, cols].sum()) / len(truth))


def read_text_scores(
    backend: OcrBackend,
    image: Image.Image,
    boxes: Sequence[Sequence[Sequence[float]]],
    truth: Sequence[str],
    box_space: tuple[int, int],
) -> tuple[list[str], TextScores]:
    """Read each box of ``image`` and score it against ``truth``.

    ``boxes`` are in the pixels of an image of size ``box_space`` (the condition, whose layout the
    output follows); they are scaled to ``image``'s size first, as the pipeline scales the condition.
    A reader that picks its language per line is told each line's script from ``truth``.
    """
    scale = np.array([image.width / box_space[0], image.height / box_space[1]])
    polygons = np.asarray(boxes, dtype=np.float64).reshape(-1, 4, 2) * scale
    read = read_boxes(backend, image, polygons, truth)
    return read, text_scores(read, truth)


# --------------------------------------------------------------------------- edges


@dataclass(frozen=True)
class EdgeSettings:
    """How edge maps are made and compared.

    ``low``/``high`` are cv2.Canny's hysteresis thresholds, ``blur`` a Gaussian kernel first (0: none) and
    ``gray`` runs on luma instead of the colour image: exactly ``data canny``'s detector
    (data.canny.canny_edges). The defaults, 100/200 on colour, are the ControlNet annotator's; a
    dataset built by ``data canny`` brings its own (``origin`` says where the values came from).
    ``condition_is_edges`` reads the condition as an edge map (white edges, thresholded at mid-grey);
    False runs Canny on it too (for non-edge conditions).
    """

    low: int = 100
    high: int = 200
    tolerance: int = 2
    condition_is_edges: bool = True
    blur: int = 0
    gray: bool = False
    origin: str = "default"

    def __post_init__(self) -> None:
        if not 0 <= self.low <= self.high:
            raise ValueError(f"need 0 <= low <= high Canny thresholds, got {self.low} and {self.high}")
        if self.tolerance < 0:
            raise ValueError(f"edge tolerance must be >= 0 pixels, got {self.tolerance}")
        if self.blur and (self.blur < 3 or self.blur % 2 == 0):
            raise ValueError(f"Canny blur must be 0 (off) or an odd kernel size >= 3, got {self.blur}")


@dataclass(frozen=True)
class EdgeScores:
    f1: float
    """Exact per-pixel F1 (ControlNet++'s protocol)."""
    f1_tolerant: float
    """F1 where an edge pixel counts as matched when the other map has one within the tolerance."""
    ssim: float
    """SSIM of the two binary edge maps."""


def canny(image: Image.Image, low: int, high: int, blur: int = 0, gray: bool = False) -> np.ndarray:
    """Boolean Canny edge map of an image, computed by ``data canny``'s own function (colour: OpenCV
    takes the strongest gradient of the channels)."""
    bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
    return canny_edges(bgr, CannySettings(low=low, high=high, blur=blur, gray=gray)) > 0


def condition_edges(condition: Image.Image, size: tuple[int, int], settings: EdgeSettings) -> np.ndarray:
    """The condition's edges at the output's ``size`` (the pipeline stretches the condition to it)."""
    if condition.size != size:
        resample = Image.Resampling.NEAREST if settings.condition_is_edges else Image.Resampling.BILINEAR
        condition = condition.resize(size, resample)
    if settings.condition_is_edges:
        return np.asarray(condition.convert("L")) >= 128
    return canny(condition, settings.low, settings.high, settings.blur, settings.gray)


def _near(edges: np.ndarray, tolerance: int) -> np.ndarray:
    """Pixels within ``tolerance`` of an edge pixel (a disk dilation)."""
    if tolerance == 0:
        return edges
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * tolerance + 1, 2 * tolerance + 1))
    return cv2.dilate(edges.astype(np.uint8), kernel) > 0


def edge_f1(pred: np.ndarray, target: np.ndarray, tolerance: int = 0) -> float:
    """F1 of edge map ``pred`` against ``target``; two empty maps agree perfectly (1.0)."""
    if pred.shape != target.shape:
        raise ValueError(f"edge maps differ in shape: {pred.shape} and {target.shape}")
    n_pred, n_target = int(pred.sum()), int(target.sum())
    if n_pred == 0 or n_target == 0:
        return float(n_pred == n_target)
    precision = float((pred & _near(target, tolerance)).sum()) / n_pred
    recall = float((target & _near(pred, tolerance)).sum()) / n_target
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def edge_ssim(pred: np.ndarray, target: np.ndarray) -> float:
    """SSIM of two boolean edge maps (window shrunk for images under 7 px)."""
    window = min(7, *pred.shape)
    window -= 1 - window % 2  # odd
    return float(
        structural_similarity(
            pred.astype(np.float64), target.astype(np.float64), data_range=1.0, win_size=window
        )
    )


def edge_scores(image: Image.Image, condition: Image.Image, settings: EdgeSettings) -> EdgeScores:
    """Edge adherence of a generated ``image`` to its ``condition``."""
    pred = canny(image, settings.low, settings.high, settings.blur, settings.gray)
    target = condition_edges(condition, image.size, settings)
    return EdgeScores(
        f1=edge_f1(pred, target),
        f1_tolerant=edge_f1(pred, target, settings.tolerance),
        ssim=edge_ssim(pred, target),
    )


# --------------------------------------------------------------------------- aggregation

_MEAN_KEYS = ("edge_f1", "edge_f1_tolerant", "edge_ssim", "clip_score")
_POOLED_LINES = (
    ("text_lines", ("sentence_accuracy", "normalized_edit_distance")),
    ("anytext_lines", ("anytext_sentence_accuracy", "anytext_normalized_edit_distance")),
)


def _pool_lines(rows: list[Mapping[str, object]], count: str, keys: Sequence[str]) -> dict[str, float | None]:
    """Per-line means over all lines of all rows: each row's means weighted by its line count."""
    lines = [int(row.get(count) or 0) for row in rows]  # type: ignore[call-overload]
    total = sum(lines)
    pooled: dict[str, float | None] = {}
    for key in keys:
        weighted = sum(float(row[key]) * n for row, n in zip(rows, lines, strict=True) if n)  # type: ignore[arg-type]
        pooled[key] = weighted / total if total else None
    return pooled


def _reader_lines(rows: list[Mapping[str, object]]) -> list[tuple[str, tuple[str, str]]]:
    """The pooled-line keys of each named OCR reader in the rows (``<reader>/lines`` and its scores)."""
    readers = dict.fromkeys(key[: -len("/lines")] for row in rows for key in row if key.endswith("/lines"))
    return [(f"{r}/lines", (f"{r}/sentence_accuracy", f"{r}/normalized_edit_distance")) for r in readers]


def aggregate(rows: Iterable[Mapping[str, object]]) -> dict[str, float | int | None]:
    """One checkpoint's summary of its per-image rows.

    Native edge and CLIP scores are means over images; text scores (native, each named reader's and
    AnyText's) are pooled over all lines, as AnyText reports them; ControlNet++'s edge scores pool the
    seeds of each record, then average records (inference.controlnetpp.summarize). A metric no image has
    is None.
    """
    rows = list(rows)
    summary: dict[str, float | int | None] = {"images": len(rows)}
    for key in _MEAN_KEYS:
        values = [float(row[key]) for row in rows if row.get(key) is not None]  # type: ignore[arg-type]
        summary[key] = sum(values) / len(values) if values else None
    for count, keys in (*_POOLED_LINES, *_reader_lines(rows)):
        summary[count] = sum(int(row.get(count) or 0) for row in rows)  # type: ignore[call-overload]
        summary |= _pool_lines(rows, count, keys)
    summary |= controlnetpp.summarize(rows)
    return summary
