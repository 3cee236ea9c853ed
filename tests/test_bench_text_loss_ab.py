"""The text-loss A/B's task (bench/bench_text_loss_ab.py): held-out label pairs are never trained on, the
records are valid glyph records, and the project's OCR reads every target label (the A/B's ceiling)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from bench_scripts import load_bench_script
from PIL import Image

from data.records import read_records, resolve_path
from inference.metrics import read_text_scores
from recognizer.backends import load_ocr

ab = load_bench_script("bench_text_loss_ab")


def test_held_out_pairs_are_new_and_every_label_is_readable(tmp_path: Path) -> None:
    train, held_out = ab.label_pairs(seed=0)
    assert len(held_out) == ab.HELD_OUT and not set(train) & set(held_out)
    assert len(train) + len(held_out) == len(set(train + held_out)), "no pair twice"
    jsonl = ab.build_records(tmp_path, held_out[:3])
    ocr = load_ocr()
    for record, (english, chinese) in zip(read_records(jsonl), held_out[:3], strict=True):
        assert record.gt_text == (english, chinese)
        boxes = np.asarray(record.box)
        assert boxes.min() >= 0 and boxes.max() <= ab.RESOLUTION, "labels inside the key image"
        with Image.open(resolve_path(jsonl.parent, record.conditioning_image)) as condition:
            glyphs = np.asarray(condition.convert("L"))
        assert glyphs.max() > 200 and (glyphs > 128).mean() < 0.3, "white labels on black"
        with Image.open(resolve_path(jsonl.parent, record.image)) as image:
            target = image.convert("RGB")
        assert (
            read_text_scores(ocr, target, record.box, record.gt_text, target.size)[1].sentence_accuracy == 1
        )
