"""Which savers would make a configuration that does not fit, fit: cheapest first (formulas on the
trace already made, then one more trace with gradient checkpointing of both models)."""

from __future__ import annotations

import dataclasses

from train.plan.planner import Plan, rewrite, with_train
from train.plan.trace import adamw_8bit_state_bytes, trace_step


def _with_8bit(plan: Plan) -> Plan:
    kinds = dict(plan.trace.peak.by_kind)
    kinds["optimizer"] = adamw_8bit_state_bytes(plan.trace.trainable_numels)
    trace = dataclasses.replace(plan.trace, peak=type(plan.trace.peak)(kinds))
    cfg = with_train(plan.config, optimizer="adamw_8bit")
    return rewrite(cfg, trace, plan.layout, plan.height, plan.width)


def savers_that_fit(plan: Plan, memory_gib: float) -> list[str] | None:
    """Overrides (`train.key=value`) that make `plan` fit `memory_gib`, or None if none tried does."""
    t = plan.config.train
    tried: list[tuple[list[str], Plan]] = []
    if t.optimizer != "adamw_8bit":
        tried.append((["train.optimizer=adamw_8bit"], _with_8bit(plan)))
    for overrides, candidate in tried:
        if candidate.fits(memory_gib):
            return overrides
    if t.gradient_checkpointing != "both":
        cfg = with_train(plan.config, gradient_checkpointing="both")
        trace = trace_step(cfg, plan.height, plan.width, count_flops=False)
        checkpointed = rewrite(cfg, trace, plan.layout, plan.height, plan.width)
        if checkpointed.fits(memory_gib):
            return ["train.gradient_checkpointing=both"]
        if t.optimizer != "adamw_8bit" and _with_8bit(checkpointed).fits(memory_gib):
            return ["train.gradient_checkpointing=both", "train.optimizer=adamw_8bit"]
    return None
