"""Guards and helpers for multi-process runs."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator


class LaunchError(RuntimeError):
    """The processes that were started do not form the distributed job they were meant to."""


def check_one_job(accelerator: Accelerator) -> None:
    """Stops N processes that each think they are alone from training N copies into one folder."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != accelerator.num_processes:
        raise LaunchError(
            f"{launched} processes were launched (WORLD_SIZE={launched}) but this one sees a job of "
            f"{accelerator.num_processes}: they did not join one distributed job. On CPU, set "
            "ACCELERATE_USE_CPU=true and launch with --multi_gpu (see launch/accelerate/cpu_2proc.yaml); "
            "on GPUs, check that CUDA is visible to every process."
        )


def deepspeed_clipping_problem(deepspeed_config: dict[str, Any], max_grad_norm: float) -> str | None:
    """Under DeepSpeed the json's "gradient_clipping" clips, and train.max_grad_norm is not used (accelerate's
    clip_grad_norm_ does nothing there): a run must not silently clip at another value than its recipe's."""
    clipping = deepspeed_config.get("gradient_clipping", 0.0)
    if clipping == "auto" or float(clipping) != max_grad_norm:
        return (
            f'the DeepSpeed config has "gradient_clipping": {clipping!r} but train.max_grad_norm is '
            f"{max_grad_norm}: DeepSpeed clips with its own value, so set them equal (0 turns clipping off)"
        )
    return None


def step_generator(seed: int, rank: int, micro_step: int) -> torch.Generator:
    """A fresh generator per micro-step and rank: different noise on each rank, exact on resume."""
    state = np.random.SeedSequence([seed, rank, micro_step]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))
