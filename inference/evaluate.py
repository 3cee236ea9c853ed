"""Score a batch run's images: per image (edges, OCR, CLIP) and per checkpoint (means, pooled text, FID).

Writes ``metrics.json`` (settings, per-checkpoint summary, per-image rows), ``metrics.csv`` (the summary,
one row per checkpoint) and ``metrics_per_image.csv``. Scoring is resumable like generation: a rerun
keeps the rows of images whose file is unchanged (same mtime) when the metric settings are the same, so
adding a checkpoint does not re-read every label of the others.

Everything that can be wrong with the metric inputs (OCR model, CLIP folder, FID file) is checked in
``Evaluator.__init__``, which batch inference calls before generating anything.

Each image is scored under every protocol the settings ask for (inference.protocols): ``native`` (our
own), ``controlnet++`` and ``anytext`` (those papers' evaluation code reproduced); a metric's key names
its protocol and metrics.json describes each protocol used.

The native text scores are read by every reader of the settings (``MetricSettings.readers``), each under
its name (``rapidocr/sentence_accuracy``, ``tesseract/sentence_accuracy``...): the text loss optimises
labels for PP-OCR, so a reader it never saw (Tesseract) says whether they are legible or only legible to
PP-OCR. The unprefixed ``sentence_accuracy``/``normalized_edit_distance`` keep their meaning: the first
reader's (``ocr``, rapidocr by default), which the AnyText protocol also reads with.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from PIL import Image

from common.atomic import atomic_write, atomic_write_json
from common.progress import progress_bar
from data.records import read_records
from inference import controlnetpp
from inference.anytext import AnyTextDictChoice, AnyTextDictionary, choose_benchmark_dictionary, read_anytext
from inference.clip_score import ClipScorer, check_clip_folder
from inference.dataset_edges import dataset_edge_settings
from inference.fid import FidScorer, check_fid_model
from inference.metrics import EdgeSettings, aggregate, edge_scores, read_text_scores
from inference.protocols import ANYTEXT, CONTROLNETPP, NATIVE, describe, parse_protocols
from recognizer.backends import load_ocr
from recognizer.ocr import OcrBackend, OcrConfig, reader_name

logger = logging.getLogger(__name__)

__all__ = [
    "METRICS_CSV",
    "METRICS_FILE",
    "METRICS_IMAGES_CSV",
    "REFERENCE",
    "Evaluator",
    "MetricSettings",
    "ScoredImage",
    "evaluate",
    "reader_columns",
]

METRICS_FILE = "metrics.json"
METRICS_CSV = "metrics.csv"
METRICS_IMAGES_CSV = "metrics_per_image.csv"
REFERENCE = "target"
"""The pseudo-checkpoint of the dataset's own target images: what a perfect model would score."""
_CLIP_BATCH = 16
_SUMMARY_COLUMNS = (
    "checkpoint", "step", "reference", "images", "edge_f1", "edge_f1_tolerant", "edge_ssim",
    "text_lines", "sentence_accuracy", "normalized_edit_distance", "controlnetpp_edge_f1",
    "controlnetpp_edge_ms_ssim", "anytext_lines", "anytext_sentence_accuracy",
    "anytext_normalized_edit_distance", "clip_score", "fid",
)  # fmt: skip
_IMAGE_COLUMNS = (
    "checkpoint", "record", "seed", "path", "edge_f1", "edge_f1_tolerant", "edge_ssim",
    "text_lines", "sentence_accuracy", "normalized_edit_distance", "controlnetpp_edge_f1",
    "controlnetpp_edge_ms_ssim", "anytext_lines", "anytext_sentence_accuracy",
    "anytext_normalized_edit_distance", "clip_score", "ocr_read", "anytext_read", "gt_text",
)  # fmt: skip
_READER_SCORES = ("lines", "sentence_accuracy", "normalized_edit_distance")


def reader_columns(readers: Sequence[str], per_image: bool = False) -> list[str]:
    """The metrics columns of each named reader: ``<reader>/lines``, ``/sentence_accuracy``,
    ``/normalized_edit_distance`` (and per image ``/read``, the texts it read)."""
    scores = (*_READER_SCORES, "read") if per_image else _READER_SCORES
    return [f"{reader}/{score}" for reader in readers for score in scores]


