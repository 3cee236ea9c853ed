"""Batch inference: every record × seed through every checkpoint, then metrics, a grid and a report.

Output layout (``out/``)::

    params.json                       what the images were made with; a resume must match it
    images/<checkpoint>/<record:05d>_s<seed>.png
    grid.png                          condition | target | one column per checkpoint (first seed)
    metrics.json, metrics.csv, metrics_per_image.csv   (see inference.evaluate)
    report.json                       settings, checkpoints, per-image paths and timings, metric summary
    report.html                       the page to read (see inference.report_html)

Runs are resumable: every image is written atomically, so an existing file is complete and is kept;
``params.json`` makes sure kept and new images were made the same way (see inference.params).
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from common.atomic import atomic_save_image, atomic_write_json, remove_stale_temp_files
from common.progress import progress_bar
from common.run_lock import RunLock
from inference.checkpoints import ControlNetSource, with_run_best
from inference.evaluate import Evaluator, MetricSettings, evaluate
from inference.outputs import checkpoint_entry, plot_steps, record_rows, scored_images, write_grid
from inference.params import PARAMS_FILE, claim_out_dir, make_params
from inference.pipeline import (
    ControlNetPipeline,
    GenerationSettings,
    generate,
    load_pipeline,
    swap_controlnet,
)
from inference.report_html import write_html_report
from inference.samples import Sample, load_samples, open_rgb
from inference.settings import ComponentDtypes, SpeedSettings, dtype_name
from inference.sources import resolve_sources

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
GRID_CELL = 256
GRID_MAX_ROWS = 64  # a 1000-row grid is a gigapixel PNG nobody can open; --limit picks the rows


@dataclass(frozen=True)
class _Job:
    """One image to have: which record, which seed, where it goes."""

    sample: Sample
    seed: int
    path: Path


def image_path(out_dir: str | Path, checkpoint_name: str, record_index: int, seed: int) -> Path:
    """Where the image of ``record_index`` × ``seed`` from a checkpoint lives in ``out_dir``."""
    return Path(out_dir) / IMAGES_DIR / checkpoint_name / f"{record_index:05d}_s{seed}.png"


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


# --------------------------------------------------------------------------- generation


def _jobs(out: Path, source: ControlNetSource, samples: list[Sample], seeds: list[int]) -> list[_Job]:
    return [_Job(s, seed, image_path(out, source.name, s.index, seed)) for s in samples for seed in seeds]


class _PipelineCache:
    """Keeps the last pipeline: checkpoints on the same base and VAE only swap the ControlNet."""

    def __init__(self, device: str, dtypes: ComponentDtypes, speed: SpeedSettings) -> None:
        self.device, self.dtypes, self.speed = device, dtypes, speed
        self.pipe: ControlNetPipeline | None = None
        self.base: tuple[str, str | None] | None = None

    def get(self, source: ControlNetSource) -> ControlNetPipeline:
        assert source.base is not None  # resolve_sources settles it
        if self.pipe is not None and self.base == (source.base, source.vae):
            logger.info("Swapping in ControlNet %s", source.controlnet_dir)
            return swap_controlnet(self.pipe, source.controlnet_dir)
        self.release()
        logger.info(
            "Loading %s on base %s (%s, %s)", source.name, source.base, self.device, self.dtypes.as_dict()
        )
        self.pipe = load_pipeline(
            source.base, source.controlnet_dir, self.device, self.dtypes, speed=self.speed, vae=source.vae
        )
        self.base = (source.base, source.vae)
        return self.pipe

    def release(self) -> None:
        """Drop the pipeline: before loading another base (two SDXLs may not fit in GPU memory) and
        before scoring (CLIP and FID need the memory)."""
        if self.pipe is None:
            return
        self.pipe = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


HEARTBEAT_S = 30.0
"""Longest silence while generating: a 1024² batch on a CPU takes minutes between progress-bar updates."""


class _Heartbeat:
    """A denoising-step hook that logs where generation stands at most every `HEARTBEAT_S` seconds."""

    def __init__(self, total_steps: int) -> None:
        self.total_steps = total_steps
        self.last = time.monotonic()

    def __call__(self, step: int, latents: torch.Tensor) -> bool:
        if (now := time.monotonic()) - self.last >= HEARTBEAT_S:
            logger.info(
                "generating %d image(s): denoising step %d of %d", len(latents), step + 1, self.total_steps
            )
            self.last = now
        return False


def _run_jobs(
    pipe: ControlNetPipeline, jobs: list[_Job], settings: GenerationSettings, batch_size: int, progress: tqdm
) -> dict[Path, float]:
    """Generate and save ``jobs`` batch by batch (saved as they come, so a kill loses one batch at most).

    Returns seconds per image, keyed by path: the batch's generation time shared by its images.
    """
    seconds: dict[Path, float] = {}
    heartbeat = _Heartbeat(settings.num_inference_steps)
    for start in range(0, len(jobs), batch_size):
        batch = jobs[start : start + batch_size]
        conditions = [open_rgb(j.sample.condition) for j in batch]
        began = time.perf_counter()
        images = generate(
            pipe,
            [j.sample.record.text for j in batch],
            conditions,
            [j.seed for j in batch],
            settings,
            batch_size,
            heartbeat,
        )
        heartbeat.last = time.monotonic()  # the progress bar has just moved
        per_image = (time.perf_counter() - began) / len(batch)
        for job, image in zip(batch, images, strict=True):
            atomic_save_image(image, job.path)
            seconds[job.path] = per_image
        progress.update(len(batch))
    return seconds


# --------------------------------------------------------------------------- entry point


def _generate_all(
    out: Path,
    sources: list[ControlNetSource],
    samples: list[Sample],
    seeds: list[int],
    settings: GenerationSettings,
    batch_size: int,
    cache: _PipelineCache,
) -> list[dict[str, Any]]:
    """Generate what is missing, checkpoint after checkpoint; returns report.json's checkpoint entries."""
    all_jobs = {s.name: _jobs(out, s, samples, seeds) for s in sources}
    todo = {name: [j for j in jobs if not j.path.is_file()] for name, jobs in all_jobs.items()}
    n_todo, n_all = sum(map(len, todo.values())), sum(map(len, all_jobs.values()))
    logger.info("%d images to generate, %d already there, in %s", n_todo, n_all - n_todo, out)
    entries = []
    with progress_bar(n_todo, "inference", "img") as progress:
        for source in sources:
            seconds: dict[Path, float] = {}
            if todo[source.name]:  # no local for the pipeline: the cache alone may hold it (see release)
                seconds = _run_jobs(cache.get(source), todo[source.name], settings, batch_size, progress)
            images = [(j.sample, j.seed, j.path) for j in all_jobs[source.name]]
            entries.append(checkpoint_entry(source, images, seconds, out))
    return entries


