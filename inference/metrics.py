"""Evaluation metrics of generated skins: how well the key labels read (OCR) and, later, edge adherence.

Text metrics follow AnyText's evaluation: each box is read on its own, and a line counts as correct only
on an exact match (sentence accuracy); normalised edit distance is 1 - Levenshtein / max length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rapidfuzz.distance import Levenshtein

__all__ = ["TextScores", "text_scores"]


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
