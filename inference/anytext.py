"""AnyText's text-accuracy protocol (sentence accuracy and NED of each labelled line), step by step.

Followed: tyxsspa/AnyText at 3d4a260c (``eval/eval_dgocr.py``, ``eval/anytext_singleGPU.py``,
``cldm/recognizer.py``):

* ground truth: the first 20 lines of an image (``max_lines``), each cut to its first 20 characters
  (``max_chars``; anytext_singleGPU.py L36-37, L110-115, L131);
* the generated image goes through a JPEG file (``cv2.imwrite`` at OpenCV's default quality,
  anytext_singleGPU.py L220-221; ``cv2.imread``, eval_dgocr.py L106-107);
* crop: each line's polygon is filled into a mask (anytext_singleGPU.py L90-95, eval_dgocr.py L116), the
  mask's largest outer contour gives a min-area rectangle, its integer corners sorted to
  tl, tr, br, bl (recognizer.py L19-41); a similarity transform (Umeyama, with scale) maps them onto an
  upright ``width x height`` rectangle and ``grid_sample`` (bilinear, ``align_corners=True``) samples it
  (recognizer.py L44-60, including their pixel-to-[-1, 1] mapping);
* a crop with ``h > 1.2 w`` is turned 90° counter-clockwise (eval_dgocr.py L62-66);
* sentence accuracy compares the read and true strings as they are (eval_dgocr.py L131-134); the edit
  distance compares class ids of a benchmark dictionary ``['sos', *chars, ' ']``, where every
  character outside it gets the last id, the space's (L129-130; cldm/recognizer.py L132-133, L221-230),
  as ``1 - d / (max(len) + 1e-5)`` (L50-52); both are means over all lines pooled (L138);
* the dictionary is fixed per benchmark, not the recogniser's: ``ppocr_keys_v1.txt`` for the Chinese set
  (wukong), ``en_dict.txt`` for the English set (laion) (eval_dgocr.py L43-47, L93-96). Both files ship
  in ``inference/dicts`` (see its PROVENANCE.md); ``zh``/``en`` pick one, a path another, and by default
  the data picks: ``en`` when every ground-truth character is in en_dict.txt, else ``zh``.

What differs, on purpose: the recogniser. AnyText reads with DuGuang ConvNextTiny
(``damo/cv_convnextTiny_ocr-recognition-general_damo``, eval_dgocr.py L89) after its own resize to
48 x 320 (L68-84); we read the crop with our OCR backend (PP-OCRv6 small via rapidocr by default),
which resizes as it was trained to. A crop under one pixel (a box that rounds to nothing), which their
code cannot take, reads as "" here.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from rapidfuzz.distance import Levenshtein
from skimage.transform import SimilarityTransform

from inference.metrics import TextScores
from recognizer.ocr import OcrBackend

__all__ = [
    "BENCHMARK_DICTS",
    "MAX_CHARS",
    "MAX_LINES",
    "TURN_RATIO",
    "AnyTextDictChoice",
    "AnyTextDictionary",
    "anytext_text_scores",
    "anytext_truth",
    "choose_benchmark_dictionary",
    "crop_line",
    "jpeg_round_trip",
    "line_corners",
    "line_mask",
    "read_anytext",
    "read_char_dict",
]

logger = logging.getLogger(__name__)

MAX_CHARS = 20
MAX_LINES = 20
TURN_RATIO = 1.2
"""A crop with height > TURN_RATIO x width is turned (ours elsewhere: 1.5, PP-OCR's rule)."""
_FALLBACK_CORNERS = np.array([[0, 0], [100, 0], [100, 100], [0, 100]])
"""recognizer.py L22-24: the box AnyText uses when a mask has no contour."""


BENCHMARK_DICTS: dict[str, str] = {"zh": "ppocr_keys_v1.txt", "en": "en_dict.txt"}
"""AnyText's benchmark dictionaries (eval_dgocr.py L43-47), shipped in inference/dicts: ``zh`` for its
Chinese set (wukong), ``en`` for its English set (laion)."""


def read_char_dict(path: Path) -> list[str]:
    """A dictionary file's characters as AnyText reads it (cldm/recognizer.py L221-227): one per line,
    only the line ends stripped, so a line holding a space is the space."""
    with path.open("rb") as handle:
        lines = handle.readlines()
    characters = []
    for number, line in enumerate(lines, 1):
        try:
            characters.append(line.decode("utf-8").strip("\n").strip("\r\n"))
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}:{number}: AnyText dictionary lines must be UTF-8 ({err})") from err
    if not characters:
        raise ValueError(f"{path}: the AnyText dictionary is empty")
    return characters


