"""Locate the PP-OCR ONNX models that the ``rapidocr`` wheel ships, and check model files exist.

Only the shipped models work offline: rapidocr would otherwise try to download its defaults. We
therefore always hand rapidocr explicit paths, resolved here.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal

from recognizer.ocr import OcrModelNotFoundError

__all__ = ["SHIPPED_MODEL_FILES", "require_model_file", "shipped_model_path"]

Task = Literal["det", "rec", "cls"]

SHIPPED_MODEL_FILES: dict[Task, str] = {
    "det": "PP-OCRv6_det_small.onnx",
    "rec": "PP-OCRv6_rec_small.onnx",
    "cls": "ch_ppocr_mobile_v2.0_cls_mobile.onnx",
}
"""File names inside ``rapidocr/models/`` of the rapidocr 3.10 wheel (the version pinned in pyproject)."""

_CONFIG_FIELD: dict[Task, str] = {"det": "det_model", "rec": "rec_model", "cls": "cls_model"}


def _rapidocr_models_dir() -> Path:
    """Find the models folder without importing rapidocr (its import is slow and logs)."""
    spec = importlib.util.find_spec("rapidocr")
    if spec is None or spec.origin is None:
        raise OcrModelNotFoundError(
            "the 'rapidocr' package is not installed, so its shipped PP-OCR models are unavailable; "
            "install it with `pip install -c constraints.txt 'rapidocr>=3.10,<4'` (a skinforge dependency)"
        )
    return Path(spec.origin).parent / "models"


def require_model_file(path: Path, task: Task, setting: str | None = None) -> Path:
    """Return ``path`` if it is a file, else raise an error naming it and the setting to fix.

    ``setting`` is the config field the path came from (default ``OcrConfig.<task>_model``).
    """
    if path.is_file():
        return path
    setting = setting or f"OcrConfig.{_CONFIG_FIELD[task]}"
    raise OcrModelNotFoundError(
        f"OCR {task} model file not found: {path}. Point {setting} at an existing file, or set it to "
        f"None to use the {task} model shipped in the rapidocr wheel ({SHIPPED_MODEL_FILES[task]})."
    )


def shipped_model_path(task: Task) -> Path:
    """Path of the model rapidocr ships for ``task``; raises if the installed wheel lacks it."""
    path = _rapidocr_models_dir() / SHIPPED_MODEL_FILES[task]
    if not path.is_file():
        raise OcrModelNotFoundError(
            f"the rapidocr wheel's shipped {task} model is missing: {path}. Reinstall it with "
            f"`pip install -c constraints.txt --force-reinstall 'rapidocr>=3.10,<4'`, or set "
            f"OcrConfig.{_CONFIG_FIELD[task]} to a local {task} model file."
        )
    return path
