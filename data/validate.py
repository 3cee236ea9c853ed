"""Deep dataset validation: schema, file and content checks, (optionally) decoding every image, and
lossless fixes.

:func:`data.records.read_records` only stats files, because opening 200k images costs minutes.
Before a long training run that is worth paying once: a truncated PNG or a condition image at the
wrong size would otherwise crash a dataloader worker hours in. This module does that check and
reports problems in the same ``file:line: field: message`` form as the reader.

Beyond the reader's checks, a record's text must not be blank and no two records may use the same
image file (a duplicate is usually a build that ran twice into one jsonl).

:func:`fix_dataset` repairs only what can be repaired without losing anything: it drops records that
are exact copies of an earlier line and strips whitespace around texts (a trailing newline from a
caption file). Everything else (missing files, wrong sizes, boxes outside, blank texts, one image
with two different texts) needs a human decision, so it is reported, never "fixed". It refuses a jsonl
with lines that do not parse, because rewriting the file would drop them.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from PIL import Image

from common.progress import progress_bar
from data.records import Record, RecordProblem, resolve_path, scan_records, write_records

logger = logging.getLogger(__name__)

__all__ = [
    "FixReport",
    "ValidationReport",
    "check_dataset",
    "fix_dataset",
    "image_problems",
    "validate_dataset",
]

_Issue = tuple[str, str]


def _open_size(path: Path) -> tuple[tuple[int, int] | None, str | None]:
    """Fully decode ``path`` (header-only checks miss truncated files); return (size, error)."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.size, None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:  # PIL's decode errors
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


def content_problems(path: Path, records: list[tuple[int, Record]]) -> list[RecordProblem]:
    """Blank texts, and records reusing an earlier record's image file (resolved paths compared)."""
    problems: list[RecordProblem] = []
    first_line: dict[Path, int] = {}
    for line, record in records:
        if not record.text.strip():
            problems.append(RecordProblem(path, line, "text", "is empty or only whitespace"))
        image = resolve_path(path.parent, record.image).resolve()
        if image in first_line:
            message = f"same image file as line {first_line[image]}: {record.image}"
            problems.append(RecordProblem(path, line, "image", message))
        else:
            first_line[image] = line
    return problems


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
    content = content_problems(path, records)
    if content:
        bad_lines = {p.line for p in content}
        records = [(line, record) for line, record in records if line not in bad_lines]
        problems = sorted(problems + content, key=lambda p: p.line)
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
        progress_bar(len(records), "open images", "record") as progress,
    ):
        results = pool.map(lambda item: image_problems(root, item[1]), records)
        for (line, _), issues in zip(records, results, strict=True):
            problems.extend(RecordProblem(path, line, field, message) for field, message in issues)
            progress.update()
    return problems


@dataclass
class FixReport:
    """What :func:`fix_dataset` changed: line numbers of dropped exact duplicates and of stripped texts."""

    jsonl_path: Path
    dropped_duplicates: list[int] = field(default_factory=list)
    stripped_texts: list[int] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.dropped_duplicates or self.stripped_texts)


def fix_dataset(jsonl_path: str | Path) -> FixReport:
    """Apply the lossless fixes (see the module doc) and rewrite the jsonl atomically if any applied.

    Raises ValueError if some line does not parse (the rewrite would silently drop it).
    """
    path = Path(jsonl_path)
    records, problems = scan_records(path, check_files=False)
    if problems:
        raise ValueError(
            f"{path} has {len(problems)} lines that do not parse (first: {problems[0]}); "
            "--fix would drop them, so fix those by hand first"
        )
    report = FixReport(path)
    seen: set[Record] = set()
    kept: list[Record] = []
    for line, record in records:
        stripped = record.text.strip()
        if stripped != record.text:
            record = replace(record, text=stripped)
            report.stripped_texts.append(line)
        if record in seen:
            report.dropped_duplicates.append(line)
            continue
        seen.add(record)
        kept.append(record)
    if report.changed:
        write_records(path, kept)
    logger.info(
        "fix %s: dropped %d exact duplicate records, stripped whitespace from %d texts",
        path,
        len(report.dropped_duplicates),
        len(report.stripped_texts),
    )
    return report
