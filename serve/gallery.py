"""What the checkpoint gallery shows about each checkpoint: step, training loss, evaluation metrics.

All of it is optional and read from files the project already writes: the loss from the run's
``metrics.jsonl`` (the trainer's log, the last logged step at or before the checkpoint's), the metrics
from the ``metrics.json`` of a ``python -m inference`` report (``--report DIR``), matched by name.
A missing or broken file costs that field, never the service.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from inference.checkpoints import ControlNetSource
from inference.evaluate import METRICS_FILE
from inference.sources import owner

logger = logging.getLogger(__name__)

__all__ = ["checkpoint_info", "report_metrics"]

TRAIN_LOG = "metrics.jsonl"
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
        if isinstance(entry, dict) and "loss" in entry and (step is None or entry.get("step", 0) <= step):
            loss = entry["loss"]
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


def checkpoint_info(source: ControlNetSource, metrics: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Name, step, folder, base, loss and metrics (the last two only when found)."""
    folder = owner(source)
    info: dict[str, Any] = {
        "name": source.name,
        "step": source.step,
        "path": str(folder),
        "base": source.base,
    }
    for run in (folder, folder.parent):
        if (run / TRAIN_LOG).is_file():
            loss = _last_loss(run / TRAIN_LOG, source.step)
            if loss is not None:
                info["loss"] = loss
            break
    if source.name in metrics:
        info["metrics"] = metrics[source.name]
    return info
