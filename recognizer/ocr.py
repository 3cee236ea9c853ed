"""The OCR interface that dataset builders and the evaluation report code against.

A backend reads text lines (detection + recognition) from whole images. Three exist: ``rapidocr`` (the
default; its wheel ships PP-OCR ONNX models, so it works offline with no download), ``paddleocr``
(optional extra, needs local model folders) and ``tesseract`` (Tesseract 5, a reader independent of the
PP-OCR family the text loss optimises for; needs the system's language data);
:func:`recognizer.backends.load_ocr` builds the configured one. Importing this module never pulls in
onnxruntime, paddle or tesseract.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np
from PIL import Image

__all__ = [
    "CJK",
    "READERS",
    "OcrBackend",
    "OcrConfig",
    "OcrLine",
    "OcrModelNotFoundError",
    "Script",
    "ScriptAwareBackend",
    "reader_name",
    "script_of",
    "to_rgb_array",
]

Point = tuple[float, float]
Script = Literal["latin", "cjk"]
"""What a line's characters are written in, as far as choosing a reader's language model goes."""
CJK = "\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef"
"""Regex character-class ranges of CJK scripts: radicals, kana, ideographs, hangul, full-width forms."""
_CJK_CHARACTER = re.compile(f"[{CJK}]")


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


@runtime_checkable
class ScriptAwareBackend(OcrBackend, Protocol):
    """A backend whose recognition depends on a per-line language choice (Tesseract's language models).

    Reading known boxes, the ground truth says which script each line should be in; only that script is
    passed, never the text, so the reader still has to read every character.
    """

    def recognize_scripts(
        self, lines: Sequence[np.ndarray], scripts: Sequence[Script]
    ) -> list[tuple[str, float]]:
        """``recognize`` with each line's expected script."""
        ...


def script_of(text: str) -> Script:
    """``cjk`` when the text holds any CJK character, else ``latin``."""
    return "cjk" if _CJK_CHARACTER.search(text) else "latin"


@dataclass
class OcrConfig:
    """Which OCR backend to use and with which models.

    Every model path is optional: ``None`` means the backend's shipped/default model. For ``rapidocr``
    the paths are ONNX files; for ``paddleocr`` they are Paddle inference model *folders*.
    """

    backend: Literal["rapidocr", "paddleocr", "tesseract"] = "rapidocr"
    """``rapidocr`` works offline out of the box; ``paddleocr`` needs ``pip install 'skinforge[paddle]'``
    and local model folders (it cannot download models offline); ``tesseract`` needs the system's
    Tesseract language data (``apt-get install tesseract-ocr tesseract-ocr-eng tesseract-ocr-chi-sim``)
    and uses none of the model fields below."""
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
    tessdata: Path | None = None
    """tesseract only: the folder with ``eng.traineddata`` and ``chi_sim.traineddata``; None: the
    ``TESSDATA_PREFIX`` variable, else the folder the installed ``tesseract`` command reports."""
    paddle_enable_mkldnn: bool = False
    """paddleocr only: oneDNN on CPU. Off by default because PP-OCRv5 prediction on CPU failed with it
    (``NotImplementedError ... ConvertPirAttribute2RuntimeAttribute``)."""


READERS: dict[str, Literal["rapidocr", "paddleocr", "tesseract"]] = {
    "rapidocr": "rapidocr",
    "tesseract": "tesseract",
    "paddle": "paddleocr",
}
"""Reader names, as metrics and ``python -m inference --reader`` call them, and their backends."""


def reader_name(config: OcrConfig) -> str:
    """The name a backend's scores go under in metrics (``rapidocr``, ``tesseract``, ``paddle``)."""
    return next(name for name, backend in READERS.items() if backend == config.backend)


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
