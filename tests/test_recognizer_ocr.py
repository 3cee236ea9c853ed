"""OCR backends on a synthetic keyboard with Chinese and English labels (real models, offline)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from recognizer.backends import load_ocr
from recognizer.box_reading import read_boxes
from recognizer.ocr import OcrConfig, OcrLine, OcrModelNotFoundError
from recognizer.synthetic import LabelledImage, render_keyboard


@pytest.fixture(scope="module")
def keyboard() -> LabelledImage:
    return render_keyboard()


def _found(lines: list[OcrLine], keyboard: LabelledImage) -> list[str]:
    """Expected labels that some OCR line reads exactly, with its centre inside the label's box."""
    found = []
    for box, text in zip(keyboard.boxes, keyboard.texts, strict=True):
        (left, top), (right, bottom) = box.min(axis=0), box.max(axis=0)
        for line in lines:
            cx, cy = np.mean(line.polygon, axis=0)
            if line.text == text and left <= cx <= right and top <= cy <= bottom:
                found.append(text)
                break
    return found


def _signed_area(polygon: tuple[tuple[float, float], ...]) -> float:
    """Shoelace area; positive for clockwise order in image coordinates (y pointing down)."""
    xs, ys = np.asarray(polygon).T
    return 0.5 * float(np.sum(xs * np.roll(ys, -1) - np.roll(xs, -1) * ys))


def test_rapidocr_reads_chinese_and_english_labels(keyboard: LabelledImage) -> None:
    ocr = load_ocr(OcrConfig(num_threads=2))
    from_pil, from_array = ocr.read([keyboard.image, np.asarray(keyboard.image)])

    assert from_pil == from_array  # PIL images and RGB arrays are the same input
    found = _found(from_pil, keyboard)
    chinese = [t for t in keyboard.texts if not t.isascii()]
    english = [t for t in keyboard.texts if t.isascii()]
    assert len(set(found) & set(chinese)) >= len(chinese) - 1, f"read {found}"
    assert len(set(found) & set(english)) >= len(english) - 1, f"read {found}"
    for line in from_pil:
        assert len(line.polygon) == 4
        assert _signed_area(line.polygon) > 0, "polygon must run clockwise from the top-left"
        assert 0.0 <= line.confidence <= 1.0


def test_rapidocr_detects_again_after_a_recognition_only_call(keyboard: LabelledImage) -> None:
    """rapidocr keeps a call's step flags; a read after recognize() must still detect (it did not)."""
    ocr = load_ocr(OcrConfig(num_threads=1))
    before = ocr.read([keyboard.image])
    (x0, y0), (x1, y1) = keyboard.boxes[0].min(axis=0), keyboard.boxes[0].max(axis=0)
    crop = np.asarray(keyboard.image)[int(y0) : int(y1), int(x0) : int(x1)]
    assert ocr.recognize([crop])[0][0] == keyboard.texts[0]
    assert ocr.read([keyboard.image]) == before


def test_rapidocr_empty_batch_and_blank_image() -> None:
    ocr = load_ocr(OcrConfig(use_angle_cls=False, num_threads=2))
    assert ocr.read([]) == []
    assert ocr.read([np.full((64, 64, 3), 255, dtype=np.uint8)]) == [[]]


def test_missing_model_file_names_the_file_and_the_setting(tmp_path: Path) -> None:
    missing = tmp_path / "nope_det.onnx"
    with pytest.raises(OcrModelNotFoundError) as err:
        load_ocr(OcrConfig(det_model=missing))
    assert str(missing) in str(err.value)
    assert "OcrConfig.det_model" in str(err.value)


def test_rec_model_without_charset_asks_for_the_dictionary(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 48, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 48, 8])
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y]))
    path = tmp_path / "rec_without_metadata.onnx"
    onnx.save(model, str(path))
    with pytest.raises(OcrModelNotFoundError, match="rec_char_dict"):
        load_ocr(OcrConfig(rec_model=path))


def test_paddle_model_folders_are_checked_before_paddle_is_imported(tmp_path: Path) -> None:
    with pytest.raises(OcrModelNotFoundError, match=r"OcrConfig\.det_model"):
        load_ocr(OcrConfig(backend="paddleocr", det_model=tmp_path / "missing_det", use_angle_cls=False))


@pytest.mark.paddle
def test_paddleocr_reads_labels(keyboard: LabelledImage) -> None:
    ocr = load_ocr(OcrConfig(backend="paddleocr", use_angle_cls=False, num_threads=2))
    (lines,) = ocr.read([keyboard.image])
    assert len(_found(lines, keyboard)) >= len(keyboard.texts) - 2, f"read {[line.text for line in lines]}"
    read = read_boxes(ocr, keyboard.image, keyboard.boxes)
    assert sum(text == truth for text, truth in zip(read, keyboard.texts, strict=True)) >= len(read) - 2


def test_read_boxes_reads_each_known_box_alone(keyboard: LabelledImage) -> None:
    ocr = load_ocr(OcrConfig(num_threads=2))
    assert read_boxes(ocr, keyboard.image, keyboard.boxes) == keyboard.texts
    assert read_boxes(ocr, keyboard.image, []) == []
