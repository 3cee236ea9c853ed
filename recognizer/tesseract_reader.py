"""Tesseract 5 as an OCR backend: a second, independent reader of the labels.

The text loss optimises labels for a PP-OCR recognizer, so a PP-OCR reader alone may find legibility
that is only legibility to PP-OCR's features. Tesseract's LSTM shares no weights, data or architecture
with it; AnyText evaluates with a recognizer other than its loss's for the same reason.

It runs in-process through ``tesserocr`` (whose wheel bundles libtesseract 5), one engine per language
loaded once, so reading a crop costs no process start. The language data comes from the system's
Tesseract (Debian/Ubuntu: ``apt-get install tesseract-ocr tesseract-ocr-eng tesseract-ocr-chi-sim``),
found through ``OcrConfig.tessdata``, else ``TESSDATA_PREFIX``, else the folder the ``tesseract``
command reports.

How a known box is read (:meth:`TesseractBackend.recognize`), and why:

* as one text line (page segmentation mode 7, ``SINGLE_LINE``): the box is the line, so Tesseract's
  own layout analysis would only add ways to fail;
* resized to :data:`LINE_HEIGHT` (48) pixels high: Tesseract reads best when capitals are roughly 20-30
  px tall (its documentation's advice on image quality) and a key label's box is about 1.5x its cap
  height; generated 256² keys give crops of 10-40 px, on which it reads far less;
* with a border of background around the line (:data:`BORDER` of the height), since text touching
  the crop's edge is a known cause of misreads;
* dark text on a light background: a crop brighter on average than its border (the background) holds
  light text and is inverted, so light-on-dark labels do not depend on Tesseract's own inversion;
* in ``chi_sim+eng`` when the line is expected to hold CJK characters, ``eng`` otherwise (the
  caller's ``scripts``, :class:`recognizer.ocr.ScriptAwareBackend`): ``chi_sim`` on a Latin label
  reads Latin worse than ``eng`` does, and without the hint every line is read in ``chi_sim+eng``;
* the spaces Tesseract puts between ideographs are dropped, as Chinese text has none.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from recognizer.ocr import CJK, OcrConfig, OcrLine, OcrModelNotFoundError, Script, to_rgb_array

__all__ = [
    "BORDER",
    "LANGUAGES",
    "LINE_HEIGHT",
    "TesseractBackend",
    "TesseractNotFoundError",
    "prepare_line",
    "tessdata_folder",
    "tesseract_problem",
]

logger = logging.getLogger(__name__)

LINE_HEIGHT = 48
"""Height in pixels every line crop is resized to before Tesseract reads it."""
BORDER = 0.25
"""Background border added on each side of a line, as a fraction of LINE_HEIGHT."""
LANGUAGES: dict[Script, str] = {"latin": "eng", "cjk": "chi_sim+eng"}
"""Tesseract language per expected script of a line."""
_INSTALL = "apt-get install tesseract-ocr tesseract-ocr-eng tesseract-ocr-chi-sim"
_SPACE_BY_IDEOGRAPH = re.compile(rf"(?<=[{CJK}])\s+|\s+(?=[{CJK}])")


class TesseractNotFoundError(OcrModelNotFoundError):
    """Tesseract's language data is not installed or cannot be found; the message says how to fix it."""


def _reported_folder() -> Path | None:
    """The tessdata folder of the installed ``tesseract`` command (``--list-langs`` names it)."""
    command = shutil.which("tesseract")
    if command is None:
        return None
    listing = subprocess.run(
        [command, "--list-langs"], capture_output=True, text=True, timeout=30, check=False
    )
    match = re.search(r'languages in "([^"]+)"', listing.stdout + listing.stderr)
    return Path(match.group(1)) if match else None


def tessdata_folder(configured: Path | None = None) -> Path:
    """The folder holding ``eng`` and ``chi_sim`` traineddata; raises TesseractNotFoundError otherwise."""
    if configured is not None:
        folder, origin = Path(configured), "OcrConfig.tessdata"
    elif os.environ.get("TESSDATA_PREFIX"):
        folder, origin = Path(os.environ["TESSDATA_PREFIX"]), "TESSDATA_PREFIX"
    else:
        reported = _reported_folder()
        if reported is None:
            raise TesseractNotFoundError(
                f"Tesseract is not installed (no `tesseract` command, no TESSDATA_PREFIX): {_INSTALL}"
            )
        folder, origin = reported, "the `tesseract` command"
    missing = sorted(
        f"{lang}.traineddata" for lang in ("eng", "chi_sim") if not (folder / f"{lang}.traineddata").is_file()
    )
    if missing:
        raise TesseractNotFoundError(
            f"{folder} (from {origin}) lacks {', '.join(missing)}: {_INSTALL}, or point "
            "TESSDATA_PREFIX / OcrConfig.tessdata at a folder with them"
        )
    return folder


