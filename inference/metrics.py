"""Evaluation metrics of generated skins: how well the key labels read (OCR) and how well the output
follows the control edges.

Text metrics follow AnyText's evaluation: each box is read on its own, and a line counts as correct only
on an exact match (sentence accuracy); normalised edit distance is 1 - Levenshtein / max length. Over a
checkpoint both are pooled over all lines, as AnyText reports them.

Edge adherence follows ControlNet++: Canny edges of the output against the condition's edges, scored
per pixel with F1 (their protocol is exact pixel matches) and with SSIM. A one-pixel shift of a thin
edge scores 0 in the exact F1, so a tolerant F1 also counts an edge pixel as found when the other map
has one within ``tolerance`` pixels (the boundary-matching idea of BSDS-style edge benchmarks).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image
from rapidfuzz.distance import Levenshtein
from skimage.metrics import structural_similarity

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
    """
    scale = np.array([image.width / box_space[0], image.height / box_space[1]])
    polygons = np.asarray(boxes, dtype=np.float64).reshape(-1, 4, 2) * scale
    read = read_boxes(backend, image, polygons)
    return read, text_scores(read, truth)


# --------------------------------------------------------------------------- edges


@dataclass(frozen=True)
class EdgeSettings:
    """How edge maps are made and compared.

    ``low``/``high`` are Canny's hysteresis thresholds (100/200: the ControlNet annotator's, which
    ControlNet++ evaluates with). ``condition_is_edges`` reads the condition as an edge map (white
    edges, thresholded at mid-grey); False runs Canny on it too (for non-edge conditions).
    """

    low: int = 100
    high: int = 200
    tolerance: int = 2
    condition_is_edges: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.low <= self.high:
            raise ValueError(f"need 0 <= low <= high Canny thresholds, got {self.low} and {self.high}")
        if self.tolerance < 0:
            raise ValueError(f"edge tolerance must be >= 0 pixels, got {self.tolerance}")


@dataclass(frozen=True)
class EdgeScores:
    f1: float
    """Exact per-pixel F1 (ControlNet++'s protocol)."""
    f1_tolerant: float
    """F1 where an edge pixel counts as matched when the other map has one within the tolerance."""
    ssim: float
    """SSIM of the two binary edge maps."""


def canny(image: Image.Image, low: int, high: int) -> np.ndarray:
    """Boolean Canny edge map of an image (colour: OpenCV takes the strongest gradient of the channels)."""
    return cv2.Canny(np.asarray(image.convert("RGB")), low, high) > 0


def condition_edges(condition: Image.Image, size: tuple[int, int], settings: EdgeSettings) -> np.ndarray:
    """The condition's edges at the output's ``size`` (the pipeline stretches the condition to it)."""
    if condition.size != size:
        resample = Image.Resampling.NEAREST if settings.condition_is_edges else Image.Resampling.BILINEAR
        condition = condition.resize(size, resample)
    if settings.condition_is_edges:
        return np.asarray(condition.convert("L")) >= 128
    return canny(condition, settings.low, settings.high)


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
    pred = canny(image, settings.low, settings.high)
    target = condition_edges(condition, image.size, settings)
    return EdgeScores(
        f1=edge_f1(pred, target),
        f1_tolerant=edge_f1(pred, target, settings.tolerance),
        ssim=edge_ssim(pred, target),
    )


# --------------------------------------------------------------------------- aggregation

_MEAN_KEYS = ("edge_f1", "edge_f1_tolerant", "edge_ssim", "clip_score")
_LINE_KEYS = ("sentence_accuracy", "normalized_edit_distance")


def aggregate(rows: Iterable[Mapping[str, object]]) -> dict[str, float | int | None]:
    """One checkpoint's summary of its per-image rows.

    Edge and CLIP scores are means over images; text scores are pooled over all lines (weighted by each
    image's ``text_lines``), as AnyText reports them. A metric no image has is None.
    """
    rows = list(rows)
    summary: dict[str, float | int | None] = {"images": len(rows)}
    for key in _MEAN_KEYS:
        values = [float(row[key]) for row in rows if row.get(key) is not None]  # type: ignore[arg-type]
        summary[key] = sum(values) / len(values) if values else None
    lines = [int(row.get("text_lines") or 0) for row in rows]  # type: ignore[call-overload]
    summary["text_lines"] = sum(lines)
    for key in _LINE_KEYS:
        weighted = sum(float(row[key]) * n for row, n in zip(rows, lines, strict=True) if n)  # type: ignore[arg-type]
        summary[key] = weighted / sum(lines) if sum(lines) else None
    return summary
