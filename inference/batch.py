"""Batch inference: every record × seed through every checkpoint, then a comparison grid and a report.

Output layout (``out/``)::

    params.json                       what the images were made with; a resume must match it
    images/<checkpoint>/<record:05d>_s<seed>.png
    grid.png                          condition | target | one column per checkpoint (first seed)
    report.json                       settings, checkpoints, per-image paths and timings

Runs are resumable: every image is written atomically, so an existing file is complete and is kept.
Because kept images must come from the same settings as new ones, ``params.json`` is written before
the first image and a later run with different settings, data or checkpoint for the same name is
refused instead of silently mixing pictures made two different ways.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import StableDiffusionXLControlNetPipeline
from PIL import Image
from tqdm import tqdm

from data.atomic import atomic_save_image, atomic_write_json
from data.records import DatasetError, Record, RecordProblem, resolve_path, scan_records
from inference.checkpoints import CONTROLNET_DIR, ControlNetSource, resolve_checkpoint
from inference.grid import make_grid
from inference.pipeline import GenerationSettings, generate, load_pipeline, swap_controlnet

logger = logging.getLogger(__name__)

__all__ = [
    "GRID_CELL",
    "GRID_FILE",
    "GRID_MAX_ROWS",
    "IMAGES_DIR",
    "PARAMS_FILE",
    "REPORT_FILE",
    "image_path",
    "run_batch_inference",
]

IMAGES_DIR = "images"
GRID_FILE = "grid.png"
REPORT_FILE = "report.json"
PARAMS_FILE = "params.json"
GRID_CELL = 256
GRID_MAX_ROWS = 64  # a 1000-row grid is a gigapixel PNG nobody can open; --limit picks the rows


@dataclass(frozen=True)
class _Sample:
    """A record with its position in the jsonl (index names files, line numbers errors)."""

    index: int
    line: int
    record: Record


@dataclass(frozen=True)
class _Job:
    """One image to have: which record, which seed, where it goes."""

    sample: _Sample
    seed: int
    path: Path


def image_path(out_dir: str | Path, checkpoint_name: str, record_index: int, seed: int) -> Path:
    """Where the image of ``record_index`` × ``seed`` from a checkpoint lives in ``out_dir``."""
    return Path(out_dir) / IMAGES_DIR / checkpoint_name / f"{record_index:05d}_s{seed}.png"


# --------------------------------------------------------------------------- inputs


def _load_samples(data: Path, limit: int | None) -> list[_Sample]:
    """Read the jsonl; every bad line, and every missing conditioning image, raises one DatasetError.

    Target images are optional (an inference set may have only conditions and prompts), so only the
    conditioning images are checked, and only for the records that will be used.
    """
    if not data.is_file():
        raise FileNotFoundError(f"data: {data} does not exist or is not a file")
    pairs, problems = scan_records(data, check_files=False)
    samples = [_Sample(i, line, record) for i, (line, record) in enumerate(pairs)]
    samples = samples if limit is None else samples[:limit]
    for sample in samples:
        path = resolve_path(data.parent, sample.record.conditioning_image)
        if not path.is_file():
            problems.append(
                RecordProblem(data, sample.line, "conditioning_image", f"file does not exist: {path}")
            )
    if problems:
        raise DatasetError(sorted(problems, key=lambda p: p.line))
    return samples


def _owner(source: ControlNetSource) -> Path:
    """The run or checkpoint folder a ControlNet belongs to (itself when it is a bare folder)."""
    folder = source.controlnet_dir
    return folder.parent if folder.name == CONTROLNET_DIR else folder


def _unique_names(sources: list[ControlNetSource]) -> list[ControlNetSource]:
    """Give same-named checkpoints of different runs distinct names ('runA-checkpoint-40').

    Image folders and grid columns are keyed by name, so two 'checkpoint-40' would overwrite each other.
    """
    names = [s.name for s in sources]
    renamed = [
        dataclasses.replace(s, name=f"{_owner(s).parent.name}-{s.name}") if names.count(s.name) > 1 else s
        for s in sources
    ]
    final = [s.name for s in renamed]
    clashes = sorted({n for n in final if final.count(n) > 1})
    if clashes:
        raise ValueError(f"checkpoints with the same name given more than once: {', '.join(clashes)}")
    return renamed


def _check_base(base: str, source: ControlNetSource) -> None:
    """Fail before any loading when a local base path is wrong (diffusers would blame the hub)."""
    looks_local = base.startswith((".", "/", "~")) or Path(base).expanduser().exists()
    if looks_local and not (Path(base).expanduser() / "model_index.json").is_file():
        raise FileNotFoundError(
            f"base model {base} (for checkpoint {source.name}) is not a diffusers SDXL folder: "
            "no model_index.json"
        )


def _resolve_sources(checkpoints: Sequence[str | Path], base: str | None) -> list[ControlNetSource]:
    """Resolve every checkpoint and settle its base: the ``base`` argument wins over skinforge.yaml."""
    if not checkpoints:
        raise ValueError("no checkpoints given")
    sources = []
    for path in checkpoints:
        source = resolve_checkpoint(path)
        chosen = base or source.base
        if not chosen:
            raise ValueError(
                f"checkpoint {path} has no skinforge.yaml with model.base; pass the base SDXL with --base"
            )
        _check_base(chosen, source)
        sources.append(dataclasses.replace(source, base=chosen))
    return _unique_names(sources)


def _check_args(seeds: Sequence[int], limit: int | None, batch_size: int, device: str) -> list[int]:
    """Validate the plain arguments; return the seeds without duplicates (order kept)."""
    if not seeds:
        raise ValueError("at least one seed is needed")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device} requested but no CUDA device is available")
    return list(dict.fromkeys(seeds))


def _default_dtype(device: str) -> torch.dtype:
    """fp16 on GPUs (SDXL's VAE upcasts itself to decode), fp32 on CPU where fp16 is slow or missing."""
    return torch.float16 if device.startswith("cuda") else torch.float32


# --------------------------------------------------------------------------- params.json


def _params(data: Path, settings: GenerationSettings, sources: list[ControlNetSource]) -> dict[str, Any]:
    """Everything that decides what an image looks like (seeds and record index are in its file name)."""
    return {
        "data": str(data),
        "settings": dataclasses.asdict(settings),
        "checkpoints": {s.name: {"controlnet_dir": str(s.controlnet_dir), "base": s.base} for s in sources},
    }


def _diff(label: str, old: object, new: object) -> list[str]:
    """'label.key: old before, new now' for each differing key of two dicts (or the values themselves)."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [
            f"{label}.{k}: {old.get(k)!r} before, {new.get(k)!r} now"
            for k in keys
            if old.get(k) != new.get(k)
        ]
    return [] if old == new else [f"{label}: {old!r} before, {new!r} now"]


def _params_conflicts(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable differences that make the existing images unusable together with new ones."""
    conflicts = _diff("data", old.get("data"), new["data"]) + _diff(
        "settings", old.get("settings"), new["settings"]
    )
    old_checkpoints = old.get("checkpoints") or {}
    for name, entry in new["checkpoints"].items():
        if name in old_checkpoints:
            conflicts += _diff(f"checkpoint {name}", old_checkpoints[name], entry)
    return conflicts


def _claim_out_dir(out: Path, params: dict[str, Any]) -> None:
    """Refuse an output folder made with other settings; record ours (merged with earlier checkpoints)."""
    path = out / PARAMS_FILE
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path} is unreadable ({err}); delete it or use another output folder") from err
        conflicts = _params_conflicts(old, params)
        if conflicts:
            raise ValueError(
                f"{out} holds images made differently; use another output folder or delete it. "
                + "; ".join(conflicts)
            )
        params = {**params, "checkpoints": {**old.get("checkpoints", {}), **params["checkpoints"]}}
    atomic_write_json(path, params)


