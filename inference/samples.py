"""The records of an inference jsonl, checked before any model loads.

Target images and text boxes are optional (an inference set may have only prompts and conditions),
but every conditioning image must exist: ControlNet inference without one has nothing to follow.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from data.records import DatasetError, Record, RecordProblem, resolve_path, scan_records

__all__ = ["Sample", "load_samples", "open_rgb"]


@dataclass(frozen=True)
class Sample:
    """A record with its position in the jsonl (index names files, line numbers errors)."""

    index: int
    line: int
    record: Record
    root: Path
    """The jsonl's folder, which the record's paths are relative to."""

    @property
    def condition(self) -> Path:
        return resolve_path(self.root, self.record.conditioning_image)

    @property
    def target(self) -> Path | None:
        """The target image, None when the file is absent."""
        path = resolve_path(self.root, self.record.image)
        return path if path.is_file() else None

    @property
    def has_text(self) -> bool:
        return bool(self.record.box and self.record.gt_text)


def load_samples(data: Path, limit: int | None) -> list[Sample]:
    """Read the jsonl; every bad line, and every missing conditioning image, raises one DatasetError.

    Only the records that will be used (the first ``limit``) have their conditioning image checked.
    """
    if not data.is_file():
        raise FileNotFoundError(f"data: {data} does not exist or is not a file")
    pairs, problems = scan_records(data, check_files=False)
    samples = [Sample(i, line, record, data.parent) for i, (line, record) in enumerate(pairs)]
    samples = samples if limit is None else samples[:limit]
    for sample in samples:
        if not sample.condition.is_file():
            problems.append(
                RecordProblem(
                    data, sample.line, "conditioning_image", f"file does not exist: {sample.condition}"
                )
            )
    if problems:
        raise DatasetError(sorted(problems, key=lambda p: p.line))
    if not samples:
        raise ValueError(f"data: {data} has no records")
    return samples


def open_rgb(path: Path) -> Image.Image:
    """Open and fully load an image as RGB, so the file handle is closed right away."""
    with Image.open(path) as image:
        return image.convert("RGB")
