"""The OCR interface that dataset builders and the evaluation report code against.

A backend reads text lines (detection + recognition) from whole images. Two exist: ``rapidocr`` (the
default; its wheel ships PP-OCR ONNX models, so it works offline with no download) and ``paddleocr``
(optional extra, needs local model folders); :func:`recognizer.backends.load_ocr` builds the configured
one. Importing this module never pulls in onnxruntime or paddle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
from PIL import Image

__all__ = ["OcrBackend", "OcrConfig", "OcrLine", "OcrModelNotFoundError", "to_rgb_array"]

Point = tuple[float, float]


@dataclass(frozen=True)
class OcrLine:
    """One detected text line."""

    polygon: tuple[Point, ...]
    """Four ``(x, y)`` points in image pixels, clockwise from the top-left corner of the text."""
    text: str
    confidence: float
    """Recognition confidence in [0, 1] (mean per-character probability of the CTC decode)."""


class OcrBackend(Protocol):
    """Anything that reads text lines from RGB uint8 images."""

    def read(self, images: Sequence[np.ndarray | Image.Image]) -> list[list[OcrLine]]:
        """Return one list of lines per image, in input order."""
        ...

    def recognize(self, lines: Sequence[np.ndarray]) -> list[tuple[str, float]]:
        """Recognition only: (text, confidence) of each upright single-line RGB crop (no detection)."""
        ...


@dataclass
class OcrConfig:
    """Which OCR backend to use and with which models.

    Every model path is optional: ``None`` means the backend's shipped/default model. For ``rapidocr``
    the paths are ONNX files; for ``paddleocr`` they are Paddle inference model *folders*.
    """

    backend: Literal["rapidocr", "paddleocr"] = "rapidocr"
    """``rapidocr`` works offline out of the box; ``paddleocr`` needs ``pip install 'skinforge[paddle]'``
    and local model folders (it cannot download models offline)."""
    det_model: Path | None = None
    """Text detection model (rapidocr: ``.onnx`` file, default the shipped PP-OCRv6 small det)."""
    rec_model: Path | None = None
    """Text recognition model (rapidocr: ``.onnx`` file with a ``character`` metadata entry, default the
    shipped PP-OCRv6 small rec)."""
    cls_model: Path | None = None
    """Text-line orientation (0/180°) classifier, used only when ``use_angle_cls``."""
    rec_char_dict: Path | None = None
    """Character list, one per line; only needed for rec models without a ``character`` metadata entry
    (rapidocr) or to override the model's own list (paddleocr)."""
    use_angle_cls: bool = True
    """Classify each line as upright or upside down and flip it before recognition."""
    num_threads: int | None = None
    """CPU threads for inference; ``None`` leaves the runtime's default (all cores)."""
    text_score: float = 0.5
    """Lines whose recognition confidence is below this are dropped."""
    box_thresh: float = 0.5
    """Minimum mean detection probability inside a box for it to count as a text line."""
    det_limit_side_len: int = 736
    """The detector resizes images so that their shorter side is at least this many pixels."""
    paddle_enable_mkldnn: bool = False
    """paddleocr only: oneDNN on CPU. Off by default because PP-OCRv5 prediction on CPU failed with it
    (``NotImplementedError ... ConvertPirAttribute2RuntimeAttribute``)."""


class OcrModelNotFoundError(FileNotFoundError):
    """A configured or shipped OCR model file is missing; the message says which and how to fix it."""


def to_rgb_array(image: np.ndarray | Image.Image) -> np.ndarray:
    """Return an ``(H, W, 3)`` uint8 RGB array, so backends accept PIL images and arrays alike."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB array, got {array.dtype} {array.shape}")
    return array
