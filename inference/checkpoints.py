"""Turn whatever folder a user points at (run, checkpoint, bare ControlNet) into one loadable source.

Training leaves four kinds of folders that all hold a usable ControlNet: ``runs/X/checkpoint-N/``
(with ``controlnet/`` inside), the run folder ``runs/X/`` (final ``controlnet/`` inside), ``runs/X/best/``
(with ``validation.select_best``: the best validated ControlNet, its step in ``selection.json``) and the
diffusers ControlNet folder itself. Users should be able to pass any of them, and the base SDXL the
ControlNet was trained against should come along from the saved ``skinforge.yaml`` so they do not
have to remember it. This module does no model loading, so the CLI can reject a wrong path fast.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from common.run_layout import BEST_DIR, CONFIG_FILE, CONTROLNET_DIR, EMA_DIR, SELECTION_FILE

logger = logging.getLogger(__name__)

__all__ = [
    "BEST_NAME",
    "CONFIG_FILE",
    "CONTROLNET_DIR",
    "FINAL_NAME",
    "ControlNetSource",
    "checkpoint_label",
    "default_source",
    "model_field",
    "read_field",
    "recipe_file",
    "resolve_checkpoint",
    "settle_file",
    "training_resolution",
    "with_run_best",
]

CONTROLNET_CLASS = "ControlNetModel"
_STEP_RE = re.compile(r"checkpoint-(\d+)")
FINAL_NAME = "final"
"""What a run's final ControlNet is called in outputs and reports ("final (step N)"), not the run's folder
name, which says nothing about which weights these are."""
BEST_NAME = BEST_DIR
"""What a run's ``best/`` ControlNet is called ("best (step N)")."""


@dataclass(frozen=True)
class ControlNetSource:
    """A ControlNet ready to load: its diffusers folder, the base it was trained on, its step.

    ``name`` is what output folders and grid columns are called; ``base`` is None when no
    ``skinforge.yaml`` says (the caller must then supply one); ``step`` is None for final weights.
    ``base_controlnet`` is the ControlNet training started from (``model.controlnet``), None when the
    run copied the UNet or no skinforge.yaml says; ``vae`` is the run's ``model.vae`` (None: the base's).
    ``final`` marks a run's final weights (``runs/X/controlnet``), whose step is the run's last; ``best``
    marks a run's ``best/`` (kept by ``validation.select_best``), whose step its ``selection.json`` records.
    """

    name: str
    controlnet_dir: Path
    base: str | None
    step: int | None
    base_controlnet: str | None = None
    vae: str | None = None
    final: bool = False
    best: bool = False


def _is_controlnet_folder(folder: Path) -> bool:
    """True if ``folder/config.json`` describes a diffusers ControlNetModel."""
    config = folder / "config.json"
    if not config.is_file():
        return False
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and data.get("_class_name") == CONTROLNET_CLASS


def read_field(config_path: Path, section: str, key: str) -> object:
    """``<section>.<key>`` of a skinforge.yaml; a broken file is an error because guessing a base is worse."""
    try:
        tree = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ValueError(f"{config_path} is not valid YAML: {err}") from err
    part = tree.get(section) if isinstance(tree, dict) else None
    return part.get(key) if isinstance(part, dict) else None


def _read_model_field(config_path: Path, key: str) -> str | None:
    """``model.<key>`` of a skinforge.yaml, if it is a non-empty string."""
    value = read_field(config_path, "model", key)
    return value if isinstance(value, str) and value.strip() else None


def _final_step(folders: list[Path]) -> int | None:
    """The step of a run's final weights: its ``train.max_steps`` (the trainer saves them there)."""
    for folder in folders:
        config = folder / CONFIG_FILE
        if config.is_file():
            steps = read_field(config, "train", "max_steps")
            if isinstance(steps, int) and not isinstance(steps, bool):
                return steps
    return None