@dataclass(frozen=True)
class AnyTextDictChoice:
    """Which dictionary AnyText's NED uses: ``zh``, ``en`` (the shipped benchmark files) or a file path,
    and who chose it (``origin``: the command line, or the data)."""

    name: str
    origin: str = "--anytext-dict"

    def __post_init__(self) -> None:
        if self.name not in BENCHMARK_DICTS and not Path(self.name).is_file():
            raise FileNotFoundError(
                f"{self.origin} {self.name}: no such file; expected zh (ppocr_keys_v1.txt, AnyText's Chinese "
                "set), en (en_dict.txt, its English set) or a dictionary file with one character per line"
            )

    @property
    def path(self) -> Path:
        if self.name in BENCHMARK_DICTS:
            return Path(str(resources.files("inference") / "dicts" / BENCHMARK_DICTS[self.name]))
        return Path(self.name)

    def describe(self) -> dict[str, object]:
        """For metrics.json: the file (its name for a shipped one), its sha256 and size, and who chose it."""
        data = self.path.read_bytes()
        return {
            "dictionary": self.name,
            "file": BENCHMARK_DICTS.get(self.name, str(self.path)),
            "sha256": hashlib.sha256(data).hexdigest(),
            "characters": len(read_char_dict(self.path)),
            "origin": self.origin,
        }


def choose_benchmark_dictionary(texts: Iterable[str]) -> AnyTextDictChoice:
    """The benchmark set that matches ground-truth ``texts``: ``en`` when every character is in
    en_dict.txt (AnyText's English set), else ``zh`` (also when there is no text)."""
    english = set(read_char_dict(AnyTextDictChoice("en").path))
    lines = [text for text in texts if text]
    outside = sorted({char for text in lines for char in text} - english)
    if lines and not outside:
        return AnyTextDictChoice("en", "the data (every ground-truth character is in en_dict.txt)")
    if not lines:
        return AnyTextDictChoice("zh", "the data (no ground-truth text; the Chinese set)")
    example = "".join(outside[:5])
    reason = f"the data ({len(outside)} ground-truth characters not in en_dict.txt, e.g. {example!r})"
    return AnyTextDictChoice("zh", reason)


@dataclass(frozen=True)
class AnyTextDictionary:
    """Class ids as AnyText's TextRecognizer numbers them: 'sos', the characters, then ' ' (recognizer.py
    L132-133, L221-230); a character without a class takes the last id, the appended space's."""

    char2id: Mapping[str, int]
    unknown: int

    @classmethod
    def of(cls, characters: Sequence[str]) -> AnyTextDictionary:
        classes = ["sos", *characters, " "]
        return cls({char: i for i, char in enumerate(classes)}, len(classes) - 1)

    @classmethod
    def load(cls, choice: AnyTextDictChoice) -> AnyTextDictionary:
        return cls.of(read_char_dict(choice.path))

    def ids(self, text: str) -> list[int]:
        return [self.char2id.get(char, self.unknown) for char in text]


def anytext_truth(truth: Sequence[str]) -> list[str]:
    """The lines AnyText scores: the first MAX_LINES, each cut to MAX_CHARS characters."""
    return [text[:MAX_CHARS] for text in truth[:MAX_LINES]]


def anytext_text_scores(
    read: Sequence[str], truth: Sequence[str], dictionary: AnyTextDictionary
) -> TextScores:
    """Sentence accuracy and NED of ``read[i]`` against ``truth[i]`` (already cut by anytext_truth)."""
    if len(read) != len(truth):
        raise ValueError(f"{len(read)} read lines for {len(truth)} ground-truth lines")
    if not truth:
        return TextScores(0, 0.0, 0.0)
    exact = sum(r == t for r, t in zip(read, truth, strict=True))
    similarity = 0.0
    for r, t in zip(read, truth, strict=True):
        pred_ids, true_ids = dictionary.ids(r), dictionary.ids(t)
        similarity += 1 - Levenshtein.distance(pred_ids, true_ids) / (
            max(len(pred_ids), len(true_ids)) + 1e-5
        )
    return TextScores(len(truth), exact / len(truth), similarity / len(truth))


def jpeg_round_trip(image: Image.Image) -> np.ndarray:
    """The RGB pixels after AnyText's save as .jpg and reload (OpenCV's encoder and decoder)."""
    bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
    ok, encoded = cv2.imencode(".jpg", bgr)
    if not ok:
        raise ValueError(f"OpenCV could not JPEG-encode a {image.width}x{image.height} image")
    return np.ascontiguousarray(cv2.imdecode(encoded, cv2.IMREAD_COLOR)[:, :, ::-1])


