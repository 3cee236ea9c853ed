"""The edge detector that made a dataset's conditions, so native evaluation scores with the same one.

``python -m data canny`` records its detector in the dataset it builds: ``canny_params.json`` beside
``train.jsonl`` (builder "canny": cv2.Canny with ``low``/``high``, optional ``blur``, colour or ``gray``,
see data.canny). Scoring outputs at other thresholds than the conditions were made with would rate
even the dataset's own targets far below 1 (50/80 conditions scored at 100/200: F1 0.52-0.9988).

Datasets without that file (the procedural fill set's drawn outlines, glyph or caption builds on top
of a canny build, which change or only carry the conditions) keep the default detector; pass
``--canny-low/--canny-high`` there.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

from data.build_state import params_path
from inference.metrics import EdgeSettings

__all__ = ["CANNY_BUILDER", "dataset_edge_settings", "recorded_detector"]

logger = logging.getLogger(__name__)

CANNY_BUILDER = "canny"


def recorded_detector(data: Path) -> dict[str, int | bool] | None:
    """``{"low", "high", "blur", "gray"}`` that made the conditions of the jsonl ``data``, or None.

    None when the folder has no canny build, when the build gave every record one shared condition
    (those are not edges of the images), or when another builder's params sit beside it (a later
    ``--overwrite`` build into the same folder leaves the old canny_params.json behind).
    """
    path = params_path(data.parent, CANNY_BUILDER)
    if not path.is_file():
        return None
    others = sorted(p.name for p in data.parent.glob("*_params.json") if p != path)
    if others:
        logger.warning(
            "%s sits beside %s: which builder made the conditions is unclear; default edge detector used",
            path.name, ", ".join(others),
        )  # fmt: skip
        return None
    try:
        params = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is unreadable ({err}); it records how the conditions were made") from err
    if params.get("builder") != CANNY_BUILDER or params.get("shared_condition"):
        return None
    try:
        return {
            "low": int(params["low"]),
            "high": int(params["high"]),
            "blur": int(params.get("blur", 0)),
            "gray": bool(params.get("gray", False)),
        }
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: no usable Canny thresholds ({err!r})") from err


def dataset_edge_settings(
    data: Path, base: EdgeSettings | None = None, low: int | None = None, high: int | None = None
) -> EdgeSettings:
    """``base`` (default EdgeSettings()) with the detector recorded for ``data``; ``low``/``high`` given
    explicitly win over the record (the blur and colour mode of the record are kept)."""
    settings = base or EdgeSettings()
    detector = recorded_detector(data)
    if detector is not None:
        origin = str(params_path(data.parent, CANNY_BUILDER))
        settings = replace(settings, **detector, origin=origin)  # type: ignore[arg-type]
        logger.info(
            "Edges scored with the detector that made the conditions (%s): Canny %d/%d", origin,
            settings.low, settings.high,
        )  # fmt: skip
    if low is not None or high is not None:
        settings = replace(
            settings,
            low=settings.low if low is None else low,
            high=settings.high if high is None else high,
            origin="command line" if detector is None else f"command line over {settings.origin}",
        )
    return settings