def _speed_report(cache: _PipelineCache) -> dict[str, Any]:
    """The speed settings asked for, the dtypes used and the accelerators that really ran."""
    report: dict[str, Any] = {**dataclasses.asdict(cache.speed), "dtypes": cache.dtypes.as_dict()}
    if cache.pipe is not None:
        report["attention_used"] = cache.pipe.attention
        report["compiled"] = bool(cache.pipe.eager)
        report["prompts_encoded"] = cache.pipe.encoder.encoded
    return report


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
    speed: SpeedSettings | None = None,
    metrics: MetricSettings | None = None,
    base_controlnet: str | Path | None = None,
) -> Path:
    """Generate every record × seed with every checkpoint into ``out_dir``; return report.json's path.

    Existing images are kept (resume). ``dtype`` is the default for all components (None: fp16 on
    CUDA, fp32 on CPU); ``speed`` may set them per component. ``metrics`` None skips scoring.
    ``base_controlnet`` (a folder, or ``inference.sources.AUTO`` for the checkpoints' own
    ``model.controlnet``) adds the ControlNet training started from as a column. A run folder brings its
    ``best/`` (``validation.select_best``) as a column too. Raises ValueError /
    DatasetError / FileNotFoundError for bad inputs (OCR model included) before any model is loaded.
    """
    began = time.perf_counter()
    seed_list = _check_args(seeds, limit, batch_size, device)
    speed = speed or SpeedSettings()
    data_path, out = Path(data).absolute(), Path(out_dir).absolute()
    sources = resolve_sources(with_run_best(checkpoints), base, base_controlnet)  # a run: final and best
    samples = load_samples(data_path, limit)
    metrics = metrics.for_data(data_path) if metrics else None
    evaluator = Evaluator(metrics, any(s.has_text for s in samples), device) if metrics else None
    with RunLock(out):  # one writer: the temp files removed below are no live run's
        for name in claim_out_dir(out, make_params(data_path, settings, sources)):
            shutil.rmtree(out / IMAGES_DIR / name, ignore_errors=True)  # stale: made again below
        remove_stale_temp_files(out)

        cache = _PipelineCache(device, ComponentDtypes.resolve(device, speed, dtype), speed)
        entries = _generate_all(out, sources, samples, seed_list, settings, batch_size, cache)
        speed_report = _speed_report(cache)
        cache.release()
        image_of = functools.partial(image_path, out)
        if len(samples) > GRID_MAX_ROWS:
            logger.warning("grid.png shows the first %d of %d records", GRID_MAX_ROWS, len(samples))
        shown = samples[:GRID_MAX_ROWS]
        grid = write_grid(out / GRID_FILE, shown, sources, image_of, seed_list[0], GRID_CELL)
        scores = None
        if evaluator is not None:
            items = scored_images(samples, sources, seed_list, image_of)
            scores = evaluate(evaluator, items, out, {s.name: s.step for s in sources})
        report = {
            "data": str(data_path),
            "records": len(samples),
            "seeds": seed_list,
            "settings": dataclasses.asdict(settings),
            "batch_size": batch_size,
            "device": device,
            "dtype": dtype_name(cache.dtypes.unet),
            "speed": speed_report,
            "grid": grid.relative_to(out).as_posix(),
            "metrics": scores["summary"] if scores else None,
            "checkpoints": entries,
            "seconds_total": round(time.perf_counter() - began, 3),
        }
        report_path = out / REPORT_FILE
        atomic_write_json(report_path, report)
        rows = record_rows(samples, sources, image_of, seed_list[0])
        html = write_html_report(out, report, scores, rows, plot_steps(sources))
        logger.info("Wrote %s, %s and %s", report_path, grid, html)
    return report_path