# --------------------------------------------------------------------------- generation


def _jobs(out: Path, source: ControlNetSource, samples: list[_Sample], seeds: list[int]) -> list[_Job]:
    return [_Job(s, seed, image_path(out, source.name, s.index, seed)) for s in samples for seed in seeds]


def _open_rgb(path: Path) -> Image.Image:
    """Open and fully load an image as RGB, so the file handle is closed right away."""
    with Image.open(path) as image:
        return image.convert("RGB")


class _PipelineCache:
    """Keeps the last pipeline: checkpoints on the same base only swap the ControlNet."""

    def __init__(self, device: str, dtype: torch.dtype) -> None:
        self.device, self.dtype = device, dtype
        self.pipe: StableDiffusionXLControlNetPipeline | None = None
        self.base: str | None = None

    def get(self, source: ControlNetSource) -> StableDiffusionXLControlNetPipeline:
        assert source.base is not None  # _resolve_sources settles it
        if self.pipe is not None and self.base == source.base:
            logger.info("Swapping in ControlNet %s", source.controlnet_dir)
            return swap_controlnet(self.pipe, source.controlnet_dir)
        self._release()
        logger.info("Loading %s on base %s (%s, %s)", source.name, source.base, self.device, self.dtype)
        self.pipe = load_pipeline(source.base, source.controlnet_dir, self.device, self.dtype)
        self.base = source.base
        return self.pipe

    def _release(self) -> None:
        """Drop the old base before loading another: two SDXLs at once may not fit in GPU memory."""
        if self.pipe is None:
            return
        self.pipe = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _run_jobs(
    pipe: StableDiffusionXLControlNetPipeline,
    jobs: list[_Job],
    data: Path,
    settings: GenerationSettings,
    batch_size: int,
    progress: tqdm,
) -> dict[Path, float]:
    """Generate and save ``jobs`` batch by batch (saved as they come, so a kill loses one batch at most).

    Returns seconds per image, keyed by path: the batch's generation time shared by its images.
    """
    seconds: dict[Path, float] = {}
    for start in range(0, len(jobs), batch_size):
        batch = jobs[start : start + batch_size]
        conditions = [_open_rgb(resolve_path(data.parent, j.sample.record.conditioning_image)) for j in batch]
        began = time.perf_counter()
        images = generate(
            pipe,
            [j.sample.record.text for j in batch],
            conditions,
            [j.seed for j in batch],
            settings,
            batch_size,
        )
        per_image = (time.perf_counter() - began) / len(batch)
        for job, image in zip(batch, images, strict=True):
            atomic_save_image(image, job.path)
            seconds[job.path] = per_image
        progress.update(len(batch))
    return seconds


