"""The Tesseract reader (recognizer.tesseract_reader): real Tesseract on rendered key labels, offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from recognizer.backends import load_ocr
from recognizer.box_reading import crop_box, read_boxes
from recognizer.ocr import OcrConfig, ScriptAwareBackend, script_of
from recognizer.synthetic import LabelledImage, render_keyboard
from recognizer.tesseract_reader import (
    LINE_HEIGHT,
    TesseractNotFoundError,
    prepare_line,
    tessdata_folder,
    tesseract_problem,
)

PROBLEM = tesseract_problem()
needs_tesseract = pytest.mark.skipif(PROBLEM is not None, reason=f"Tesseract is not usable here: {PROBLEM}")
TESSERACT = OcrConfig(backend="tesseract")


@pytest.fixture(scope="module")
def keyboard() -> LabelledImage:
    return render_keyboard()


def test_script_of_tells_cjk_lines_from_latin_ones() -> None:
    assert [script_of(t) for t in ("Shift", "上档", "Fn 功能", "", "F1")] == [
        "latin",
        "cjk",
        "cjk",
        "latin",
        "latin",
    ]


def test_a_line_is_resized_bordered_and_made_dark_on_light(keyboard: LabelledImage) -> None:
    crop = crop_box(np.asarray(keyboard.image), keyboard.boxes[0])  # light "Shift" on a dark key
    line = np.asarray(prepare_line(crop))
    border = round(0.25 * LINE_HEIGHT)
    assert line.shape[0] == LINE_HEIGHT + 2 * border
    assert line.shape[1] == pytest.approx(crop.shape[1] * LINE_HEIGHT / crop.shape[0] + 2 * border, abs=1)
    assert line[:border].min() > 128, "the border is the (now light) background"
    assert line[border:-border].min() < 100, "the text is dark"


def test_missing_language_data_names_the_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "eng.traineddata").write_bytes(b"")
    with pytest.raises(TesseractNotFoundError, match=r"lacks chi_sim\.traineddata.*tesseract-ocr-chi-sim"):
        tessdata_folder(tmp_path)
    monkeypatch.setenv("TESSDATA_PREFIX", str(tmp_path / "nowhere"))
    assert "TESSDATA_PREFIX" in (tesseract_problem() or "")
    with pytest.raises(TesseractNotFoundError, match="TESSDATA_PREFIX"):
        load_ocr(TESSERACT)


@needs_tesseract
def test_tesseract_reads_the_known_boxes_of_english_and_chinese_labels(keyboard: LabelledImage) -> None:
    ocr = load_ocr(TESSERACT)
    assert isinstance(ocr, ScriptAwareBackend)
    read = read_boxes(ocr, keyboard.image, keyboard.boxes, keyboard.texts)
    right = [r == t for r, t in zip(read, keyboard.texts, strict=True)]
    assert sum(right) >= len(right) - 3, f"read {read}"
    chinese = [r for r, t in zip(read, keyboard.texts, strict=True) if script_of(t) == "cjk"]
    assert all(" " not in r for r in chinese), "no spaces between ideographs"
    assert read_boxes(ocr, keyboard.image, [], []) == []
    with pytest.raises(ValueError, match="2 ground-truth texts for 1 boxes"):
        read_boxes(ocr, keyboard.image, keyboard.boxes[:1], keyboard.texts[:2])


@needs_tesseract
def test_the_latin_model_reads_latin_lines_it_is_told_of() -> None:
    """The script hint matters: eng reads a Latin label that chi_sim+eng may turn into ideographs."""
    ocr = load_ocr(TESSERACT)
    keys = render_keyboard([("Space", "空格"), ("Enter", "回车")], size=(512, 256), columns=2, font_size=40)
    crops = [crop_box(np.asarray(keys.image), box) for box in keys.boxes]
    assert [t for t, _ in ocr.recognize_scripts(crops, ["latin", "cjk", "latin", "cjk"])] == keys.texts
    assert all(0.0 <= score <= 1.0 for _, score in ocr.recognize(crops))


@needs_tesseract
def test_tesseract_finds_lines_on_a_page() -> None:
    """Whole-image reading (detection by Tesseract's layout analysis) of dark text on white."""
    keys = render_keyboard([("Home", "首页")], size=(256, 256), columns=1, font_size=48)
    page = Image.fromarray(255 - np.asarray(keys.image.convert("L"))).convert("RGB")
    (lines,) = load_ocr(TESSERACT).read([page])
    assert "Home" in [line.text for line in lines]
    for line in lines:
        (left, top), _, (right, bottom), _ = line.polygon
        assert left < right and top < bottom and 0.0 <= line.confidence <= 1.0


@needs_tesseract
def test_validation_logs_each_reader_under_its_name(text_jsonl: Path, tmp_path: Path) -> None:
    """validation.readers: the ground-truth images read by both readers, the first also unprefixed."""
    from data.records import read_records
    from train.config import ModelConfig, ValidationConfig
    from train.validation import TrainingValidator

    cfg = ValidationConfig(
        every_n_steps=1, jsonl=str(text_jsonl), max_records=6, readers=["tesseract", "rapidocr"]
    )
    validator = TrainingValidator(cfg, ModelConfig(base="unused"), 128, tmp_path)
    records = read_records(text_jsonl)[:6]
    images = [Image.open(text_jsonl.parent / r.image).convert("RGB").resize((256, 256)) for r in records]
    scores = validator._text_scores(images)
    assert scores["validation/ocr_tesseract_lines"] == scores["validation/ocr_rapidocr_lines"] == 12
    assert scores["validation/ocr_rapidocr_sentence_accuracy"] >= 0.8, scores
    assert scores["validation/ocr_tesseract_sentence_accuracy"] >= 0.5, scores
    assert scores["validation/ocr_sentence_accuracy"] == scores["validation/ocr_tesseract_sentence_accuracy"]
    with pytest.raises(ValueError, match="name each OCR reader once"):
        TrainingValidator(
            ValidationConfig(readers=["rapidocr", "rapidocr"]), ModelConfig(base="unused"), 128, tmp_path
        )
