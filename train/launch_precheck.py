"""Check a launch's trainer config before any process is started.

A config error found by the trainers themselves is printed by each rank and then wrapped by the
launcher: accelerate's `CalledProcessError` traceback (one process) or torch-elastic's failure block
(several), ~70 lines around one sentence. Loading the config once in the launcher, before spawning,
turns it into the problem list alone and exit status 2. Only `--config FILE [overrides]` after the
trainer script are read; launches of other scripts are left alone.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from train.cli_flags import config_from_args, flag_problems
from train.config import KEY_HINTS
from train.config_loader import ConfigError
from train.smoke import SMOKE_FLAG

__all__ = ["TRAINER_SCRIPT", "precheck", "trainer_argv"]

TRAINER_SCRIPT = "train_controlnet_sdxl.py"
EXIT_CONFIG = 2


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
        config_from_args(config, overrides, flag_errors, smoke)
    except ConfigError as err:
        sys.stderr.write(f"{err}\n")
        return EXIT_CONFIG
    return None
