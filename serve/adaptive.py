"""The per-step hook of a batch: cancellation, and adaptive steps (stop once the latents settle).

Adaptive steps (the SD-accelerator idea): late denoising steps of a sampler move the latents less
and less; once successive latents differ by less than ``threshold`` (relative L2, the worst image of
the batch) for ``PATIENCE`` steps in a row, the rest are skipped and the current latents decoded.
Opt-in per request, since it trades a little fidelity to the full schedule for time (see the README
for the measured steps saved and SSIM/edge F1 against the full-step image).
"""

from __future__ import annotations

import torch

from serve.errors import Cancelled
from serve.jobs import Job

__all__ = ["PATIENCE", "StepWatcher"]

PATIENCE = 2
"""Steps in a row below the threshold before stopping: one small step can be a sampler's wobble."""
MIN_FRACTION = 0.25
"""Never stop before this fraction of the steps: the first steps change little in relative terms
on some schedules and the picture is not there yet."""


class StepWatcher:
    """``inference.pipeline.StepHook`` for one batch; counts the steps it let run."""

    def __init__(self, jobs: list[Job], steps: int, threshold: float | None) -> None:
        self.jobs = jobs
        self.steps = steps
        self.threshold = threshold
        self.steps_run = 0
        self.last_change: float | None = None
        self._previous: torch.Tensor | None = None
        self._calm = 0

    def reset(self) -> None:
        """Forget the previous latents (a batch split after an OOM starts over)."""
        self._previous = None
        self._calm = 0

    def __call__(self, step: int, latents: torch.Tensor) -> bool:
        if all(job.abandoned for job in self.jobs):
            raise Cancelled(f"every request of the batch gave up (at step {step})")
        self.steps_run = step + 1
        if self.threshold is None:
            return False
        current = latents.detach().float()
        stop = False
        if self._previous is not None:
            change = (current - self._previous).flatten(1).norm(dim=1) / self._previous.flatten(1).norm(dim=1)
            self.last_change = float(change.max())
            self._calm = self._calm + 1 if self.last_change < self.threshold else 0
            stop = self._calm >= PATIENCE and self.steps_run >= MIN_FRACTION * self.steps
        self._previous = current.clone()
        return stop and self.steps_run < self.steps