@dataclass(frozen=True)
class MetricSettings:
    """Which metrics to compute and how. CLIP score and FID run only with local weights given.

    ``edges`` None means the detector recorded with the data (see :meth:`for_data`), else the defaults.
    ``protocols`` are the evaluation protocols to score with (inference.protocols). ``anytext_dict`` is the
    dictionary of AnyText's NED; None: the benchmark set matching the data's ground truth (:meth:`for_data`).
    ``ocr`` is the first reader (the unprefixed text scores and the AnyText protocol's reads);
    ``other_readers`` read the same boxes beside it, each scored under its name.
    """

    edges: EdgeSettings | None = None
    text: bool = True
    ocr: OcrConfig = field(default_factory=lambda: OcrConfig(use_angle_cls=False))
    clip_model: Path | None = None
    fid_model: Path | None = None
    protocols: tuple[str, ...] = (NATIVE,)
    anytext_dict: AnyTextDictChoice | None = None
    other_readers: tuple[OcrConfig, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "protocols", parse_protocols(self.protocols))
        object.__setattr__(self, "other_readers", tuple(self.other_readers))
        names = [reader_name(config) for config in self.readers]
        if len(set(names)) != len(names):
            raise ValueError(f"each OCR reader may be given once, got {', '.join(names)}")

    @property
    def readers(self) -> tuple[OcrConfig, ...]:
        """Every reader, the first one first."""
        return (self.ocr, *self.other_readers)

    @property
    def reader_names(self) -> list[str]:
        """The readers' names, as their metrics are keyed (empty when text is not scored)."""
        return [reader_name(config) for config in self.readers] if self.text else []

    def for_data(self, data: Path) -> MetricSettings:
        """These settings with ``edges`` settled: as given, else the detector that made ``data``'s
        conditions (inference.dataset_edges); and ``anytext_dict`` as given, else the benchmark set that
        matches the data's ground-truth text."""
        settled = self if self.edges is not None else replace(self, edges=dataset_edge_settings(data))
        if ANYTEXT in self.protocols and self.anytext_dict is None:
            texts = (
                text for record in read_records(data, check_files=False) for text in record.gt_text or ()
            )
            settled = replace(settled, anytext_dict=choose_benchmark_dictionary(texts))
        return settled

    @property
    def edge_settings(self) -> EdgeSettings:
        return self.edges or EdgeSettings()

    def as_dict(self) -> dict[str, Any]:
        """JSON form; also the key deciding whether earlier per-image rows can be reused."""
        ocr = {"backend": self.ocr.backend, "rec_model": str(self.ocr.rec_model or "shipped")}
        settings: dict[str, Any] = {
            "protocols": list(self.protocols),
            "edges": asdict(self.edge_settings),
            "text": self.text,
            "ocr": ocr if self.text else None,
            "readers": self.reader_names,
            "clip_model": str(self.clip_model) if self.clip_model else None,
            "fid_model": str(self.fid_model) if self.fid_model else None,
        }
        if CONTROLNETPP in self.protocols:  # rows of the installed kornia's Canny (before) are not reused
            settings["controlnetpp_canny"] = "kornia 0.7.0"
        if ANYTEXT in self.protocols and self.text and self.anytext_dict is not None:
            settings["anytext_dictionary"] = self.anytext_dict.describe()
        return settings


@dataclass(frozen=True)
class ScoredImage:
    """One image to score: whose it is, where it is, and the record it was made for."""

    checkpoint: str
    record: int
    seed: int | None
    """None for the dataset's target image (the REFERENCE rows)."""
    path: Path
    prompt: str
    condition: Path
    boxes: Sequence[Sequence[Sequence[float]]] | None = None
    gt_text: Sequence[str] | None = None
    source: Path | None = None
    """The record's target image, whose edges ControlNet++'s protocol compares with (None: absent)."""


