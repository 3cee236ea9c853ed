"""The convergence tracker: the first validation `min_gain` above the step-0 baseline, kept across resumes."""

from __future__ import annotations

from train.convergence import ConvergenceTracker


def test_converges_at_the_first_validation_past_the_gain_and_only_once() -> None:
    tracker = ConvergenceTracker(min_gain=0.2)
    scores = [(0, 0.10), (100, 0.12), (200, 0.25), (300, 0.45), (400, 0.60), (500, 0.20)]
    found = [step for step, score in scores if tracker.update(step, score)]
    assert found == [300]
    assert tracker.converged_at == 300
    assert tracker.baseline == 0.10


def test_no_convergence_without_the_gain() -> None:
    tracker = ConvergenceTracker(min_gain=0.2)
    assert not any(tracker.update(step, 0.1 + step / 10_000) for step in range(0, 1000, 100))
    assert tracker.converged_at is None


def test_a_resumed_history_keeps_its_baseline_and_step() -> None:
    tracker = ConvergenceTracker(min_gain=0.2)
    for step, score in [(0, 0.1), (50, 0.5)]:
        tracker.update(step, score)
    resumed = ConvergenceTracker.from_json(tracker.to_json(), min_gain=0.2)
    assert resumed.converged_at == 50 and resumed.baseline == 0.1
    assert not resumed.update(100, 0.9)  # already converged: not announced twice
    stricter = ConvergenceTracker.from_json(tracker.to_json(), min_gain=0.5)
    assert stricter.converged_at is None
    assert stricter.update(100, 0.7)
