"""Guards and helpers for multi-process runs."""

from __future__ import annotations

import os

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


def step_generator(seed: int, rank: int, micro_step: int) -> torch.Generator:
    """A fresh generator per micro-step and rank: different noise on each rank, exact on resume."""
    state = np.random.SeedSequence([seed, rank, micro_step]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))
