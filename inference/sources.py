"""The list of ControlNets one batch run compares: user checkpoints, each with its base settled, plus
optionally the ControlNet their training started from.

Everything here is checked before any model is loaded, so a wrong path costs a second, not a load.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from common.base_model import base_problem
from inference.checkpoints import CONTROLNET_DIR, ControlNetSource, resolve_checkpoint

__all__ = ["AUTO", "BASE_CONTROLNET_NAME", "owner", "resolve_sources"]

AUTO = "auto"
"""``base_controlnet`` value meaning: the ``model.controlnet`` the checkpoints were trained from."""
BASE_CONTROLNET_NAME = "base-controlnet"


def owner(source: ControlNetSource) -> Path:
    """The run or checkpoint folder a ControlNet belongs to (itself when it is a bare folder)."""
    folder = source.controlnet_dir
    return folder.parent if folder.name == CONTROLNET_DIR else folder


def run_of(source: ControlNetSource) -> Path:
    """The run folder a ControlNet comes from (a final's own folder, a checkpoint's parent)."""
    return owner(source) if source.final else owner(source).parent


def _unique_names(sources: list[ControlNetSource]) -> list[ControlNetSource]:
    """Give same-named checkpoints of different runs distinct names ('runA-checkpoint-40', 'runA-final').

    Image folders and grid columns are keyed by name, so two 'checkpoint-40' would overwrite each other.
    """
    names = [s.name for s in sources]
    renamed = [
        dataclasses.replace(s, name=f"{run_of(s).name}-{s.name}") if names.count(s.name) > 1 else s
        for s in sources
    ]
    final = [s.name for s in renamed]
    clashes = sorted({n for n in final if final.count(n) > 1})
    if clashes:
        raise ValueError(f"checkpoints with the same name given more than once: {', '.join(clashes)}")
    return renamed


def _check_base(base: str, where: str) -> None:
    """Fail before any loading, in one line, when the base is neither a diffusers SDXL folder nor a hub
    repo that can be fetched now (diffusers would blame the hub in a traceback)."""
    if problem := base_problem(base, where, "pass the base SDXL folder with --base"):
        raise FileNotFoundError(problem)


def _with_base(source: ControlNetSource, base: str | None, given: str | Path) -> ControlNetSource:
    chosen = base or source.base
    if not chosen:
        raise ValueError(
            f"checkpoint {given} has no skinforge.yaml with model.base; pass the base SDXL with --base"
        )
    _check_base(chosen, "--base" if base else f"model.base of checkpoint {given}")
    return dataclasses.replace(source, base=chosen)


def _base_controlnet(first: ControlNetSource, path: str | Path, base: str | None) -> ControlNetSource:
    """The comparison ControlNet: ``path``, or for AUTO the ``model.controlnet`` ``first`` started from.

    It is named BASE_CONTROLNET_NAME; found through AUTO it is the run's state at step 0.
    """
    auto = str(path) == AUTO
    if auto and first.base_controlnet is None:
        raise ValueError(
            f"--base-controlnet: checkpoint {first.name} names no model.controlnet in its skinforge.yaml "
            "(its training started from a copy of the UNet), so there is no base ControlNet to compare; "
            "pass one with --base-controlnet PATH"
        )
    folder = first.base_controlnet if auto else path
    try:
        source = resolve_checkpoint(folder)  # type: ignore[arg-type]
    except ValueError as err:
        raise ValueError(f"--base-controlnet: {err}") from err
    renamed = dataclasses.replace(source, name=BASE_CONTROLNET_NAME, step=0 if auto else None)
    return _with_base(renamed, base or first.base, folder)  # type: ignore[arg-type]


def resolve_sources(
    checkpoints: Sequence[str | Path], base: str | None, base_controlnet: str | Path | None = None
) -> list[ControlNetSource]:
    """Resolve every checkpoint and settle its base (the ``base`` argument wins over skinforge.yaml);
    with ``base_controlnet`` (a folder or AUTO) the comparison ControlNet comes first."""
    if not checkpoints:
        raise ValueError("no checkpoints given")
    sources = [_with_base(resolve_checkpoint(path), base, path) for path in checkpoints]
    if base_controlnet is not None:
        sources.insert(0, _base_controlnet(sources[0], base_controlnet, base))
    return _unique_names(sources)