class Evaluator:
    """Loads the OCR backend and checks the CLIP/FID weights up front; CLIP and FID load when used."""

    def __init__(self, settings: MetricSettings, needs_text: bool, device: str = "cpu") -> None:
        self.settings = settings
        self.device = device
        reads = (
            settings.text and needs_text and (NATIVE in settings.protocols or ANYTEXT in settings.protocols)
        )
        self.readers: dict[str, OcrBackend] = (
            {reader_name(config): load_ocr(config) for config in settings.readers} if reads else {}
        )
        self.ocr: OcrBackend | None = self.readers[reader_name(settings.ocr)] if reads else None
        self.dictionary: AnyTextDictionary | None = None
        if self.ocr is not None and ANYTEXT in settings.protocols:
            if settings.anytext_dict is None:
                raise ValueError("the anytext protocol needs its dictionary: settle it with for_data(data)")
            self.dictionary = AnyTextDictionary.load(settings.anytext_dict)
        self._warned_no_source = False
        if settings.clip_model is not None:
            check_clip_folder(settings.clip_model)
        else:
            logger.info("CLIP score skipped: pass --clip-model DIR (local CLIP weights) to compute it")
        if settings.fid_model is not None:
            check_fid_model(settings.fid_model)
        else:
            logger.info("FID skipped: pass --fid-model FILE (local TorchScript Inception) to compute it")

    def score(self, item: ScoredImage, out: Path) -> dict[str, Any]:
        """Edge and text scores of one image under each protocol (CLIP comes later, in batches)."""
        image = _open(item.path)
        condition = _open(item.condition)
        row: dict[str, Any] = {
            "checkpoint": item.checkpoint,
            "record": item.record,
            "seed": item.seed,
            "path": _relative(item.path, out),
            "mtime_ns": item.path.stat().st_mtime_ns,
        }
        protocols = self.settings.protocols
        if NATIVE in protocols:
            edges = edge_scores(image, condition, self.settings.edge_settings)
            row |= {"edge_f1": edges.f1, "edge_f1_tolerant": edges.f1_tolerant, "edge_ssim": edges.ssim}
        if CONTROLNETPP in protocols:
            row |= self._controlnetpp(image, item)
        if self.ocr is None or not (item.gt_text and item.boxes):
            return row
        row["gt_text"] = list(item.gt_text)
        if NATIVE in protocols:
            row |= self._read_by_each(image, item, condition.size)
        if self.dictionary is not None:
            read, text = read_anytext(
                self.ocr, image, item.boxes, item.gt_text, condition.size, self.dictionary
            )
            row |= {
                "anytext_lines": text.lines,
                "anytext_sentence_accuracy": text.sentence_accuracy,
                "anytext_normalized_edit_distance": text.normalized_edit_distance,
                "anytext_read": read,
            }
        return row

    def _read_by_each(
        self, image: Image.Image, item: ScoredImage, box_space: tuple[int, int]
    ) -> dict[str, Any]:
        """Native text scores of every reader under its name; the first reader's also unprefixed."""
        assert item.boxes is not None and item.gt_text is not None
        row: dict[str, Any] = {}
        for index, (name, backend) in enumerate(self.readers.items()):
            read, text = read_text_scores(backend, image, item.boxes, item.gt_text, box_space)
            scores = {
                "lines": text.lines,
                "sentence_accuracy": text.sentence_accuracy,
                "normalized_edit_distance": text.normalized_edit_distance,
            }
            row |= {f"{name}/{key}": value for key, value in scores.items()} | {f"{name}/read": read}
            if index == 0:
                row |= {
                    "text_lines": text.lines,
                    "sentence_accuracy": text.sentence_accuracy,
                    "normalized_edit_distance": text.normalized_edit_distance,
                    "ocr_read": read,
                }
        return row

    def _controlnetpp(self, image: Image.Image, item: ScoredImage) -> dict[str, Any]:
        """ControlNet++'s scores of one image: against the edges of the record's target image."""
        if item.source is None:
            if not self._warned_no_source:
                logger.warning(
                    "ControlNet++ edge scores need each record's target image; left empty where absent"
                )
                self._warned_no_source = True
            return {}
        scores = controlnetpp.score_image(image, _open(item.source))
        return {
            "controlnetpp_edge_f1": scores.f1,
            "controlnetpp_edge_ms_ssim": scores.ms_ssim,
            "controlnetpp_stats": scores.stats,
        }

    def add_clip_scores(self, items: list[ScoredImage], rows: list[dict[str, Any]]) -> None:
        """Fill ``clip_score`` of the rows that lack it (CLIP runs in batches)."""
        if self.settings.clip_model is None:
            return
        todo = [i for i, row in enumerate(rows) if row.get("clip_score") is None]
        if not todo:
            return
        scorer = ClipScorer(self.settings.clip_model, self.device)
        for start in range(0, len(todo), _CLIP_BATCH):
            chunk = todo[start : start + _CLIP_BATCH]
            images = [_open(items[i].path) for i in chunk]
            for i, score in zip(chunk, scorer(images, [items[i].prompt for i in chunk]), strict=True):
                rows[i]["clip_score"] = score

    def fids(self, items: list[ScoredImage]) -> dict[str, float | None]:
        """FID of each checkpoint's images against the REFERENCE images (None without a FID model)."""
        if self.settings.fid_model is None:
            return {}
        scorer = FidScorer(self.settings.fid_model, self.device)
        by_checkpoint: dict[str, list[Path]] = {}
        for item in items:
            by_checkpoint.setdefault(item.checkpoint, []).append(item.path)
        reference = by_checkpoint.pop(REFERENCE, [])
        if len(reference) < 2:
            logger.warning("FID skipped: it needs at least 2 target images, the data has %d", len(reference))
            return {}
        features = scorer.features(reference)
        fids = {name: scorer.fid(paths, features) for name, paths in by_checkpoint.items() if len(paths) > 1}
        broken = sorted(name for name, value in fids.items() if not math.isfinite(value))
        if broken:
            logger.warning("FID is not finite for %s (too few images?); left empty", ", ".join(broken))
        return {name: value for name, value in fids.items() if math.isfinite(value)}


