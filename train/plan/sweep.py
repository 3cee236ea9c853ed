"""Saver combinations of one recipe, each marked fits / does not fit on 24, 40 and 80 GB cards.

Traced once per (resolution, precision, gradient checkpointing); the optimizer (8-bit AdamW's state),
the caches and the parallel strategies are formulas on those traces. SDPA and xformers plan alike
(memory-efficient kernels on a GPU, neither keeps the score matrix), so they share a row.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Iterator
from typing import Any

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


def plan_rows(plans: Iterable[Plan]) -> list[dict[str, Any]]:
    """Plans as JSON-ready rows (what `--json` writes and `table` reads)."""
    return [
        {
            "resolution": p.height,
            "train": dataclasses.asdict(p.config.train),
            "layout": dataclasses.asdict(p.layout),
            "peak_bytes": p.peak.by_kind | {"total": p.peak.total},
            "flops_per_step": p.trace.flops_per_step,
            "notes": p.notes,
        }
        for p in plans
    ]


def _layout_name(layout: dict[str, Any]) -> str:
    if layout["strategy"] == "single":
        return "1 GPU" + ("" if layout["cache"] else ", cache off")
    return f"{layout['strategy']} ×{layout['gpus']}"


def _smallest_card(total_bytes: int) -> str:
    return next((f"{size}" for size in TABLE_SIZES_GB if fits(total_bytes, size)), "none")


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown, one row per (resolution, precision, checkpointing, optimizer); per layout the planned
    peak in GiB and, in parentheses, the smallest of the 24/40/80 GB cards it fits (and so all larger)."""
    layouts: list[str] = []
    grouped: dict[tuple, dict[str, dict[str, Any]]] = {}
    for row in rows:
        t = row["train"]
        key = (row["resolution"], t["mixed_precision"], t["gradient_checkpointing"], t["optimizer"])
        name = _layout_name(row["layout"])
        layouts += [name] if name not in layouts else []
        grouped.setdefault(key, {})[name] = row
    head = ["resolution", "precision", "checkpointing", "optimizer", *layouts, "TFLOP/step"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (side, precision, checkpointing, optimizer), by_layout in grouped.items():
        cells = [f"{side}²", "bf16/fp16" if precision != "no" else "fp32", checkpointing, optimizer]
        for name in layouts:
            row = by_layout.get(name)
            total = row["peak_bytes"]["total"] if row else None
            cells.append("" if total is None else f"{total / GIB:.1f} ({_smallest_card(total)})")
        any_row = next(iter(by_layout.values()))
        cells.append(f"{any_row['flops_per_step'] / 1e12:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