def _settle_path(value: str, record: Path) -> str:
    """A relative ``model.*`` path of a run recorded before they were made absolute: it was relative to
    the folder training ran in, which the usual layout (``runs/X``) makes an ancestor of the record, so
    the record's ancestors are tried first, then the working folder. Absolute paths and whatever is
    found nowhere (a hub id) are returned unchanged."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return value
    for folder in [*record.parent.parents, Path.cwd()]:
        if (folder / path).is_dir():
            return os.path.abspath(folder / path)
    return value


def settle_file(value: str, record: Path) -> Path | None:
    """A file a skinforge.yaml names (``data.train_jsonl``, ``validation.jsonl``): relative paths were
    relative to the folder training ran in, so the record's ancestors are tried, then the working folder
    (as _settle_path); None when it is found nowhere (the data was moved or deleted)."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return path if path.is_file() else None
    for folder in [*record.parent.parents, Path.cwd()]:
        if (folder / path).is_file():
            return Path(os.path.abspath(folder / path))
    return None


def model_field(config_path: Path, key: str) -> str | None:
    """``model.<key>`` of a skinforge.yaml, a relative local path settled against it (see _settle_path)."""
    value = _read_model_field(config_path, key)
    return _settle_path(value, config_path) if value is not None else None


def _find_model_field(folders: list[Path], key: str) -> str | None:
    """The first ``model.<key>`` found in the skinforge.yaml of ``folders`` (searched in order), with a
    relative local path settled against the record (see _settle_path)."""
    for folder in folders:
        config = folder / CONFIG_FILE
        if config.is_file():
            value = model_field(config, key)
            if value is not None:
                return value
    return None


def _selected_step(best: Path) -> int | None:
    """The step ``best/selection.json`` records (None when it is missing or unreadable)."""
    try:
        step = json.loads((best / SELECTION_FILE).read_text(encoding="utf-8")).get("step")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as err:
        logger.warning("%s: no step recorded in %s (%s)", best, SELECTION_FILE, err)
        return None
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def _source_step(owner: Path, folders: list[Path], final: bool, best: bool) -> int | None:
    """A final's step is the run's last, a best/'s the one it was selected at, a checkpoint's in its name."""
    if final:
        return _final_step(folders)
    if best:
        return _selected_step(owner)
    return _step_of(owner.name)


def _step_of(name: str) -> int | None:
    """Training step encoded in a ``checkpoint-<N>`` folder name, else None."""
    match = _STEP_RE.fullmatch(name)
    return int(match.group(1)) if match else None


def _not_a_checkpoint(path: Path, reason: str) -> ValueError:
    return ValueError(
        f"{path} is not a ControlNet checkpoint: {reason}; expected a run or checkpoint folder with "
        f"{CONTROLNET_DIR}/config.json, or a folder whose config.json is a {CONTROLNET_CLASS}"
    )


def _missing_reason(folder: Path) -> str:
    """Why ``folder`` was refused; a run without final weights gets its checkpoints listed instead."""
    inside = sorted(
        (p for p in folder.glob("checkpoint-*") if p.is_dir()), key=lambda p: _step_of(p.name) or -1
    )
    if inside:
        return (
            f"no final ControlNet yet, but it holds {', '.join(p.name for p in inside)} (pass one of those)"
        )
    return "no ControlNet config.json found"


