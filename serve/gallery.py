"""What the checkpoint gallery shows about each checkpoint: step, training loss, evaluation metrics.

All of it is optional and read from files the project already writes: the loss from the run's
``metrics.jsonl`` (the trainer's ``loss/total``, the last logged step at or before the checkpoint's), how
a run's ``best/`` was chosen from its ``selection.json``, the metrics from the ``metrics.json`` of a
``python -m inference`` report (``--report DIR``), matched by name, and the settings a request that leaves
them out gets (the checkpoint's recipe). A missing or broken file costs that field, never the service.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from common.run_layout import SELECTION_FILE
from inference.checkpoints import ControlNetSource, checkpoint_label
from inference.evaluate import METRICS_FILE
from inference.sources import owner
from serve.recipe import Recipe

logger = logging.getLogger(__name__)

__all__ = ["checkpoint_info", "report_metrics"]

TRAIN_LOG = "metrics.jsonl"
LOSS_KEY = "loss/total"
"""The trainer's logged loss (diffusion plus any text loss; ``loss/diffusion`` is its diffusion part)."""
_SHOWN_METRICS = (
    "edge_f1", "edge_f1_tolerant", "edge_ssim",
    "sentence_accuracy", "normalized_edit_distance", "clip_score", "fid",
)  # fmt: skip


def _last_loss(log: Path, step: int | None) -> float | None:
    """Loss of the last logged step <= ``step`` (any step for final weights)."""
    loss = None
    try:
        lines = log.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        logger.warning("cannot read %s: %s", log, err)
        return None
    for line in lines:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash mid-write
        if isinstance(entry, dict) and LOSS_KEY in entry and (step is None or entry.get("step", 0) <= step):
            loss = entry[LOSS_KEY]
    return loss


def report_metrics(report_dir: Path | None) -> dict[str, dict[str, Any]]:
    """Per-checkpoint summary rows of an inference report's metrics.json, keyed by checkpoint name."""
    if report_dir is None:
        return {}
    path = report_dir / METRICS_FILE
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))["summary"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        logger.warning("no metrics from %s: %s", path, err)
        return {}
    return {
        row["checkpoint"]: {key: row[key] for key in _SHOWN_METRICS if row.get(key) is not None}
        for row in summary
        if isinstance(row, dict) and "checkpoint" in row
    }


def _selection(source: ControlNetSource) -> dict[str, Any] | None:
    """How a run's best/ was chosen (metric, step, score), from its selection.json."""
    path = source.controlnet_dir / SELECTION_FILE
    try:
        selection = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        logger.warning("cannot read %s: %s", path, err)
        return None
    return selection if isinstance(selection, dict) else None


def checkpoint_info(
    source: ControlNetSource, metrics: dict[str, dict[str, Any]], recipe: Recipe | None = None
) -> dict[str, Any]:
    """Name, label, step, folder, base, the request defaults, and (when found) loss, metrics and, for a
    run's best/, how it was selected."""
    folder = owner(source)
    recipe = recipe or Recipe()
    info: dict[str, Any] = {
        "name": source.name,
        "label": checkpoint_label(source.name, source.step),
        "step": source.step,
        "path": str(folder),
        "base": source.base,
        "defaults": {
            "resolution": recipe.resolution,
            "guidance": recipe.guidance,
            "steps": recipe.steps,
            "scheduler": recipe.scheduler or "base",
        },
    }
    if source.best and (selection := _selection(source)) is not None:
        info["selected_by"] = selection
    for run in (folder, folder.parent):
        if (run / TRAIN_LOG).is_file():
            loss = _last_loss(run / TRAIN_LOG, source.step)
            if loss is not None:
                info["loss"] = loss
            break
    if source.name in metrics:
        info["metrics"] = metrics[source.name]
    return info
