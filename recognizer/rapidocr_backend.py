"""The default OCR backend: rapidocr running PP-OCR ONNX models on onnxruntime.

Model paths are always passed explicitly (the shipped ones unless configured), so rapidocr never
falls back to downloading a model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from PIL import Image

from recognizer.ocr import OcrConfig, OcrLine, OcrModelNotFoundError, to_rgb_array
from recognizer.shipped_models import Task, require_model_file, shipped_model_path

__all__ = ["RapidOcrBackend"]

logger = logging.getLogger(__name__)


def _resolve(configured: Path | None, task: Task) -> Path:
    return shipped_model_path(task) if configured is None else require_model_file(Path(configured), task)


def _has_character_metadata(model: Path) -> bool:
    """PP-OCR rec ONNX exports carry their charset as metadata; without it rapidocr would download one."""
    proto = onnx.load(str(model), load_external_data=False)
    return any(prop.key == "character" for prop in proto.metadata_props)


class RapidOcrBackend:
    """``OcrBackend`` over ``rapidocr.RapidOCR``; reads images one at a time (rapidocr is per-image)."""

    def __init__(self, config: OcrConfig) -> None:
        from rapidocr import RapidOCR

        self._use_cls = config.use_angle_cls
        det = _resolve(config.det_model, "det")
        rec = _resolve(config.rec_model, "rec")
        params: dict[str, Any] = {
            "Global.log_level": "warning",
            "Global.use_cls": config.use_angle_cls,
            "Global.text_score": config.text_score,
            "Det.model_path": str(det),
            "Det.box_thresh": config.box_thresh,
            "Det.limit_side_len": config.det_limit_side_len,
            "Rec.model_path": str(rec),
        }
        if config.use_angle_cls:
            params["Cls.model_path"] = str(_resolve(config.cls_model, "cls"))
        if config.rec_char_dict is not None:
            params["Rec.rec_keys_path"] = str(
                require_model_file(Path(config.rec_char_dict), "rec", "OcrConfig.rec_char_dict")
            )
        elif config.rec_model is not None and not _has_character_metadata(rec):
            raise OcrModelNotFoundError(
                f"rec model {rec} has no 'character' metadata, so its character list is unknown; set "
                "OcrConfig.rec_char_dict to the model's dictionary file (one character per line)"
            )
        if config.num_threads is not None:
            params["EngineConfig.onnxruntime.intra_op_num_threads"] = config.num_threads
            params["EngineConfig.onnxruntime.inter_op_num_threads"] = 1
        logger.info("rapidocr with det=%s rec=%s cls=%s", det, rec, params.get("Cls.model_path"))
        self._engine = RapidOCR(params=params)

    def read(self, images: Sequence[np.ndarray | Image.Image]) -> list[list[OcrLine]]:
        return [self._read_one(to_rgb_array(image)) for image in images]

    def recognize(self, lines: Sequence[np.ndarray]) -> list[tuple[str, float]]:
        results = []
        for line in lines:
            bgr = np.ascontiguousarray(to_rgb_array(line)[:, :, ::-1])
            output = self._engine(bgr, use_det=False, use_cls=False, use_rec=True)
            texts, scores = output.txts or ("",), output.scores or (0.0,)
            results.append((str(texts[0]), float(scores[0])))
        return results

    def _read_one(self, rgb: np.ndarray) -> list[OcrLine]:
        # rapidocr treats arrays as BGR (cv2 convention), which is also what PP-OCR was trained on.
        # The steps are passed every time: rapidocr keeps the last call's flags, so after a
        # recognition-only call a plain call would skip detection.
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        result = self._engine(bgr, use_det=True, use_cls=self._use_cls, use_rec=True)
        if result.boxes is None or result.txts is None or result.scores is None:
            return []
        return [
            OcrLine(
                polygon=tuple((float(x), float(y)) for x, y in box),
                text=text,
                confidence=float(score),
            )
            for box, text, score in zip(result.boxes, result.txts, result.scores, strict=True)
        ]
