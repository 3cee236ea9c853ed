"""Launched by tests/test_launch.py under `accelerate launch`: trains, then writes what this rank saw.

It records the data indices each rank trained on and a digest of its ControlNet weights, so the test can
prove the processes formed one job (same weights everywhere, a different share of the data each).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

from train.config import load_config
from train.trainer import ControlNetTrainer


class ProbedTrainer(ControlNetTrainer):
    """The real trainer, remembering the record indices of its batches."""

    seen: list[int]

    def compute_losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self.seen.extend(batch["index"].tolist())
        return super().compute_losses(batch)


def weights_digest(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().float().numpy().tobytes())
    return digest.hexdigest()


def main() -> None:
    config_path, *overrides = sys.argv[1:]
    trainer = ProbedTrainer(load_config(config_path, overrides))
    trainer.seen = []
    trainer.setup()
    trainer.train()
    rank = trainer.accelerator.process_index
    probe = {
        "rank": rank,
        "world": trainer.accelerator.num_processes,
        "seen": trainer.seen,
        "digest": weights_digest(trainer.accelerator.unwrap_model(trainer.controlnet)),
    }
    out = Path(trainer.config.train.output_dir) / f"probe-rank{rank}.json"
    out.write_text(json.dumps(probe), encoding="utf-8")
    trainer.cleanup()


if __name__ == "__main__":
    main()
