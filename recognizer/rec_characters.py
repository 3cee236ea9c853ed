"""The character list of the configured recognition model, without loading the model.

AnyText's edit distance compares class ids, not characters (see ``inference.anytext``), so evaluation
needs the recogniser's own dictionary: the rec ONNX's ``character`` metadata for rapidocr, or the
dictionary file when one is configured, or the rec model folder's ``inference.yml`` for paddleocr.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from recognizer.ocr import OcrConfig
from recognizer.onnx_import import read_charset
from recognizer.paddle_backend import model_config, model_folder
from recognizer.shipped_models import require_model_file, shipped_model_path

__all__ = ["rec_characters"]


def _dictionary_file(path: Path) -> list[str]:
    """One character per line, as PP-OCR reads its ``rec_char_dict_path`` (line ends stripped only)."""
    text = require_model_file(path, "rec", "OcrConfig.rec_char_dict").read_bytes().decode("utf-8")
    return [line.rstrip("\r\n") for line in text.splitlines(keepends=True)]


def rec_characters(config: OcrConfig) -> list[str]:
    """The recogniser's characters in class order (no CTC blank, no appended space)."""
    if config.rec_char_dict is not None:
        return _dictionary_file(Path(config.rec_char_dict))
    if config.backend == "paddleocr":
        folder = model_folder(config.rec_model, "rec_model")
        return list(model_config(folder)["PostProcess"]["character_dict"])
    model = shipped_model_path("rec") if config.rec_model is None else Path(config.rec_model)
    return read_charset(onnx.load(str(require_model_file(model, "rec")), load_external_data=False))
