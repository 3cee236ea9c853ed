"""What a batch run writes besides the images: the grid, report.json's checkpoint entries, and the
inputs of the metrics and of report.html (which images belong to which record and checkpoint)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.atomic import atomic_save_image
from inference.checkpoints import ControlNetSource
from inference.evaluate import REFERENCE, ScoredImage
from inference.grid import make_grid
from inference.report_html import RecordRow
from inference.samples import Sample, open_rgb
from inference.sources import BASE_CONTROLNET_NAME, owner, run_of

logger = logging.getLogger(__name__)

__all__ = ["ImagePath", "checkpoint_entry", "plot_steps", "record_rows", "scored_images", "write_grid"]

ImagePath = Callable[[str, int, int], Path]
"""(checkpoint name, record index, seed) -> where that image lives."""


def write_grid(
    path: Path,
    samples: list[Sample],
    sources: list[ControlNetSource],
    image_of: ImagePath,
    seed: int,
    cell: int,
) -> Path:
    """condition | target | checkpoints for ``seed``; absent files become placeholder cells."""
    rows = []
    for sample in samples:
        target = sample.target
        cells = [open_rgb(sample.condition), open_rgb(target) if target else None]
        for source in sources:
            image = image_of(source.name, sample.index, seed)
            cells.append(open_rgb(image) if image.is_file() else None)
        rows.append(cells)
    grid = make_grid(rows, ["condition", "target", *(s.name for s in sources)], cell=cell)
    atomic_save_image(grid, path)
    return path


def checkpoint_entry(
    source: ControlNetSource, images: list[tuple[Sample, int, Path]], seconds: dict[Path, float], out: Path
) -> dict[str, Any]:
    """One checkpoint's part of report.json; kept images have ``seconds`` None (not timed this run)."""
    listed = [
        {
            "record": sample.index,
            "line": sample.line,
            "seed": seed,
            "prompt": sample.record.text,
            "conditioning_image": sample.record.conditioning_image,
            "path": path.relative_to(out).as_posix(),
            "generated": path in seconds,
            "seconds": seconds.get(path),
        }
        for sample, seed, path in images
    ]
    return {
        "name": source.name,
        "path": str(owner(source)),
        "controlnet_dir": str(source.controlnet_dir),
        "base": source.base,
        "step": source.step,
        "generated": len(seconds),
        "kept": len(images) - len(seconds),
        "seconds_per_image": sum(seconds.values()) / len(seconds) if seconds else None,
        "images": listed,
    }


def _scored(name: str, sample: Sample, seed: int | None, path: Path) -> ScoredImage:
    record = sample.record
    return ScoredImage(
        name,
        sample.index,
        seed,
        path,
        record.text,
        sample.condition,
        record.box,
        record.gt_text,
        sample.target,
    )


def scored_images(
    samples: list[Sample], sources: list[ControlNetSource], seeds: list[int], image_of: ImagePath
) -> list[ScoredImage]:
    """Every generated image, plus each record's target image as the REFERENCE pseudo-checkpoint."""
    items = [_scored(REFERENCE, s, None, s.target) for s in samples if s.target is not None]
    for source in sources:
        for sample in samples:
            items += [
                _scored(source.name, sample, seed, image_of(source.name, sample.index, seed))
                for seed in seeds
            ]
    return [item for item in items if item.path.is_file()]


def record_rows(
    samples: list[Sample], sources: list[ControlNetSource], image_of: ImagePath, seed: int
) -> list[RecordRow]:
    """report.html's grid rows: each record with its first-seed image from every checkpoint."""
    return [
        RecordRow(
            record=sample.index,
            prompt=sample.record.text,
            condition=sample.condition,
            target=sample.target,
            images={s.name: image_of(s.name, sample.index, seed) for s in sources},
            gt_text=sample.record.gt_text,
        )
        for sample in samples
    ]


def plot_steps(sources: list[ControlNetSource]) -> dict[str, int]:
    """Step of each checkpoint when they all come from one run (the base ControlNet counts as step 0; the
    final weights count at their step unless a checkpoint already stands there)."""
    stepped = [s for s in sources if s.step is not None]
    runs = {run_of(s) for s in stepped if s.name != BASE_CONTROLNET_NAME}
    if len(runs) != 1:
        if len(runs) > 1:
            logger.info("checkpoints come from %d runs; no metric-vs-step chart", len(runs))
        return {}
    checkpoint_steps = {s.step for s in stepped if not s.final}
    # a run's final weights are its last checkpoint's twin: one point per step on the charts
    return {
        s.name: s.step for s in stepped if s.step is not None and not (s.final and s.step in checkpoint_steps)
    }
