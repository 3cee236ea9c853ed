"""Dataset statistics: counts, image sizes, caption lengths and text boxes, as a plain-text report.

Sizes come from image headers only (PIL opens lazily), so this stays fast on large datasets; use
``validate --open-images`` to decode everything. Caption lengths are counted in characters, which
works for Chinese captions (no spaces) as well as English ones.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from data.records import resolve_path, scan_records

__all__ = ["CAPTION_BINS", "DatasetStats", "dataset_stats", "format_stats"]

# Upper bounds (exclusive) of the caption-length histogram bins, in characters.
CAPTION_BINS: tuple[int, ...] = (1, 10, 20, 40, 80, 160, 320)
BOX_BINS: tuple[int, ...] = (1, 2, 5, 10, 20, 50)
TOP_SIZES = 5
BAR_WIDTH = 40


@dataclass
class DatasetStats:
    """Counts for one jsonl; ``unreadable`` counts files whose header could not be read."""

    jsonl: Path
    records: int = 0
    problems: int = 0
    unique_images: int = 0
    image_sizes: Counter[tuple[int, int]] = field(default_factory=Counter)
    condition_sizes: Counter[tuple[int, int]] = field(default_factory=Counter)
    unreadable: int = 0
    caption_lengths: list[int] = field(default_factory=list)
    boxes_per_record: list[int] = field(default_factory=list)


def _header_size(path: Path) -> tuple[int, int] | None:
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None


def dataset_stats(jsonl_path: str | Path, workers: int = 8) -> DatasetStats:
    """Collect :class:`DatasetStats` over the records that parse (problems are only counted)."""
    path = Path(jsonl_path)
    records, problems = scan_records(path, check_files=False)
    stats = DatasetStats(path, records=len(records), problems=len(problems))
    plain = [record for _, record in records]
    stats.unique_images = len({resolve_path(path.parent, r.image) for r in plain})
    stats.caption_lengths = [len(r.text) for r in plain]
    stats.boxes_per_record = [len(r.box or ()) for r in plain]
    root = path.parent
    stats.image_sizes, bad_images = _sizes(root, [r.image for r in plain], workers)
    stats.condition_sizes, bad_conditions = _sizes(root, [r.conditioning_image for r in plain], workers)
    stats.unreadable = bad_images + bad_conditions
    return stats


def _sizes(root: Path, rels: Sequence[str], workers: int) -> tuple[Counter[tuple[int, int]], int]:
    """Size histogram of the (distinct) files and how many could not be read."""
    paths = sorted({resolve_path(root, rel) for rel in rels})
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        sizes = list(pool.map(_header_size, paths))
    return Counter(size for size in sizes if size is not None), sizes.count(None)


def _histogram(values: Sequence[int], bounds: Sequence[int], unit: str) -> list[str]:
    """One text line per bin ``[lo, hi)`` (the last open-ended): range, count, a bar scaled to the peak."""
    lows = [0, *bounds[:-1]]
    ranges: list[tuple[int, int | None]] = [*zip(lows, bounds, strict=True), (bounds[-1], None)]
    counts = [sum(lo <= v and (hi is None or v < hi) for v in values) for lo, hi in ranges]
    labels = [f"{lo}+" if hi is None else f"{lo}" if hi - lo == 1 else f"{lo}-{hi - 1}" for lo, hi in ranges]
    peak = max(counts) or 1
    return [
        f"  {label:>9} {unit}: {count:7d} {'#' * round(BAR_WIDTH * count / peak)}"
        for label, count in zip(labels, counts, strict=True)
    ]


def _top_sizes(sizes: Counter[tuple[int, int]]) -> str:
    shown = ", ".join(f"{w}x{h} ({n})" for (w, h), n in sizes.most_common(TOP_SIZES))
    more = len(sizes) - TOP_SIZES
    return shown + (f", ... {more} more sizes" if more > 0 else "") if sizes else "-"


def format_stats(stats: DatasetStats) -> str:
    """The report printed by ``python -m data stats``."""
    boxes = stats.boxes_per_record
    lines = [
        f"{stats.jsonl}",
        f"records: {stats.records} ({stats.problems} lines with problems, see validate); "
        f"distinct images: {stats.unique_images}",
        f"image sizes: {_top_sizes(stats.image_sizes)}",
        f"condition sizes: {_top_sizes(stats.condition_sizes)}",
    ]
    if stats.unreadable:
        lines.append(f"unreadable files: {stats.unreadable} (see validate --open-images)")
    lengths = stats.caption_lengths
    if lengths:
        mean = sum(lengths) / len(lengths)
        lines.append(f"caption length (characters): min {min(lengths)}, mean {mean:.1f}, max {max(lengths)}")
        lines.extend(_histogram(lengths, CAPTION_BINS, "chars"))
    lines.append(
        f"text boxes: {sum(boxes)} in {sum(b > 0 for b in boxes)} of {len(boxes)} records"
        + (f", max {max(boxes)} per record" if boxes else "")
    )
    if any(boxes):
        lines.extend(_histogram(boxes, BOX_BINS, "boxes"))
    return "\n".join(lines)
