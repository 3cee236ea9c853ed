"""A short run of the demo's recipe on the shipped trained base learns to read held-out conditions.

Measured by `inference.denoising_advantage` on fill outlines never trained on (seed 1): how much lower
the base + ControlNet's denoising error is with each record's own outline than with another record's,
the same noise, prompt and image for both. Why this cannot pass by chance:

- At step 0 (zero output convolutions) the two errors are equal to the last bit: asserted.
- A ControlNet that does not read its condition has the same expected error with either outline,
  whatever its weights, because the held-out outlines are exchangeable. `random_control` (the trained
  net with its zero-initialised layers drawn at random, at the trained layers' scale: as large a change
  to the base, aimed nowhere) is measured as that baseline.
- The trained net must lower the error at every one of three timesteps (t = 500, 750, 900), by
  `MARGIN` on average (relative), win on at least `MIN_WIN_SHARE` of the 24 record × timestep pairs,
  and beat the random baseline's mean advantage by `MARGIN`. Measured when this test was written
  (500 steps with `condition_embedding_init: matched`, the demo's): +10.2 %, +9.4 %, +12.6 %, 21 of
  24 wins; random control 0.0 %. With diffusers' zero init, the same run gives 0.0 % (the condition
  has no path into the trunk yet): the test fails, as it should, for a ControlNet that has not learned.

Sampled images follow the outlines later (the ControlNet paper's "sudden convergence"; bench/RESULTS.md
"Does it learn?" measures it through plain diffusers' pipeline): too long for a test on 2 CPU cores.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from diffusers import ControlNetModel
from training_helpers import reset_accelerator, run_training

from data.fill import build_fill
from inference.adherence import no_control, random_control
from inference.denoising_advantage import measure_denoising_advantage

BASE = Path(__file__).parent.parent / "assets" / "tiny-sdxl-trained"
STEPS = 500
MARGIN = 0.03
MIN_WIN_SHARE = 2 / 3


@pytest.fixture(autouse=True)
def fresh_accelerator_state() -> Iterator[None]:
    yield
    reset_accelerator()


@pytest.mark.slow
def test_a_short_run_reads_held_out_conditions(tmp_path: Path) -> None:
    train = build_fill(tmp_path / "fill", n=512, resolution=128, seed=0)
    held_out = build_fill(tmp_path / "held_out", n=8, resolution=128, seed=1)
    run = tmp_path / "run"
    run_training(
        [
            f"model.base={BASE}",
            f"data.train_jsonl={train}",
            f"train.output_dir={run}",
            f"train.max_steps={STEPS}",
            f"cache.dir={tmp_path / 'cache'}",
            "validation.every_n_steps=0",
            "validation.select_best=null",
            # The recipe these thresholds were measured with on this base (the demo now decays its rate
            # and trains on the circles base; tests/test_demo.py holds it to its image-level targets).
            "train.lr_scheduler=constant_with_warmup",
            f"checkpoint.every_n_steps={STEPS}",
            "checkpoint.save_at_start=false",
            "log.tensorboard=false",
            "log.progress_bar=false",
        ],
        config="configs/fill_demo.yaml",
    )
    trained = ControlNetModel.from_pretrained(run / "controlnet")
    untrained = measure_denoising_advantage(BASE, no_control(BASE), held_out)
    assert all(a.own == a.other for a in untrained), untrained
    learned = measure_denoising_advantage(BASE, trained, held_out)
    chance = measure_denoising_advantage(BASE, random_control(BASE, like=trained), held_out)
    pairs = list(zip(learned, chance, strict=True))
    summary = [(a.timestep, round(a.relative, 3), a.wins, round(b.relative, 3)) for a, b in pairs]
    mean_learned = sum(a.relative for a in learned) / len(learned)
    mean_chance = sum(b.relative for b in chance) / len(chance)
    assert all(a.relative > 0 for a in learned), summary
    assert mean_learned >= MARGIN, summary
    assert sum(a.wins for a in learned) >= MIN_WIN_SHARE * sum(a.records for a in learned), summary
    assert mean_learned >= mean_chance + MARGIN, summary
