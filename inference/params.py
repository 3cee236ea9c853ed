"""params.json: what an output folder's images were made with, so a resume cannot mix two ways.

Written before the first image; a later run with different settings, data or checkpoint for the same
name is refused instead of silently mixing pictures made two different ways.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from data.atomic import atomic_write_json
from inference.checkpoints import ControlNetSource
from inference.settings import GenerationSettings

__all__ = ["PARAMS_FILE", "claim_out_dir", "make_params"]

PARAMS_FILE = "params.json"


def make_params(data: Path, settings: GenerationSettings, sources: list[ControlNetSource]) -> dict[str, Any]:
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


def _conflicts(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable differences that make the existing images unusable together with new ones.

    Settings an older params.json lacks count as their defaults (they are what it was made with).
    """
    old_settings = old.get("settings")
    if isinstance(old_settings, dict):
        old_settings = {**dataclasses.asdict(GenerationSettings()), **old_settings}
    conflicts = _diff("data", old.get("data"), new["data"]) + _diff("settings", old_settings, new["settings"])
    old_checkpoints = old.get("checkpoints") or {}
    for name, entry in new["checkpoints"].items():
        if name in old_checkpoints:
            conflicts += _diff(f"checkpoint {name}", old_checkpoints[name], entry)
    return conflicts


def claim_out_dir(out: Path, params: dict[str, Any]) -> None:
    """Refuse an output folder made with other settings; record ours (merged with earlier checkpoints)."""
    path = out / PARAMS_FILE
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path} is unreadable ({err}); delete it or use another output folder") from err
        conflicts = _conflicts(old, params)
        if conflicts:
            raise ValueError(
                f"{out} holds images made differently; use another output folder or delete it. "
                + "; ".join(conflicts)
            )
        params = {**params, "checkpoints": {**old.get("checkpoints", {}), **params["checkpoints"]}}
    atomic_write_json(path, params)