def _relative(path: Path, out: Path) -> str:
    """Path as written in metrics files: relative to the output folder when inside it."""
    return path.relative_to(out).as_posix() if path.is_relative_to(out) else str(path)


def _open(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def _previous_rows(out: Path, settings: MetricSettings) -> dict[tuple[str, str], dict[str, Any]]:
    """Per-image rows of an earlier metrics.json made with the same settings, keyed by (checkpoint, path)."""
    path = out / METRICS_FILE
    if not path.is_file():
        return {}
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        logger.warning("%s is unreadable (%s); scoring every image again", path, err)
        return {}
    if old.get("metric_settings") != settings.as_dict():
        return {}
    return {(row["checkpoint"], row["path"]): row for row in old.get("images", [])}


def _score_all(evaluator: Evaluator, items: list[ScoredImage], out: Path) -> list[dict[str, Any]]:
    """Rows for ``items``: reused when the image is unchanged since the last scoring, else computed."""
    previous = _previous_rows(out, evaluator.settings)
    rows = []
    reused = 0
    for item in progress_bar(len(items), "metrics", "img", iterable=items):
        old = previous.get((item.checkpoint, _relative(item.path, out)))
        if old is not None and old.get("mtime_ns") == item.path.stat().st_mtime_ns:
            rows.append(old)
            reused += 1
        else:
            rows.append(evaluator.score(item, out))
    logger.info("Scored %d images, reused %d unchanged scores", len(items) - reused, reused)
    evaluator.add_clip_scores(items, rows)
    return rows


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    def cell(value: object) -> object:
        return json.dumps(value, ensure_ascii=False) if isinstance(value, list) else value

    with atomic_write(path, "w") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows({key: cell(row.get(key)) for key in columns} for row in rows)


def evaluate(
    evaluator: Evaluator, items: list[ScoredImage], out: Path, steps: dict[str, int | None]
) -> dict[str, Any]:
    """Score ``items``, write the metrics files into ``out`` and return what metrics.json holds.

    ``steps`` maps checkpoint names (in report order) to their training step.
    """
    rows = _score_all(evaluator, items, out)
    fids = evaluator.fids(items)
    names = [REFERENCE, *steps] if any(item.checkpoint == REFERENCE for item in items) else list(steps)
    summary = [
        {
            "checkpoint": name,
            "step": steps.get(name),
            "reference": name == REFERENCE,
            **aggregate(row for row in rows if row["checkpoint"] == name),
            "fid": fids.get(name),
        }
        for name in names
    ]
    metrics = {
        "metric_settings": evaluator.settings.as_dict(),
        "protocols": {name: describe(name) for name in evaluator.settings.protocols},
        "summary": summary,
        "images": rows,
    }
    atomic_write_json(out / METRICS_FILE, metrics)
    readers = evaluator.settings.reader_names
    _write_csv(out / METRICS_CSV, summary, [*_SUMMARY_COLUMNS, *reader_columns(readers)])
    _write_csv(out / METRICS_IMAGES_CSV, rows, [*_IMAGE_COLUMNS, *reader_columns(readers, per_image=True)])
    return metrics