def resolve_checkpoint(path: str | Path) -> ControlNetSource:
    """Resolve a run folder, ``checkpoint-N`` folder or bare ControlNet folder to a ControlNetSource.

    A run's final weights (``runs/X`` or ``runs/X/controlnet``) are called ``final`` (``final-ema``) with
    the run's last step; ``runs/X/best`` is ``best`` with the step its selection.json records; a
    ``checkpoint-N/controlnet`` folder is named after its checkpoint, whose step and skinforge.yaml count
    too.
    Raises ValueError naming ``path`` when it is none of these.
    """
    folder = Path(path)
    if not folder.exists():
        raise _not_a_checkpoint(folder, "it does not exist")
    if not folder.is_dir():
        raise _not_a_checkpoint(folder, "it is not a folder")
    folder = folder.absolute()
    if _is_controlnet_folder(folder / CONTROLNET_DIR):
        controlnet_dir, owner = folder / CONTROLNET_DIR, folder
    elif _is_controlnet_folder(folder):
        controlnet_dir = folder
        owner = folder.parent if folder.name in (CONTROLNET_DIR, EMA_DIR) else folder
    else:
        raise _not_a_checkpoint(folder, _missing_reason(folder))
    folders = [owner, controlnet_dir]
    final = controlnet_dir.parent == owner and _step_of(owner.name) is None
    best = controlnet_dir == owner and owner.name == BEST_DIR and (owner / SELECTION_FILE).is_file()
    step = _source_step(owner, folders, final, best)
    source = ControlNetSource(
        (FINAL_NAME if final else owner.name) + ("-ema" if controlnet_dir.name == EMA_DIR else ""),
        controlnet_dir,
        _find_model_field(folders, "base"),
        step,
        _find_model_field(folders, "controlnet"),
        _find_model_field(folders, "vae"),
        final,
        best,
    )
    logger.debug("resolved %s -> %s", path, source)
    return source


def training_resolution(path: str | Path) -> int | None:
    """``data.resolution`` of the skinforge.yaml that trained the ControlNet at ``path`` (with
    ``data.buckets``, the side of its pixel budget), or None when none says."""
    source = resolve_checkpoint(path)
    for folder in (source.controlnet_dir, source.controlnet_dir.parent):
        config = folder / CONFIG_FILE
        if config.is_file():
            side = read_field(config, "data", "resolution")
            if isinstance(side, int) and not isinstance(side, bool) and side > 0:
                return side
    return None


def _run_best(folder: Path) -> Path | None:
    """``folder/best`` when ``folder`` is a run whose ``validation.select_best`` kept a ControlNet there."""
    best = folder / BEST_DIR
    return best if _is_controlnet_folder(best) and (best / SELECTION_FILE).is_file() else None


def with_run_best(paths: Sequence[str | Path]) -> list[str | Path]:
    """``paths`` with each run folder's ``best/`` added right after it (unless given already).

    A run folder stands for the run: its final weights and, with ``validation.select_best``, the best
    validated ones, which is usually the ControlNet a user wants. A run that has a ``best/`` but no final
    weights yet (training still going) stands for its ``best/``.
    """
    given = {Path(path).absolute() for path in paths}
    expanded: list[str | Path] = []
    for path in paths:
        folder = Path(path)
        best = _run_best(folder) if folder.is_dir() and folder.name != BEST_DIR else None
        if best is None or best.absolute() in given:
            expanded.append(path)
            continue
        if _is_controlnet_folder(folder / CONTROLNET_DIR):
            expanded.append(path)
        else:
            logger.info("%s has no final ControlNet yet: using its %s/", folder, BEST_DIR)
        expanded.append(best)
        given.add(best.absolute())
    return expanded


def default_source(sources: Sequence[ControlNetSource]) -> ControlNetSource:
    """The ControlNet to use when none is named: a run's best, else its final weights, else the first
    given that is not a step-0 checkpoint (the untrained copy ``checkpoint.save_at_start`` writes)."""
    if not sources:
        raise ValueError("no checkpoints given")
    for wanted in (lambda s: s.best, lambda s: s.final, lambda s: s.step != 0):
        found = next((source for source in sources if wanted(source)), None)
        if found is not None:
            return found
    return sources[0]


def checkpoint_label(name: str, step: int | None) -> str:
    """How a checkpoint is shown to people: a run's final and best weights with their step ("final (step
    400)", "best (step 300)"); a checkpoint-N already says its step."""
    named = (FINAL_NAME, f"{FINAL_NAME}-ema", BEST_NAME)
    if step is not None and (name in named or name.endswith(tuple(f"-{n}" for n in named))):
        return f"{name} (step {step})"
    return name


def recipe_file(source: ControlNetSource) -> Path | None:
    """The skinforge.yaml that trained ``source`` (in its ControlNet folder, else its owner's), if any."""
    for folder in (source.controlnet_dir, source.controlnet_dir.parent):
        if (folder / CONFIG_FILE).is_file():
            return folder / CONFIG_FILE
    return None
