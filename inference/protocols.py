"""The evaluation protocols a run can score with, and what each number of them may be compared with.

``native`` is the project's own (tolerant F1, the dataset's own edge detector, characters as they are);
``controlnet++`` and ``anytext`` reproduce those papers' evaluation code (inference.controlnetpp,
inference.anytext): their protocol math exactly (kornia 0.7.0's Canny, AnyText's benchmark
dictionaries), not their recogniser (ours is PP-OCRv6, AnyText's DuGuang). Their metrics carry the
protocol in the key (``controlnetpp_*``, ``anytext_*``); native keys have no prefix. metrics.json holds
:func:`describe` of the protocols a run used.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Sequence
from typing import Any

__all__ = [
    "ANYTEXT",
    "CONTROLNETPP",
    "NATIVE",
    "PROTOCOLS",
    "PROTOCOL_METRICS",
    "describe",
    "parse_protocols",
    "protocol_of",
]

NATIVE = "native"
CONTROLNETPP = "controlnet++"
ANYTEXT = "anytext"
PROTOCOLS = (NATIVE, CONTROLNETPP, ANYTEXT)

PROTOCOL_METRICS: dict[str, tuple[str, ...]] = {
    NATIVE: ("edge_f1", "edge_f1_tolerant", "edge_ssim", "sentence_accuracy", "normalized_edit_distance"),
    CONTROLNETPP: ("controlnetpp_edge_f1", "controlnetpp_edge_ms_ssim"),
    ANYTEXT: ("anytext_sentence_accuracy", "anytext_normalized_edit_distance"),
}

_CONTROLNETPP_SOURCE = "github.com/liming-ai/ControlNet_Plus_Plus@9ffe2645"
_ANYTEXT_SOURCE = "github.com/tyxsspa/AnyText@3d4a260c"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def describe(protocol: str) -> dict[str, Any]:
    """What ``protocol`` computes, which code it follows and which published numbers it compares with."""
    if protocol == NATIVE:
        return {
            "metrics": list(PROTOCOL_METRICS[NATIVE]),
            "follows": "skinforge's own (inference/metrics.py)",
            "edges": "cv2.Canny of the output (the dataset's recorded detector, else 100/200) against the "
            "condition; F1, F1 within the tolerance and skimage SSIM, mean over images",
            "text": "each box perspective-cropped, turned at h >= 1.5 w, read by our OCR; exact match and "
            "1 - Levenshtein / max length over characters, pooled over all lines",
            "comparable_with": "other skinforge reports made with the same settings; no paper",
        }
    if protocol == CONTROLNETPP:
        return {
            "metrics": list(PROTOCOL_METRICS[CONTROLNETPP]),
            "follows": f"{_CONTROLNETPP_SOURCE} eval/eval.py L171, L176-181, L225-232, L259-261; "
            "eval/eval_edge.py L19-34, L79-81, L98-104 (task 'canny'); requirements.txt kornia==0.7.0",
            "edges": "kornia 0.7.0's filters.canny 0.1/0.2 (re-implemented in inference/kornia070_canny.py, "
            "pixel for pixel, whatever kornia is installed) on the target image (resized bicubically to the "
            "output) and on the output, PNG round trip; torchmetrics BinaryF1Score over all seeds of a "
            "record pooled, mean over records, x100; torchmetrics MS-SSIM (data_range 1), mean over records",
            "beyond_theirs": "images under 176 px a side: their MS-SSIM raises, ours is left empty (and the "
            "checkpoint's mean with it); F1 is still scored",
            "comparable_with": "ControlNet++ (ECCV 2024) controllability table, Canny F1 (x100), when the "
            "conditions are kornia Canny 0.1/0.2 of the targets, as in their MultiGen-20M canny eval set",
            "versions": {"canny": "kornia 0.7.0 (re-implemented)", "torchmetrics": _version("torchmetrics")},
        }
    if protocol == ANYTEXT:
        return {
            "metrics": list(PROTOCOL_METRICS[ANYTEXT]),
            "follows": f"{_ANYTEXT_SOURCE} eval/eval_dgocr.py L43-52, L62-66, L93-96, L106-138; "
            "eval/anytext_singleGPU.py L36-37, L90-95, L110-115; "
            "cldm/recognizer.py L19-72, L132-133, L221-230",
            "text": "first 20 lines, ground truth cut to 20 characters; JPEG round trip; min-area rectangle "
            "of the filled polygon, similarity warp; turned at h > 1.2 w; exact match of the strings; "
            "NED over the class ids of AnyText's benchmark dictionary (ppocr_keys_v1.txt for its Chinese "
            "set, en_dict.txt for its English set; metric_settings.anytext_dictionary says which), unknown "
            "characters sharing one id, pooled over lines",
            "beyond_theirs": "a box that crops to nothing (under a pixel): their code raises, ours reads it "
            "as '' (a miss)",
            "recogniser": "ours: the configured OCR backend (default PP-OCRv6 small, rapidocr); AnyText's: "
            "DuGuang ConvNextTiny (damo/cv_convnextTiny_ocr-recognition-general_damo)",
            "comparable_with": "AnyText (ICLR 2024) Sen.ACC / NED only in formula: the recogniser "
            "differs, so the numbers are not the same measurement",
        }
    raise ValueError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")


def parse_protocols(names: Sequence[str]) -> tuple[str, ...]:
    """Validated protocol names in PROTOCOLS order, without duplicates."""
    unknown = sorted(set(names) - set(PROTOCOLS))
    if unknown:
        raise ValueError(f"unknown protocol(s) {', '.join(unknown)}; expected {', '.join(PROTOCOLS)}")
    if not names:
        raise ValueError("at least one evaluation protocol is needed")
    return tuple(p for p in PROTOCOLS if p in names)


def protocol_of(metric: str) -> str | None:
    """The protocol a metric key belongs to (None for protocol-free ones: CLIP score, FID, counts)."""
    return next((p for p, keys in PROTOCOL_METRICS.items() if metric in keys), None)
