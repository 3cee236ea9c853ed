"""In-process training helpers shared by the trainer test modules."""

from __future__ import annotations

import json
from pathlib import Path

from accelerate.state import AcceleratorState

from train.config import load_config
from train.trainer import ControlNetTrainer

CONFIG = "configs/fill_tiny.yaml"


def reset_accelerator() -> None:
    """Each run builds its own Accelerator; the process-wide state must not leak between runs."""
    AcceleratorState._reset_state(reset_partial_state=True)


def set_up_trainer(overrides: list[str], config: str = CONFIG) -> ControlNetTrainer:
    trainer = ControlNetTrainer(load_config(config, overrides))
    trainer.setup()
    return trainer


def run_training(overrides: list[str], config: str = CONFIG) -> ControlNetTrainer:
    trainer = set_up_trainer(overrides, config)
    trainer.train()
    trainer.cleanup()
    reset_accelerator()
    return trainer


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
