"""Deep dataset validation: schema and file checks, plus (optionally) decoding every image.

:func:`data.records.read_records` only stats files, because opening 200k images costs minutes.
Before a long training run that is worth paying once: a truncated PNG or a condition image at the
wrong size would otherwise crash a dataloader worker hours in. This module does that check and
reports problems in the same ``file:line: field: message`` form as the reader.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from data.records import Record, RecordProblem, resolve_path, scan_records

logger = logging.getLogger(__name__)

__all__ = ["ValidationReport", "check_dataset", "image_problems", "validate_dataset"]

_Issue = tuple[str, str]


def _open_size(path: Path) -> tuple[tuple[int, int] | None, str | None]:
    """Fully decode ``path`` (header-only checks miss truncated files); return (size, error)."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.size, None
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, DecompressionBombError...)
        return None, f"cannot open {path}: {type(exc).__name__}: {exc}"


def _box_issues(record: Record, size: tuple[int, int]) -> list[_Issue]:
    """Every box point must lie inside the image (edges inclusive)."""
    if not record.box:
        return []
    width, height = size
    issues: list[_Issue] = []
    for i, polygon in enumerate(record.box):
        outside = [(x, y) for x, y in polygon if not (0 <= x <= width and 0 <= y <= height)]
        if outside:
            issues.append(("box", f"polygon {i} has points {outside} outside the {width}x{height} image"))
    return issues


def image_problems(root: Path, record: Record) -> list[_Issue]:
    """Open both images of ``record`` and check they decode, match in size, and contain the boxes."""
    image_size, image_error = _open_size(resolve_path(root, record.image))
    condition_size, condition_error = _open_size(resolve_path(root, record.conditioning_image))
    issues: list[_Issue] = []
    if image_error:
        issues.append(("image", image_error))
    if condition_error:
        issues.append(("conditioning_image", condition_error))
    if image_size and condition_size and image_size != condition_size:
        issues.append(
            (
                "conditioning_image",
                f"size {condition_size[0]}x{condition_size[1]} differs from the image's "
                f"{image_size[0]}x{image_size[1]}",
            )
        )
    if image_size:
        issues.extend(_box_issues(record, image_size))
    return issues


@dataclass
class ValidationReport:
    """Outcome of :func:`check_dataset`: how many records passed and every problem found."""

    jsonl_path: Path
    records: int
    problems: list[RecordProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_dataset(jsonl_path: str | Path, open_images: bool = False, workers: int = 8) -> ValidationReport:
    """Like :func:`validate_dataset` but also counts the records that passed (for summaries)."""
    path = Path(jsonl_path)
    if not path.is_file():
        return ValidationReport(path, 0, [RecordProblem(path, 0, "file", "does not exist or is not a file")])
    records, problems = scan_records(path, check_files=True)
    if open_images and records:
        image_problems_found = _open_all(path, records, workers)
        bad_lines = {p.line for p in image_problems_found}
        records = [(line, record) for line, record in records if line not in bad_lines]
        problems = sorted(problems + image_problems_found, key=lambda p: p.line)
    logger.debug("validated %s: %d records ok, %d problems", path, len(records), len(problems))
    return ValidationReport(path, len(records), problems)


def validate_dataset(
    jsonl_path: str | Path, open_images: bool = False, workers: int = 8
) -> list[RecordProblem]:
    """Return every problem in the dataset (empty list = valid); never raises for dataset content.

    Always runs the reader's schema and file-existence checks on every line. With ``open_images``,
    also decodes each image/condition of the records that passed (on ``workers`` threads; PIL decoding
    releases the GIL). A missing jsonl is reported as a problem on line 0.
    """
    return check_dataset(jsonl_path, open_images=open_images, workers=workers).problems


def _open_all(path: Path, records: list[tuple[int, Record]], workers: int) -> list[RecordProblem]:
    """Run :func:`image_problems` over records (in order) with a progress bar."""
    root = path.parent
    problems: list[RecordProblem] = []
    with (
        ThreadPoolExecutor(max_workers=max(1, workers)) as pool,
        tqdm(total=len(records), desc="open images", unit="record", disable=None) as progress,
    ):
        results = pool.map(lambda item: image_problems(root, item[1]), records)
        for (line, _), issues in zip(records, results, strict=True):
            problems.extend(RecordProblem(path, line, field, message) for field, message in issues)
            progress.update()
    return problems