def line_mask(polygon: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` uint8 mask, 255 inside the integer ``polygon`` (``size`` is ``(W, H)``)."""
    mask = np.zeros((size[1], size[0]), dtype=np.uint8)
    cv2.fillPoly(mask, [np.asarray(polygon, dtype=np.int32).reshape(-1, 1, 2)], color=255)
    return mask


def line_corners(mask: np.ndarray) -> np.ndarray:
    """tl, tr, br, bl integer corners of the min-area rectangle of the mask's largest outer contour."""
    _, binary = cv2.threshold(mask, 127, 255, cv2.THRESH_BINARY)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        logger.warning("AnyText protocol: a line's mask is empty; AnyText's fallback box is used")
        return _FALLBACK_CORNERS.copy()
    largest = max(contours, key=cv2.contourArea)
    corners = cv2.boxPoints(cv2.minAreaRect(largest)).astype(np.intp)  # np.int0: truncation
    by_x = corners[np.argsort(corners[:, 0], kind="stable")]
    left = by_x[:2][np.argsort(by_x[:2, 1], kind="stable")]
    right = by_x[2:][np.argsort(by_x[2:, 1], kind="stable")]
    return np.array([left[0], right[0], right[1], left[1]])


def _similarity(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """3x3 least-squares similarity (Umeyama with scale) mapping ``source`` points onto ``target``."""
    from_estimate = getattr(SimilarityTransform, "from_estimate", None)
    if from_estimate is not None:  # scikit-image >= 0.26
        return np.asarray(from_estimate(source, target).params)
    transform = SimilarityTransform()
    transform.estimate(source, target)
    return np.asarray(transform.params)


def crop_line(image: torch.Tensor, corners: np.ndarray) -> torch.Tensor:
    """The upright ``(C, h, w)`` crop of a float ``(C, H, W)`` 0-255 image at tl, tr, br, bl ``corners``."""
    points = corners.astype(np.float32)
    width = max(np.linalg.norm(points[0] - points[1]), np.linalg.norm(points[2] - points[3]))
    height = max(np.linalg.norm(points[0] - points[3]), np.linalg.norm(points[1] - points[2]))
    upright = np.float32([[0, 0], [width, 0], [width, height], [0, height]])
    matrix = _similarity(points, upright)
    channels, rows, cols = image.shape
    unit = np.array([[2 / cols, 0, -1], [0, 2 / rows, -1], [0, 0, 1]])  # theirs, for align_corners=True too
    theta = np.linalg.inv(unit @ matrix @ np.linalg.inv(unit))
    theta_t = torch.from_numpy(theta[:2, :]).unsqueeze(0).float()
    grid = F.affine_grid(theta_t, [1, channels, rows, cols], align_corners=True)
    sampled = F.grid_sample(image.unsqueeze(0), grid, align_corners=True).squeeze(0).clamp(0, 255)
    return sampled[:, : int(height), : int(width)]


def _turned(crop: torch.Tensor) -> torch.Tensor:
    """eval_dgocr.py L62-66: a crop taller than 1.2x its width turned 90° counter-clockwise."""
    height, width = crop.shape[1:]
    return crop.transpose(1, 2).flip(dims=[1]) if height > width * TURN_RATIO else crop


def read_anytext(
    backend: OcrBackend,
    image: Image.Image,
    boxes: Sequence[Sequence[Sequence[float]]],
    truth: Sequence[str],
    box_space: tuple[int, int],
    dictionary: AnyTextDictionary,
) -> tuple[list[str], TextScores]:
    """Read each box of ``image`` as AnyText does and score it; ``boxes`` are in ``box_space`` pixels.

    Boxes are scaled to the image, as for the native reading, and rounded to whole pixels (AnyText's
    polygons are integers already). An empty crop (a box under a pixel) reads as "".
    """
    truth = anytext_truth(truth)
    scale = np.array([image.width / box_space[0], image.height / box_space[1]])
    polygons = np.rint(np.asarray(boxes, dtype=np.float64).reshape(-1, 4, 2)[: len(truth)] * scale)
    pixels = torch.from_numpy(jpeg_round_trip(image)).permute(2, 0, 1).float()
    crops = [_turned(crop_line(pixels, line_corners(line_mask(p, image.size)))) for p in polygons]
    readable = [i for i, crop in enumerate(crops) if crop.shape[1] > 0 and crop.shape[2] > 0]
    arrays = [crops[i].round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy() for i in readable]
    read = [""] * len(crops)
    for i, (text, _) in zip(readable, backend.recognize(arrays) if arrays else [], strict=True):
        read[i] = text
    return read, anytext_text_scores(read, truth, dictionary)
