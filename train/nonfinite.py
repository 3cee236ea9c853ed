"""Non-finite losses, gradients and weights: caught where they happen, never saved as a good checkpoint.

A NaN or Inf in a step's losses or gradient norm is caught after backward and before the optimizer
applies it (one host sync per optimizer step, agreed across ranks). The policy is `stop` (default: the
run ends naming the step, the losses and the batch's records) or `skip` (the update is dropped, counted,
at most `max_skipped_steps` in a row). An update that was finite but turned the weights non-finite (an
absurd learning rate overflows them) is caught before a checkpoint is written: the run stops and the
newest checkpoint on disk stays the last good one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType

logger = logging.getLogger(__name__)


class NonFiniteError(FloatingPointError):
    """Raised to stop a run on a non-finite loss, gradient or weight; the message says what and where."""

    def __init__(self, message: str, step: int, values: dict[str, float] | None = None) -> None:
        super().__init__(message)
        self.step = step
        self.values = values or {}


def _any_rank(accelerator: Accelerator, bad: bool) -> bool:
    """`bad` on any rank. Only where ranks can disagree: an all-reduce of a Python-made tensor per step
    costs a sync, and one still being released by gloo's worker thread when the process exits deadlocks
    interpreter shutdown (the thread waits for the GIL that shutdown holds)."""
    if accelerator.num_processes == 1:
        return bad
    flag = torch.tensor(float(bad), device=accelerator.device)
    return bool(accelerator.reduce(flag, "sum").item() > 0)


@dataclass
class NonFiniteGuard:
    policy: str
    """`stop` or `skip` (train.on_nonfinite)."""
    max_skipped: int
    skipped_total: int = 0
    skipped_in_a_row: int = 0

    def step_is_finite(
        self,
        accelerator: Accelerator,
        step: int,
        losses: dict[str, torch.Tensor],
        grad_norm: torch.Tensor | None,
        records: Sequence[str],
    ) -> bool:
        """True: apply step `step`'s update. False: skip it. Raises NonFiniteError to stop the run."""
        values = [v.detach().float().reshape(()) for v in losses.values()]
        if grad_norm is not None:
            values.append(grad_norm.detach().float().reshape(()).to(values[0].device))
        bad_here = not bool(torch.stack(values).isfinite().all())
        # With a gradient norm every rank decides alike on its own: gradients are all-reduced (DDP) or
        # the norm is global (FSDP), so a NaN loss on one rank is a NaN norm on all. DeepSpeed gives none.
        bad = bad_here if grad_norm is not None else _any_rank(accelerator, bad_here)
        if not bad:
            self.skipped_in_a_row = 0
            return True
        what = {k: float(v.detach()) for k, v in losses.items()}
        if grad_norm is not None:
            what["grad_norm"] = float(grad_norm)
        if self.policy == "skip" and self.skipped_in_a_row < self.max_skipped:
            self.skipped_in_a_row += 1
            self.skipped_total += 1
            logger.warning("Skipped step %d's update: non-finite %s (records %s)", step, what, list(records))
            return False
        reason = (
            f"{self.max_skipped} steps in a row were skipped (train.max_skipped_steps)"
            if self.policy == "skip"
            else "train.on_nonfinite=stop"
        )
        raise NonFiniteError(
            f"non-finite loss or gradient at step {step} ({reason}): {what}; this rank's batch: "
            f"{list(records)}. The newest checkpoint holds the last good weights; lower train.lr or "
            "check these records, or set train.on_nonfinite=skip to drop such steps",
            step,
            what,
        )

    @staticmethod
    def check_weights(accelerator: Accelerator, parameters: Iterable[torch.Tensor], step: int) -> None:
        """Raises NonFiniteError if any weight (of this rank's shard) is NaN/Inf: nothing is saved then."""
        params = [p.detach() for p in parameters]
        bad_here = bool(params) and not bool(torch.stack([p.isfinite().all() for p in params]).all())
        sharded = accelerator.distributed_type == DistributedType.FSDP  # elsewhere every rank has all
        if _any_rank(accelerator, bad_here) if sharded else bad_here:
            raise NonFiniteError(
                f"the ControlNet's weights are non-finite after step {step} (a finite update overflowed "
                "them: the learning rate is far too high?); no checkpoint written for this step, the "
                "newest one on disk holds the last good weights",
                step,
            )