def tesseract_problem(configured: Path | None = None) -> str | None:
    """Why the Tesseract reader cannot run here, or None when it can (for defaults and test skips)."""
    try:
        tessdata_folder(configured)
    except TesseractNotFoundError as err:
        return str(err)
    return None


def prepare_line(crop: np.ndarray) -> Image.Image:
    """The grey line image Tesseract reads: LINE_HEIGHT px high, dark text on light, with a border."""
    gray = cv2.cvtColor(to_rgb_array(crop), cv2.COLOR_RGB2GRAY)
    height, width = gray.shape
    scale = LINE_HEIGHT / height
    interpolation = cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA
    gray = cv2.resize(gray, (max(round(width * scale), 1), LINE_HEIGHT), interpolation=interpolation)
    edge = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = float(np.median(edge))
    if float(gray.mean()) > background:  # the text pulls the mean its way: here it is lighter
        gray, background = 255 - gray, 255 - background
    pad = round(BORDER * LINE_HEIGHT)
    padded = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=int(background))
    return Image.fromarray(padded)


def _clean(text: str) -> str:
    return _SPACE_BY_IDEOGRAPH.sub("", " ".join(text.split()))


class TesseractBackend:
    """``OcrBackend`` (and ``ScriptAwareBackend``) over tesserocr, LSTM engine only."""

    def __init__(self, config: OcrConfig) -> None:
        import tesserocr

        self._tesserocr = tesserocr
        self._folder = tessdata_folder(config.tessdata)
        self._text_score = config.text_score
        self._engines: dict[str, Any] = {}
        logger.info("tesseract %s with %s", tesserocr.tesseract_version().split()[1], self._folder)

    def _engine(self, language: str) -> Any:
        if language not in self._engines:
            # tesserocr's path is the tessdata folder itself; it wants a trailing separator.
            self._engines[language] = self._tesserocr.PyTessBaseAPI(
                path=f"{self._folder}{os.sep}",
                lang=language,
                psm=self._tesserocr.PSM.SINGLE_LINE,
                oem=self._tesserocr.OEM.LSTM_ONLY,
            )
        return self._engines[language]

    def recognize(self, lines: Sequence[np.ndarray]) -> list[tuple[str, float]]:
        """Each crop read in ``chi_sim+eng`` (no script hint: either script may be there)."""
        return self.recognize_scripts(lines, ["cjk"] * len(lines))

    def recognize_scripts(
        self, lines: Sequence[np.ndarray], scripts: Sequence[Script]
    ) -> list[tuple[str, float]]:
        """Each crop read as one line in the language of its expected script."""
        if len(lines) != len(scripts):
            raise ValueError(f"{len(lines)} line crops for {len(scripts)} scripts")
        results = []
        for crop, script in zip(lines, scripts, strict=True):
            engine = self._engine(LANGUAGES[script])
            engine.SetImage(prepare_line(crop))
            results.append((_clean(engine.GetUTF8Text()), engine.MeanTextConf() / 100.0))
        return results

    def read(self, images: Sequence[np.ndarray | Image.Image]) -> list[list[OcrLine]]:
        """Detection and recognition by Tesseract's own layout analysis (sparse text), per text line."""
        tesserocr = self._tesserocr
        engine = self._engine(LANGUAGES["cjk"])
        results = []
        for image in images:
            engine.SetPageSegMode(tesserocr.PSM.SPARSE_TEXT)
            try:
                engine.SetImage(Image.fromarray(to_rgb_array(image)))
                engine.Recognize()
                results.append(self._lines(engine.GetIterator()))
            finally:
                engine.SetPageSegMode(tesserocr.PSM.SINGLE_LINE)
        return results

    def _lines(self, iterator: Any) -> list[OcrLine]:
        level = self._tesserocr.RIL.TEXTLINE
        lines = []
        for line in self._tesserocr.iterate_level(iterator, level):
            if line.Empty(level):  # a line without recognised text raises on GetUTF8Text
                continue
            text, confidence = _clean(line.GetUTF8Text(level)), line.Confidence(level) / 100.0
            box = line.BoundingBox(level)
            if not text or confidence < self._text_score:
                continue
            left, top, right, bottom = map(float, box)
            polygon = ((left, top), (right, top), (right, bottom), (left, bottom))
            lines.append(OcrLine(polygon=polygon, text=text, confidence=confidence))
        return lines

    def close(self) -> None:
        """Free the engines (also done when the backend is garbage collected)."""
        for engine in self._engines.values():
            engine.End()
        self._engines.clear()
