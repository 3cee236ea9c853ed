"""Evaluation metrics on constructed cases with known answers."""

from __future__ import annotations

import pytest

from inference.metrics import text_scores


def test_text_scores_on_known_strings() -> None:
    scores = text_scores(["Shift 上档", "Spac", "确定"], ["Shift 上档", "Space", "删除"])
    assert scores.lines == 3
    assert scores.sentence_accuracy == pytest.approx(1 / 3)
    # 1.0 for the exact line, 1 - 1/5 for one missing letter, 0 for two wrong characters out of two
    assert scores.normalized_edit_distance == pytest.approx((1.0 + 0.8 + 0.0) / 3)


def test_text_scores_need_one_reading_per_line() -> None:
    with pytest.raises(ValueError, match="2 read lines for 1"):
        text_scores(["a", "b"], ["a"])
