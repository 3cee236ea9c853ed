"""params.json: what an output folder's images were made with, so a resume cannot mix two ways.

Written before the first image; a later run with different settings, data or checkpoint for the same
name is refused instead of silently mixing pictures made two different ways. A checkpoint is known by its
weights' content, not only its path: each weight file's size, mtime and SHA-256 are recorded; a file
whose size and mtime are unchanged is taken as unchanged (no read), any other is hashed again, so weights
replaced at the same path are caught (that checkpoint's images are stale: the caller makes them again)
and a merely touched file is not.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from common.atomic import atomic_write_json
from inference.checkpoints import ControlNetSource
from inference.settings import GenerationSettings

__all__ = ["PARAMS_FILE", "claim_out_dir", "make_params"]

logger = logging.getLogger(__name__)

PARAMS_FILE = "params.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin")


def make_params(data: Path, settings: GenerationSettings, sources: list[ControlNetSource]) -> dict[str, Any]:
    """Everything that decides what an image looks like (seeds and record index are in its file name)."""
    return {
        "data": str(data),
        "settings": dataclasses.asdict(settings),
        "checkpoints": {s.name: {"controlnet_dir": str(s.controlnet_dir), "base": s.base} for s in sources},
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def weights_fingerprint(folder: Path, known: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """File name -> size, mtime_ns and sha256 of each weight file in `folder`; a file whose size and
    mtime match `known` (an earlier fingerprint) keeps its recorded hash without being read."""
    known = known or {}
    prints = {}
    for path in sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file()):
        stat = path.stat()
        entry = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        before = known.get(path.name)
        same_file = isinstance(before, dict) and all(before.get(k) == v for k, v in entry.items())
        prints[path.name] = {**entry, "sha256": before["sha256"] if same_file else _sha256(path)}
    return prints


def _weights_changed(old: Any, new: dict[str, dict[str, Any]]) -> list[str]:
    """'file: sha256 before -> now' for each weight file whose content differs from the recorded one."""
    if not isinstance(old, dict):
        return []  # a params.json from before weights were recorded
    changed = []
    for file, entry in new.items():
        before = old.get(file)
        before_sha = before.get("sha256") if isinstance(before, dict) else None
        if before_sha != entry["sha256"]:
            changed.append(f"{file}: sha256 {str(before_sha)[:12]} -> {entry['sha256'][:12]}")
    return changed


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
            before = {k: v for k, v in old_checkpoints[name].items() if k != "weights"}
            now = {k: v for k, v in entry.items() if k != "weights"}
            conflicts += _diff(f"checkpoint {name}", before, now)
    return conflicts


def claim_out_dir(out: Path, params: dict[str, Any]) -> list[str]:
    """Refuse an output folder made with other settings; record ours (merged with earlier checkpoints).
    Returns the checkpoints whose weights changed since their images were made (logged here)."""
    path = out / PARAMS_FILE
    old: dict[str, Any] = {}
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path} is unreadable ({err}); delete it or use another output folder") from err
    stale = []
    for name, entry in params["checkpoints"].items():
        known = ((old.get("checkpoints") or {}).get(name) or {}).get("weights")
        entry["weights"] = weights_fingerprint(Path(entry["controlnet_dir"]), known)
        if changed := _weights_changed(known, entry["weights"]):
            logger.warning("%s: weights replaced since its images were made (%s)", name, "; ".join(changed))
            stale.append(name)
    if old:
        conflicts = _conflicts(old, params)
        if conflicts:
            raise ValueError(
                f"{out} holds images made differently; use another output folder or delete it. "
                + "; ".join(conflicts)
            )
        params = {**params, "checkpoints": {**old.get("checkpoints", {}), **params["checkpoints"]}}
    atomic_write_json(path, params)
    return stale
