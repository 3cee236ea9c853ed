"""When did the ControlNet start to follow its condition? The ControlNet paper's "sudden convergence".

The paper (fill50k on SD1.5) shows a model that ignores its condition for thousands of steps and then,
within a few hundred, follows it. The trainer answers "is it learning yet?" with a measurement: every
validation scores edge adherence, and the first validation whose score is `min_gain` above the step-0
baseline (a ControlNet whose output convolutions are still zero, i.e. no control) is the convergence
step. The history travels in `trainer_state.json`, so a resumed run keeps its baseline.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

CONVERGENCE_METRIC = "validation/edge_f1_tolerant"


@dataclass
class ConvergenceTracker:
    min_gain: float
    history: list[tuple[int, float]] = field(default_factory=list)
    """(step, score) of every validation so far; the first one is the baseline."""
    converged_at: int | None = None

    @property
    def baseline(self) -> float | None:
        return self.history[0][1] if self.history else None

    def update(self, step: int, score: float) -> bool:
        """Records a validation; True exactly once, at the validation where convergence is reached."""
        self.history.append((step, score))
        if self.converged_at is not None or len(self.history) < 2:
            return False
        if score - self.history[0][1] < self.min_gain:
            return False
        self.converged_at = step
        previous_step, previous = self.history[-2]
        logger.info(
            "Sudden convergence at step %d: %s %.3f (step %d: %.3f; step-%d baseline %.3f, gain >= %.2f)",
            step,
            CONVERGENCE_METRIC,
            score,
            previous_step,
            previous,
            self.history[0][0],
            self.history[0][1],
            self.min_gain,
        )
        return True

    def to_json(self) -> dict[str, object]:
        return {
            "metric": CONVERGENCE_METRIC,
            "min_gain": self.min_gain,
            "converged_at": self.converged_at,
            "history": [[step, score] for step, score in self.history],
        }

    @classmethod
    def from_json(cls, obj: dict[str, object], min_gain: float) -> ConvergenceTracker:
        """Continues a saved history; the gain threshold is the current config's."""
        history = [(int(step), float(score)) for step, score in obj.get("history", [])]  # type: ignore[union-attr]
        tracker = cls(min_gain, [])
        for step, score in history:
            tracker.history.append((step, score))
            if (
                tracker.converged_at is None
                and len(tracker.history) > 1
                and score - history[0][1] >= min_gain
            ):
                tracker.converged_at = step
        return tracker