# --------------------------------------------------------------------------- grid and report


def _grid(out: Path, data: Path, samples: list[_Sample], sources: list[ControlNetSource], seed: int) -> Path:
    """condition | target | checkpoints for the first seed; absent files become placeholder cells."""
    if len(samples) > GRID_MAX_ROWS:
        logger.warning("grid.png shows the first %d of %d records", GRID_MAX_ROWS, len(samples))
    rows = []
    for sample in samples[:GRID_MAX_ROWS]:
        target = resolve_path(data.parent, sample.record.image)
        cells = [_open_rgb(resolve_path(data.parent, sample.record.conditioning_image))]
        cells.append(_open_rgb(target) if target.is_file() else None)
        for source in sources:
            path = image_path(out, source.name, sample.index, seed)
            cells.append(_open_rgb(path) if path.is_file() else None)
        rows.append(cells)
    grid = make_grid(rows, ["condition", "target", *(s.name for s in sources)], cell=GRID_CELL)
    path = out / GRID_FILE
    atomic_save_image(grid, path)
    return path


def _checkpoint_entry(
    source: ControlNetSource, given: str | Path, jobs: list[_Job], seconds: dict[Path, float], out: Path
) -> dict[str, Any]:
    """One checkpoint's part of report.json; kept images have ``seconds`` None (not timed this run)."""
    images = [
        {
            "record": job.sample.index,
            "line": job.sample.line,
            "seed": job.seed,
            "prompt": job.sample.record.text,
            "conditioning_image": job.sample.record.conditioning_image,
            "path": job.path.relative_to(out).as_posix(),
            "generated": job.path in seconds,
            "seconds": seconds.get(job.path),
        }
        for job in jobs
    ]
    return {
        "name": source.name,
        "path": str(Path(given).absolute()),
        "controlnet_dir": str(source.controlnet_dir),
        "base": source.base,
        "step": source.step,
        "generated": len(seconds),
        "kept": len(jobs) - len(seconds),
        "seconds_per_image": sum(seconds.values()) / len(seconds) if seconds else None,
        "images": images,
    }


# --------------------------------------------------------------------------- entry point


def run_batch_inference(
    checkpoints: list[str | Path],
    data: str | Path,
    out_dir: str | Path,
    settings: GenerationSettings,
    seeds: Sequence[int] = (0,),
    base: str | None = None,
    limit: int | None = None,
    batch_size: int = 4,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
) -> Path:
    """Generate every record × seed with every checkpoint into ``out_dir``; return report.json's path.

    Existing images are kept (resume). ``dtype`` None means fp16 on CUDA and fp32 on CPU. Raises
    ValueError / DatasetError / FileNotFoundError for bad inputs before any model is loaded.
    """
    began = time.perf_counter()
    seed_list = _check_args(seeds, limit, batch_size, device)
    dtype = dtype or _default_dtype(device)
    data_path, out = Path(data).absolute(), Path(out_dir).absolute()
    sources = _resolve_sources(checkpoints, base)
    samples = _load_samples(data_path, limit)
    _claim_out_dir(out, _params(data_path, settings, sources))

    all_jobs = {s.name: _jobs(out, s, samples, seed_list) for s in sources}
    todo = {name: [j for j in jobs if not j.path.is_file()] for name, jobs in all_jobs.items()}
    n_todo, n_all = sum(map(len, todo.values())), sum(map(len, all_jobs.values()))
    logger.info("%d images to generate, %d already there, in %s", n_todo, n_all - n_todo, out)

    cache = _PipelineCache(device, dtype)
    entries = []
    with tqdm(total=n_todo, desc="inference", unit="img", disable=None) as progress:
        for source, given in zip(sources, checkpoints, strict=True):
            seconds: dict[Path, float] = {}
            if todo[source.name]:  # no local for the pipeline: the cache alone may hold it (see _release)
                seconds = _run_jobs(
                    cache.get(source), todo[source.name], data_path, settings, batch_size, progress
                )
            entries.append(_checkpoint_entry(source, given, all_jobs[source.name], seconds, out))

    grid = _grid(out, data_path, samples, sources, seed_list[0])
    report = {
        "data": str(data_path),
        "records": len(samples),
        "seeds": seed_list,
        "settings": dataclasses.asdict(settings),
        "batch_size": batch_size,
        "device": device,
        "dtype": str(dtype).removeprefix("torch."),
        "grid": grid.relative_to(out).as_posix(),
        "checkpoints": entries,
        "seconds_total": round(time.perf_counter() - began, 3),
    }
    report_path = out / REPORT_FILE
    atomic_write_json(report_path, report)
    logger.info("Wrote %s and %s", report_path, grid)
    return report_path
