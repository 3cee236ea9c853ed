"""Saver combinations of one recipe, each marked fits / does not fit on 24, 40 and 80 GB cards.

Traced once per (resolution, precision, gradient checkpointing); the optimizer (8-bit AdamW's state),
the caches and the parallel strategies are formulas on those traces. SDPA and xformers plan alike
(memory-efficient kernels on a GPU, neither keeps the score matrix), so they share a row.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Iterator

from train.config import SkinforgeConfig
from train.plan.devices import GIB, TABLE_SIZES_GB, fits
from train.plan.planner import Layout, Plan, rewrite, with_train
from train.plan.trace import adamw_8bit_state_bytes, trace_step

logger = logging.getLogger(__name__)

PRECISIONS = ("no", "bf16")
"""fp16 plans as bf16 (same sizes)."""
CHECKPOINTING = ("none", "controlnet", "unet", "both")
OPTIMIZERS = ("adamw", "adamw_8bit")


def sweep(
    config: SkinforgeConfig, resolutions: Iterable[int], layouts: list[Layout], gpu: bool = True
) -> Iterator[Plan]:
    """Plans of every combination, resolution by resolution."""
    for side in resolutions:
        for precision in PRECISIONS:
            for checkpointing in CHECKPOINTING:
                base = with_train(
                    config, mixed_precision=precision, gradient_checkpointing=checkpointing, optimizer="adamw"
                )
                base = dataclasses.replace(base, data=dataclasses.replace(base.data, resolution=side))
                logger.info("tracing %d², %s, checkpointing %s", side, precision, checkpointing)
                trace = trace_step(base, side, side, gpu=gpu)
                for optimizer in OPTIMIZERS:
                    cfg = with_train(base, optimizer=optimizer)
                    traced = trace
                    if optimizer == "adamw_8bit":
                        kinds = dict(trace.peak.by_kind)
                        kinds["optimizer"] = adamw_8bit_state_bytes(trace.trainable_numels)
                        traced = dataclasses.replace(trace, peak=type(trace.peak)(kinds))
                    for layout in layouts:
                        yield rewrite(cfg, traced, layout, side, side)


def table(plans: list[Plan]) -> str:
    """Markdown, one row per plan."""
    head = ["resolution", "precision", "checkpointing", "optimizer", "cache", "strategy", "peak GiB"]
    head += [f"{size} GB" for size in TABLE_SIZES_GB] + ["TFLOP/step"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in plans:
        t, lay = p.config.train, p.layout
        strategy = "1 GPU" if lay.strategy == "single" else f"{lay.strategy} x{lay.gpus}"
        marks = ["fits" if fits(p.peak.total, size) else "no" for size in TABLE_SIZES_GB]
        precision = "bf16/fp16" if t.mixed_precision != "no" else "fp32"
        cells = [
            f"{p.height}²",
            precision,
            t.gradient_checkpointing,
            t.optimizer,
            "on" if lay.cache else "off",
        ]
        cells += [strategy, f"{p.peak.total / GIB:.1f}", *marks, f"{p.trace.flops_per_step / 1e12:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
