"""Train an SDXL ControlNet.

    accelerate launch train/train_controlnet_sdxl.py --config configs/fill_tiny.yaml train.max_steps=50

Everything after `--config FILE` is a dotted override (`section.key=value`, the value parsed as YAML);
a `--flag` such as `--max_steps 10` is named with the override that does it (`train.max_steps=10`).
`--smoke` shrinks any recipe to a minutes-long CPU run on the shipped tiny base (train/smoke.py):

    python train/train_controlnet_sdxl.py --config configs/keyboard_1024.yaml --smoke \
        data.train_jsonl=datasets/my_skins/train.jsonl
Config and dataset problems are printed once (by rank 0), as a list without a traceback, exit status 2.

SIGTERM, SIGINT or SIGUSR1 stop the run after the current step with a checkpoint, exit status 75; a
second signal exits at once. Launch with `python -m train.launch` (same arguments as `accelerate
launch`) so that signals sent to the launcher reach the trainers.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from common.process_exit import exit_without_teardown
from data.records import DatasetError
from train.cli_flags import config_from_args, flag_problems
from train.config import KEY_HINTS
from train.config_loader import ConfigError
from train.stop_signals import EXIT_STOPPED, StopRequest, report_exit_status, stop_with_parent
from train.trainer import ControlNetTrainer


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="YAML recipe, e.g. configs/fill_tiny.yaml")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="shrink the recipe to a minutes-long CPU run on the tiny shipped base (train/smoke.py); "
        "overrides still win",
    )
    parser.add_argument("overrides", nargs="*", help="dotted overrides such as train.lr=1e-5")
    return parser.parse_args(argv)


def report_once(message: str) -> None:
    """Write a problem once per launch (rank 0), not once per process."""
    if os.environ.get("RANK", "0") == "0":
        sys.stderr.write(f"{message}\n")


def main(argv: Sequence[str] | None = None) -> int:
    argv, flag_errors = flag_problems(list(sys.argv[1:] if argv is None else argv), KEY_HINTS)
    args = parse_args(argv)
    try:
        config = config_from_args(args.config, args.overrides, flag_errors, args.smoke)
    except ConfigError as err:
        report_once(str(err))
        return 2
    stop = StopRequest()
    stop.install()
    stop_with_parent()
    trainer = ControlNetTrainer(config, stop)
    try:
        trainer.setup()
    except DatasetError as err:  # its file:line: field list is the whole story; no traceback
        report_once(str(err))
        return 2
    trainer.train()
    if trainer.stopped:
        trainer.close()
        report_exit_status(EXIT_STOPPED)
        return EXIT_STOPPED
    trainer.cleanup()
    return 0


if __name__ == "__main__":
    exit_without_teardown(main())
