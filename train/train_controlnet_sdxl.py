"""Train an SDXL ControlNet.

    accelerate launch train/train_controlnet_sdxl.py --config configs/fill_tiny.yaml train.max_steps=50

Everything after `--config FILE` is a dotted override (`section.key=value`, the value parsed as YAML).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from data.process_exit import exit_without_teardown
from train.config import load_config
from train.config_loader import ConfigError
from train.trainer import ControlNetTrainer


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="YAML recipe, e.g. configs/fill_tiny.yaml")
    parser.add_argument("overrides", nargs="*", help="dotted overrides such as train.lr=1e-5")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as err:
        sys.stderr.write(f"{err}\n")
        return 2
    trainer = ControlNetTrainer(config)
    trainer.setup()
    trainer.train()
    trainer.cleanup()
    return 0


if __name__ == "__main__":
    exit_without_teardown(main())
