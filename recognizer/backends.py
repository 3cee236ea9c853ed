"""The configured OCR backend, built by name: ``rapidocr`` (the default), ``paddleocr`` or ``tesseract``.

Apart from :mod:`recognizer.ocr` (the interface the backends implement) so that the backends import the
interface and this module imports the backends, not each other in a circle. Each backend is imported
only when chosen, so that loading one never pulls in onnxruntime, paddle or tesseract for another.
"""

from __future__ import annotations

from recognizer.ocr import OcrBackend, OcrConfig

__all__ = ["load_ocr"]


def load_ocr(config: OcrConfig | None = None) -> OcrBackend:
    """Build the configured backend; model files are checked here so mistakes fail before any reading."""
    config = config or OcrConfig()
    if config.backend == "rapidocr":
        from recognizer.rapidocr_backend import RapidOcrBackend

        return RapidOcrBackend(config)
    if config.backend == "paddleocr":
        from recognizer.paddle_backend import PaddleOcrBackend

        return PaddleOcrBackend(config)
    if config.backend == "tesseract":
        from recognizer.tesseract_reader import TesseractBackend

        return TesseractBackend(config)
    raise ValueError(
        f"unknown OCR backend {config.backend!r}; expected 'rapidocr', 'paddleocr' or 'tesseract'"
    )
