"""Reading known text boxes, as AnyText's evaluation does: crop each box upright, recognise it alone.

Detection is skipped on purpose: the question is whether the label at this box says what it should,
not whether a detector finds it.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from PIL import Image

from recognizer.ocr import OcrBackend, ScriptAwareBackend, script_of, to_rgb_array

__all__ = ["crop_box", "read_boxes"]

TALL_RATIO = 1.5
"""A box at least this much taller than wide holds vertical text and is turned to read left to right."""


def crop_box(image: np.ndarray, polygon: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """The upright RGB crop of a 4-point box (clockwise from the text's top-left), PP-OCR style."""
    points = np.asarray(polygon, dtype=np.float32).reshape(4, 2)
    sides = np.linalg.norm(points - np.roll(points, -1, axis=0), axis=1)  # top, right, bottom, left
    width = max(round(float(max(sides[0], sides[2]))), 1)
    height = max(round(float(max(sides[1], sides[3]))), 1)
    target = np.float32([[0, 0], [width, 0], [width, height], [0, height]])
    matrix = cv2.getPerspectiveTransform(points, target)
    crop = cv2.warpPerspective(
        image, matrix, (width, height), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE
    )
    if height >= TALL_RATIO * width:
        crop = np.rot90(crop)
    return np.ascontiguousarray(crop)


def read_boxes(
    backend: OcrBackend,
    image: np.ndarray | Image.Image,
    boxes: Sequence[Sequence[Sequence[float]]] | np.ndarray,
    truth: Sequence[str] | None = None,
) -> list[str]:
    """The text the backend reads in each box of `image`, in box order ("" where it reads nothing).

    With the boxes' ground-truth ``truth``, a backend that picks a language per line
    (``ScriptAwareBackend``: Tesseract) is told each line's script, nothing more of the text.
    """
    rgb = to_rgb_array(image)
    crops = [crop_box(rgb, box) for box in boxes]
    if not crops:
        return []
    if truth is not None and isinstance(backend, ScriptAwareBackend):
        if len(truth) != len(crops):
            raise ValueError(f"{len(truth)} ground-truth texts for {len(crops)} boxes")
        return [text for text, _ in backend.recognize_scripts(crops, [script_of(t) for t in truth])]
    return [text for text, _ in backend.recognize(crops)]
