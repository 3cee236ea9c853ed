"""The OCR backends side by side on generated skins: how well each reads the known labels.

The skins come from the project's own builders, run as a user runs them: ``python -m data skins`` and
``python -m data compose`` (1024² canvases, the images ``data glyph`` reads). Each backend reads each
composed image once, as glyph and the evaluation use it (detection + recognition, no orientation model),
and its lines are scored against the labels the skin was drawn with (``skin.json``) by
:func:`inference.metrics.unordered_text_scores`: every label is paired with at most one line read,
pairs chosen for the best total similarity. Sentence accuracy is the share of labels read exactly, NED
the mean normalised similarity (1 - Levenshtein / longer length; 1 is perfect), both pooled over all
labels. A two-word label ("Shift 上档") counts as read only when one line holds both words.

Both backends must be importable, so this runs in the paddle venv (``make install-paddle``)::

    .venv-paddle/bin/python bench/bench_ocr_backends.py --n 20 --work build/ocr-bench [--threads 2]

The machine is shared: read times are wall times of one pass, a rough guide only.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

from data.records import read_records, resolve_path
from data.skins_builder import skin_folder_name
from inference.metrics import unordered_text_scores
from recognizer.backends import load_ocr
from recognizer.ocr import OcrConfig

logger = logging.getLogger("bench_ocr_backends")

BACKENDS = ("rapidocr", "paddleocr")


@dataclass(frozen=True)
class SkinImage:
    """One composed skin and the labels drawn on it (all elements)."""

    key: str
    image: Path
    labels: list[str]


@dataclass(frozen=True)
class BackendResult:
    backend: str
    images: int
    labels: int
    lines_read: int
    sentence_accuracy: float
    normalized_edit_distance: float
    load_s: float
    read_s_per_image: float


def build_skin_images(work: Path, n: int, seed: int = 0) -> list[SkinImage]:
    """Skins 0..n-1 of ``seed`` through ``data skins`` and ``data compose`` (both resume) under ``work``."""
    skins, composed = work / "skins", work / "composed"
    for args in (
        ("skins", "--out", str(skins), "--n", str(n), "--seed", str(seed)),
        ("compose", "--in", str(skins), "--out", str(composed)),
    ):
        subprocess.run([sys.executable, "-m", "data", *args], check=True)
    images = {
        Path(r.image).stem: resolve_path(composed, r.image) for r in read_records(composed / "train.jsonl")
    }
    result = []
    for index in range(n):
        key = skin_folder_name(index)
        meta = json.loads((skins / key / "skin.json").read_text(encoding="utf-8"))
        labels = [label for element in meta["labels"].values() for label in element]
        result.append(SkinImage(key, images[key], labels))
    return result


def score_backend(backend: str, skins: Sequence[SkinImage], threads: int) -> BackendResult:
    """Read every skin with ``backend`` and pool its scores over all labels."""
    start = time.perf_counter()
    ocr = load_ocr(OcrConfig(backend=backend, use_angle_cls=False, num_threads=threads))
    load_s = time.perf_counter() - start
    exact = similarity = 0.0
    labels = lines_read = 0
    read_s = 0.0
    for skin in skins:
        with Image.open(skin.image) as image:
            rgb = image.convert("RGB")
        start = time.perf_counter()
        (lines,) = ocr.read([rgb])
        read_s += time.perf_counter() - start
        scores = unordered_text_scores([line.text for line in lines], skin.labels)
        exact += scores.sentence_accuracy * scores.lines
        similarity += scores.normalized_edit_distance * scores.lines
        labels += scores.lines
        lines_read += len(lines)
        logger.info("%s %s: %d lines, accuracy %.3f", backend, skin.key, len(lines), scores.sentence_accuracy)
    return BackendResult(
        backend,
        len(skins),
        labels,
        lines_read,
        exact / labels,
        similarity / labels,
        load_s,
        read_s / len(skins),
    )


def markdown_table(results: Sequence[BackendResult]) -> str:
    rows = [
        "| backend | skins | labels | lines read | sentence accuracy | NED | load | read / image |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    rows += [
        f"| {r.backend} | {r.images} | {r.labels} | {r.lines_read} | {r.sentence_accuracy:.3f} | "
        f"{r.normalized_edit_distance:.3f} | {r.load_s:.1f} s | {r.read_s_per_image:.2f} s |"
        for r in results
    ]
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20, help="skins to generate and read (20)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, required=True, help="folder for the skins (kept, resumed)")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--threads", type=int, default=2, help="OCR CPU threads (2)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    skins = build_skin_images(args.work, args.n, args.seed)
    results = [score_backend(backend, skins, args.threads) for backend in args.backends]
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n", encoding="utf-8")
    print(markdown_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
