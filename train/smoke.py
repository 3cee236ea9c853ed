"""`--smoke`: any shipped recipe, shrunk to a minutes-long CPU run on the user's own data.

A 1024² recipe on real SDXL does not run on a laptop CPU; its plumbing (the data, buckets, caching,
checkpoints, resume, the final ControlNet and the inference command after it) can. The preset swaps in
the shipped tiny SDXL base (`assets/tiny-sdxl-trained`), trains at 128² (buckets keep the recipe's
aspect ratios) for 20 steps of batch 1 in fp32, checkpoints every 10 steps into
`runs/<recipe>_smoke`, and turns off what needs the full model or a held-out set (EMA, validation).
Overrides given after it still win, e.g. `data.train_jsonl=datasets/my_skins/train.jsonl`.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["SMOKE_FLAG", "SMOKE_OVERRIDES", "smoke_overrides"]

SMOKE_FLAG = "--smoke"
SMOKE_OVERRIDES: tuple[str, ...] = (
    "model.base=assets/tiny-sdxl-trained",
    "model.controlnet=null",
    "model.vae=null",
    "model.variant=null",
    "data.resolution=128",
    "data.num_workers=0",
    "train.max_steps=20",
    "train.lr_warmup_steps=2",
    "train.batch_size=1",
    "train.gradient_accumulation_steps=1",
    "train.mixed_precision=no",
    "train.gradient_checkpointing=none",
    "ema.enabled=false",
    "checkpoint.every_n_steps=10",
    "checkpoint.total_limit=2",
    "log.every_n_steps=5",
    "validation.every_n_steps=0",
)


def smoke_overrides(config: str) -> list[str]:
    """The preset for the recipe at ``config``; its run folder is ``runs/<recipe name>_smoke``."""
    return [*SMOKE_OVERRIDES, f"train.output_dir=runs/{Path(config).stem}_smoke"]
