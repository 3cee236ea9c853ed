"""Checkpoints that survive a kill: written into a temp folder, then renamed; rotated by step.

A checkpoint folder holds accelerate's state (optimizer, scheduler, RNG, model, EMA), a diffusers-format
`controlnet/` (and `controlnet_ema/` with EMA on), the resolved config (`skinforge.yaml`) and
`trainer_state.json`. Only folders with `trainer_state.json` count: it is written last, so a
half-written folder is never resumed from.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from diffusers import ControlNetModel
from safetensors import SafetensorError

from common.atomic import atomic_write_json, atomic_write_text, remove_stale_temp_files
from common.run_layout import CONFIG_FILE, STATE_FILE
from train.checkpoint_verify import CheckpointError, checkpoint_problems

logger = logging.getLogger(__name__)

PREFIX = "checkpoint-"


@dataclass
class TrainerState:
    """Where the run stands; enough to continue the step count and the data order."""

    step: int
    micro_step: int
    epoch: int
    batches_into_epoch: int
    convergence: dict[str, object] | None = None
    """`ConvergenceTracker.to_json()`: validation edge scores so far and the convergence step, if any."""
    best: dict[str, object] | None = None
    """With `validation.select_best`: the metric, step and score of the ControlNet kept in `best/`."""
    num_processes: int | None = None
    """Ranks that wrote the checkpoint (the data position counts their batches); None before it was kept."""

    @classmethod
    def read(cls, folder: Path) -> TrainerState:
        path = folder / STATE_FILE
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError) as err:
            raise CheckpointError(f"{path} is broken ({err}); resume from another checkpoint") from err


def checkpoint_step(folder: Path) -> int | None:
    match = re.fullmatch(rf"{PREFIX}(\d+)", folder.name)
    return int(match.group(1)) if match else None


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    found = [p for p in output_dir.glob(f"{PREFIX}*") if checkpoint_step(p) is not None]
    return sorted((p for p in found if (p / STATE_FILE).is_file()), key=checkpoint_step)


def resolve_resume(resume: str | None, output_dir: Path) -> Path | None:
    """The checkpoint to resume from, verified: None, 'latest' (the newest intact one, with a warning
    naming the files of each damaged newer one; None if there is none yet) or an explicit folder."""
    if not resume:
        return None
    if resume != "latest":
        folder = Path(resume)
        if not (folder / STATE_FILE).is_file():
            raise FileNotFoundError(
                f"checkpoint.resume: {folder} is not a complete checkpoint (no {STATE_FILE})"
            )
        if problems := checkpoint_problems(folder):
            raise CheckpointError(f"checkpoint.resume: {folder} is damaged: " + "; ".join(problems))
        return folder
    existing = list_checkpoints(output_dir)
    for folder in reversed(existing):
        problems = checkpoint_problems(folder)
        if not problems:
            return folder
        logger.warning("Skipping damaged %s: %s", folder.name, "; ".join(problems))
    if existing:
        raise CheckpointError(
            f"every checkpoint in {output_dir} is damaged (see the warnings above); resume from a copy with "
            "checkpoint.resume=PATH, or move them away to start afresh"
        )
    return None


def remove_stale_temp(output_dir: Path) -> None:
    """Removes the temp folders and files of saves that a dead writer left (call while holding the run's
    lock): a killed SDXL checkpoint save leaves gigabytes."""
    for tmp in sorted(output_dir.glob(".*.tmp")):
        if tmp.is_dir():
            logger.info("Removing %s, left by an interrupted save", tmp)
            shutil.rmtree(tmp)
    remove_stale_temp_files(output_dir)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


FULL_DISK_MARGIN = 16 * 2**20
"""Free space below which a failed write is put down to a full disk (block allocation keeps a little)."""


def _space_error(output_dir: Path, needed: int) -> OSError:
    """An ENOSPC error with the numbers: what is free now and what a checkpoint needs."""
    free = shutil.disk_usage(output_dir).free
    return OSError(
        errno.ENOSPC,
        f"no space left for a checkpoint in {output_dir}: {free / 2**20:.1f} MiB free, a checkpoint "
        f"needs about {needed / 2**20:.1f} MiB; the earlier checkpoints are intact. Free some space or "
        "lower checkpoint.total_limit, then resume",
    )


def save_controlnet(
    controlnet: ControlNetModel,
    folder: Path,
    config_yaml: str,
    json_files: Mapping[str, object] | None = None,
) -> None:
    """Diffusers-format ControlNet plus the config that made it (and `json_files`, name -> content),
    replacing `folder`: the old one is renamed aside (`.NAME.old`) before the new one takes its place, so
    a kill at any moment leaves one complete folder, under its name or aside (`recover_replaced`)."""
    tmp = folder.with_name(f".{folder.name}.tmp")
    aside = folder.with_name(f".{folder.name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    controlnet.save_pretrained(tmp, safe_serialization=True)
    atomic_write_text(tmp / CONFIG_FILE, config_yaml)
    for name, content in (json_files or {}).items():
        atomic_write_json(tmp / name, content)
    if folder.exists():
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(folder, aside)
    os.replace(tmp, folder)
    shutil.rmtree(aside, ignore_errors=True)


def recover_replaced(folder: Path) -> None:
    """Puts back the folder `save_controlnet` had renamed aside when a kill came before the new one was
    in place; removes a leftover aside copy otherwise."""
    aside = folder.with_name(f".{folder.name}.old")
    if not aside.is_dir():
        return
    if folder.exists():
        shutil.rmtree(aside)
    else:
        logger.info("Restoring %s, left aside by an interrupted save", folder)
        os.replace(aside, folder)


def full_controlnet(accelerator: Accelerator, prepared: torch.nn.Module) -> ControlNetModel | None:
    """The whole trained ControlNet on the main process (None elsewhere). Call it on every rank: under
    FSDP the shards are gathered into a full state dict, which needs all of them."""
    if accelerator.distributed_type == DistributedType.FSDP:
        state = accelerator.get_state_dict(prepared)
        if not accelerator.is_main_process:
            return None
        model = ControlNetModel.from_config(accelerator.unwrap_model(prepared).config)
        model.load_state_dict(state)
        return model
    return accelerator.unwrap_model(prepared) if accelerator.is_main_process else None


def save_checkpoint(
    accelerator: Accelerator,
    models: dict[str, ControlNetModel],
    output_dir: Path,
    state: TrainerState,
    config_yaml: str,
    total_limit: int | None,
    needed_bytes: int,
) -> Path:
    """Saves accelerate's state on every rank (DeepSpeed and FSDP need all of them), then `models`
    (folder name -> model, given on the main process) in diffusers format; renames and rotates on the
    main process. Refuses up front, and explains a failed write, when the disk lacks `needed_bytes`."""
    final = output_dir / f"{PREFIX}{state.step}"
    tmp = output_dir / f".{PREFIX}{state.step}.tmp"
    if shutil.disk_usage(output_dir).free < needed_bytes:
        raise _space_error(output_dir, needed_bytes)
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        accelerator.save_state(str(tmp))
        if accelerator.is_main_process:
            for name, model in models.items():
                save_controlnet(model, tmp / name, config_yaml)
            atomic_write_text(tmp / CONFIG_FILE, config_yaml)
            atomic_write_json(tmp / STATE_FILE, asdict(state))
    except (OSError, RuntimeError, SafetensorError) as err:  # torch's writer: RuntimeError "iostream error"
        full = shutil.disk_usage(output_dir).free < FULL_DISK_MARGIN
        written = folder_bytes(tmp) if tmp.is_dir() else 0
        shutil.rmtree(tmp, ignore_errors=True)  # the space of a checkpoint that cannot be finished
        if full or (isinstance(err, OSError) and err.errno == errno.ENOSPC):
            raise _space_error(output_dir, max(needed_bytes, written + FULL_DISK_MARGIN)) from err
        raise
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        rotate_checkpoints(output_dir, total_limit)
        logger.info("Saved %s", final)
    accelerator.wait_for_everyone()
    return final


def rotate_checkpoints(output_dir: Path, total_limit: int | None) -> None:
    if total_limit is None:
        return
    existing = list_checkpoints(output_dir)
    for old in existing[: max(0, len(existing) - total_limit)]:
        logger.info("Removing old checkpoint %s (checkpoint.total_limit=%d)", old, total_limit)
        shutil.rmtree(old)
