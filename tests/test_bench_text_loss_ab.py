"""The text-loss A/B's task (bench/bench_text_loss_ab.py): held-out label pairs are never trained on, the
unseen set's labels and characters occur in no training key, the records are valid glyph records, and the
project's OCR reads every target label (the A/B's ceiling)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from bench_scripts import load_bench_script
from PIL import Image

from data.records import read_records, resolve_path
from inference.metrics import TextScores, read_text_scores
from recognizer.backends import load_ocr

ab = load_bench_script("bench_text_loss_ab")


def _check_records(jsonl: Path, pairs: list[tuple[str, str]]) -> None:
    """Valid glyph records whose every target label the project's OCR reads."""
    ocr = load_ocr()
    for record, (english, chinese) in zip(read_records(jsonl), pairs, strict=True):
        assert record.gt_text == (english, chinese)
        boxes = np.asarray(record.box)
        assert boxes.min() >= 0 and boxes.max() <= ab.RESOLUTION, "labels inside the key image"
        with Image.open(resolve_path(jsonl.parent, record.conditioning_image)) as condition:
            glyphs = np.asarray(condition.convert("L"))
        assert glyphs.max() > 200 and (glyphs > 128).mean() < 0.3, "white labels on black"
        with Image.open(resolve_path(jsonl.parent, record.image)) as image:
            target = image.convert("RGB")
        read, scores = read_text_scores(ocr, target, record.box, record.gt_text, target.size)
        assert scores.sentence_accuracy == 1, f"read {read} for {record.gt_text}"


def test_held_out_pairs_are_new_and_every_label_is_readable(tmp_path: Path) -> None:
    train, held_out = ab.label_pairs(seed=0)
    assert len(held_out) == ab.HELD_OUT and not set(train) & set(held_out)
    assert len(train) + len(held_out) == len(set(train + held_out)), "no pair twice"
    _check_records(ab.build_records(tmp_path, held_out[:3]), held_out[:3])


def test_unseen_labels_and_their_characters_never_occur_in_training(tmp_path: Path) -> None:
    train, held_out = ab.label_pairs(seed=0)
    trained_words = {label for pair in train for label in pair}
    trained_characters = set("".join(trained_words))
    assert {label for pair in held_out for label in pair} <= trained_words, "the known set: trained labels"
    unseen = list(ab.UNSEEN_LABELS)
    assert len(unseen) == len(set(unseen)) >= 8
    for english, chinese in unseen:
        assert english not in trained_words and chinese not in trained_words
        assert not set(english + chinese) & trained_characters, f"{english} {chinese} share a character"
    _check_records(ab.build_records(tmp_path, unseen), unseen)


def test_the_table_reports_each_held_out_set_and_reader_apart() -> None:
    seeds, readers = [0, 1], ["rapidocr", "tesseract"]
    args = type("Args", (), {"seeds": seeds, "steps": 10, "sample_seeds": [0], "reader": readers})()
    score = {reader: TextScores(16, 0.5 if reader == "rapidocr" else 0.25, 0.75) for reader in readers}
    arms = [ab.Arm("diffusion loss only", "plain", []), ab.Arm("+ text loss", "text_loss", [])]
    for arm in arms:
        arm.results = {(held_out, s): ab.ArmResult(score, 20.0) for held_out in ab.SETS for s in seeds}
    references = {held_out: {"target images": score} for held_out in ab.SETS}
    table = ab.render(arms, references, args).splitlines()
    rows = [line for line in table if line.startswith(f"| {ab.UNSEEN} | tesseract |")]
    assert len(rows) == 3 and "| + text loss | 0.250 | 0.250 | 0.250 ± 0.000 |" in rows[1]
    assert len([line for line in table if line.startswith(f"| {ab.KNOWN} | rapidocr |")]) == 3
    assert rows[2].startswith(f"| {ab.UNSEEN} | tesseract | target images (reference) |")
    assert len({line.count("|") for line in table[2:]}) == 1, "every row has every column"


@pytest.mark.skipif(ab.tesseract_problem() is not None, reason="Tesseract is not installed here")
def test_tesseract_is_a_default_reader_where_installed() -> None:
    assert ab.default_readers() == ["rapidocr", "tesseract"]
