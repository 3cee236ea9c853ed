"""Check a launch's trainer config before any process is started.

A config error found by the trainers themselves is printed by each rank and then wrapped by the
launcher: accelerate's `CalledProcessError` traceback (one process) or torch-elastic's failure block
(several), ~70 lines around one sentence. Loading the config once in the launcher, before spawning,
turns it into the problem list alone and exit status 2. Only `--config FILE [overrides]` after the
trainer script are read; launches of other scripts are left alone.

On a CUDA machine the loaded recipe is also planned (`train.plan`): a step whose planned peak exceeds the
GPU's memory is refused before the job loads anything, with the savers that would make it fit.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from train.cli_flags import config_from_args, flag_problems
from train.config import KEY_HINTS, SkinforgeConfig
from train.config_loader import ConfigError
from train.smoke import SMOKE_FLAG

__all__ = ["TRAINER_SCRIPT", "precheck", "trainer_argv"]

TRAINER_SCRIPT = "train_controlnet_sdxl.py"
EXIT_CONFIG = 2
SKIP_PLAN_ENV = "SKINFORGE_SKIP_MEMORY_PLAN"
SHARDED_LAUNCH = ("fsdp", "deepspeed", "zero")
"""Launches whose arguments name these are not prechecked (the plan here is one unsharded GPU's)."""


def trainer_argv(launch_args: Sequence[str]) -> list[str] | None:
    """The trainer's own arguments in an `accelerate launch` argument list, or None if it does not
    launch the trainer (a `-m module` launch or another script)."""
    for index, arg in enumerate(launch_args):
        if Path(arg).name == TRAINER_SCRIPT:
            return list(launch_args[index + 1 :])
    return None


def precheck(launch_args: Sequence[str]) -> int | None:
    """Load the trainer's config as the trainers would; print its problems and return 2, or None if it
    loads (or the launch is not the trainer's)."""
    argv = trainer_argv(launch_args)
    if argv is None or "--config" not in argv:
        return None
    argv, flag_errors = flag_problems(argv, KEY_HINTS)
    smoke = SMOKE_FLAG in argv
    argv = [arg for arg in argv if arg != SMOKE_FLAG]
    at = argv.index("--config")
    config, overrides = argv[at + 1] if at + 1 < len(argv) else "", [*argv[:at], *argv[at + 2 :]]
    try:
        loaded = config_from_args(config, overrides, flag_errors, smoke)
    except ConfigError as err:
        sys.stderr.write(f"{err}\n")
        return EXIT_CONFIG
    if any(word in arg.lower() for arg in launch_args for word in SHARDED_LAUNCH):
        return None  # sharded ControlNet state: planned by `python -m train.plan --strategy`, not here
    return memory_refusal(loaded)


def memory_refusal(config: SkinforgeConfig) -> int | None:
    """On a CUDA machine: plan the recipe's step (`train.plan`, one GPU's share, cache on) and refuse it
    (exit 2) when its planned peak does not fit the GPU, naming savers that would make it fit.
    `SKINFORGE_SKIP_MEMORY_PLAN=1` launches anyway."""
    import torch

    if not torch.cuda.is_available() or os.environ.get(SKIP_PLAN_ENV) == "1":
        return None
    from train.plan import plan
    from train.plan.devices import GIB, RESERVED_GIB
    from train.plan.suggest import savers_that_fit

    memory_gib = torch.cuda.get_device_properties(0).total_memory / GIB
    result = plan(config, count_flops=False)
    if result.fits(memory_gib):
        return None
    savers = savers_that_fit(result, memory_gib)
    sys.stderr.write(
        f"train.plan: this recipe's step needs {result.peak.total / GIB:.1f} GiB per GPU (+{RESERVED_GIB:g} "
        f"kept free), more than this GPU's {memory_gib:.1f} GiB. "
        + (f"It would fit with: {' '.join(savers)}. " if savers else "")
        + f"Plan it with python -m train.plan; set {SKIP_PLAN_ENV}=1 to launch anyway\n"
    )
    return EXIT_CONFIG
