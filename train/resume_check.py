"""Does the recipe a run resumes with match the one its checkpoint was trained with?

A resume restores the optimizer, the LR schedule and the data position of the old recipe, so a changed
batch size replays the saved position in batches of another size, a changed resolution or dataset trains
on other data, and a changed learning rate is silently overridden by the restored schedule. Such changes
are refused, listed, unless `checkpoint.allow_config_change=true`; harmless ones (logging, validation,
checkpointing cadence, max_steps, speed settings) pass with a log line.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import yaml

from common.run_layout import CONFIG_FILE
from train.checkpoint_verify import CheckpointError
from train.config import SkinforgeConfig
from train.config_loader import to_dict

logger = logging.getLogger(__name__)

HARMLESS_SECTIONS = ("log", "validation", "cache", "checkpoint")
HARMLESS_KEYS = {
    "train.max_steps",
    "train.output_dir",
    "train.num_threads",
    "train.compile",
    "train.gradient_checkpointing",
    "train.attention",
    "train.tf32",
    "train.zero_grad_set_to_none",
    "train.fused_adamw",
    "train.channels_last",
    "train.keep_freed_host_memory",
    "train.on_nonfinite",
    "train.max_skipped_steps",
    "data.num_workers",
    "ema.offload_to_cpu",
}
"""Settings that change neither what is learnt nor how the restored state is read."""
IGNORED = {"checkpoint.resume", "checkpoint.allow_config_change"}
"""How this run was told to resume, not what it trains."""
PATH_KEYS = {"model.base", "model.controlnet", "model.vae", "data.train_jsonl"}


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _same(key: str, old: Any, new: Any) -> bool:
    if key in PATH_KEYS and isinstance(old, str) and isinstance(new, str) and old and new:
        return os.path.realpath(os.path.expanduser(old)) == os.path.realpath(os.path.expanduser(new))
    return old == new


def config_changes(checkpoint: Path, config: SkinforgeConfig) -> tuple[list[str], list[str]]:
    """(breaking, harmless) changes from the checkpoint's recorded config to `config`, as
    'key: old -> new' lines."""
    path = checkpoint / CONFIG_FILE
    try:
        old = _flatten(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise CheckpointError(f"{path} is unreadable ({err})") from err
    new = _flatten(to_dict(config))
    breaking, harmless = [], []
    for key in new:
        if key in IGNORED or key not in old or _same(key, old[key], new[key]):
            continue  # a key the checkpoint's version lacked was at its default
        line = f"{key}: {old[key]!r} -> {new[key]!r}"
        section = key.split(".", 1)[0]
        (harmless if section in HARMLESS_SECTIONS or key in HARMLESS_KEYS else breaking).append(line)
    return breaking, harmless


def check_resume_config(checkpoint: Path, config: SkinforgeConfig) -> None:
    """Raises CheckpointError listing the breaking changes, unless they are allowed; logs the rest."""
    breaking, harmless = config_changes(checkpoint, config)
    if harmless:
        logger.info("Resuming %s with changed settings: %s", checkpoint, "; ".join(harmless))
    if not breaking:
        return
    if config.checkpoint.allow_config_change:
        logger.warning(
            "Resuming %s with a changed recipe (checkpoint.allow_config_change=true): %s",
            checkpoint,
            "; ".join(breaking),
        )
        return
    raise CheckpointError(
        f"{checkpoint} was trained with another recipe; resuming it with this one would mix the two: "
        + "; ".join(breaking)
        + ". Use another train.output_dir for a new run, or set checkpoint.allow_config_change=true to "
        "resume anyway (the restored optimizer and LR schedule keep their own values)"
    )
