"""Is a checkpoint folder whole? Cheap structural checks, run when a checkpoint is picked for a resume.

A checkpoint is renamed into place only once complete, but a disk can still damage it later (a
truncated copy, a bad sector, a user's cleanup). Each file is checked without loading it: safetensors
headers parse and their tensors end exactly at the file's end (truncation), torch's zip pickles
(`*.bin`, `*.pkl`) have their central directory (written last), `trainer_state.json` parses, the
config parses. The problems name the file.
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

import yaml

from common.run_layout import CONFIG_FILE, CONTROLNET_DIR, STATE_FILE

REQUIRED = (STATE_FILE, CONFIG_FILE, f"{CONTROLNET_DIR}/config.json")
STATE_KEYS = ("step", "micro_step", "epoch", "batches_into_epoch")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed from; the message names the files and what is wrong."""


def safetensors_problem(path: Path) -> str | None:
    """Why `path` is not a whole safetensors file, or None."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            return f"{size} bytes, shorter than a safetensors header"
        (length,) = struct.unpack("<Q", head)
        if length > size - 8:
            return f"header of {length} bytes in a file of {size}: truncated"
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            return f"unreadable header ({err})"
    ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"]
    expected = 8 + length + max(ends, default=0)
    if expected != size:
        return f"{size} bytes where its header describes {expected}: truncated or damaged"
    return None


def _zip_problem(path: Path) -> str | None:
    if not zipfile.is_zipfile(path):
        return f"{path.stat().st_size} bytes, not a whole torch archive (truncated?)"
    return None


def _state_problem(path: Path) -> str | None:
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        return f"not valid JSON ({err})"
    if not isinstance(state, dict) or any(not isinstance(state.get(k), int) for k in STATE_KEYS):
        return f"lacks integer {', '.join(STATE_KEYS)}"
    return None


def _yaml_problem(path: Path) -> str | None:
    try:
        yaml.safe_load(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as err:
        return f"not valid YAML ({err})"
    return None


def checkpoint_problems(folder: Path) -> list[str]:
    """'<file>: <what is wrong>' for each damaged or missing file of the checkpoint `folder`."""
    problems = [f"{folder / name}: missing" for name in REQUIRED if not (folder / name).is_file()]
    weights = folder / CONTROLNET_DIR
    if weights.is_dir() and not any(weights.glob("*.safetensors")):
        problems.append(f"{weights}: no .safetensors weights")
    checks = {".safetensors": safetensors_problem, ".bin": _zip_problem, ".pkl": _zip_problem}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            if path.name == STATE_FILE:
                problem = _state_problem(path)
            elif path.name == CONFIG_FILE:
                problem = _yaml_problem(path)
            elif path.suffix in checks:
                problem = checks[path.suffix](path)
            else:
                continue
        except OSError as err:
            problem = f"unreadable ({err.strerror})"
        if problem:
            problems.append(f"{path}: {problem}")
    return problems
