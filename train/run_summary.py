"""What a finished run says last: where the final ControlNet is, at which step, the last losses, and the
command that evaluates it, so a newcomer's next step is a copy-paste away."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path

__all__ = ["finished_message", "inference_command"]

LIMIT_RECORDS = 8  # a first look: a few records, a couple of minutes on a CPU


def inference_command(run_dir: Path, data_jsonl: str, report_dir: Path) -> str:
    """`python -m inference` over the run's final ControlNet (the run folder) on the held-out set if
    there is one, else the training set, into ``report_dir``."""
    words = [
        "python",
        "-m",
        "inference",
        "--checkpoint",
        str(run_dir),
        "--data",
        data_jsonl,
        "--out",
        str(report_dir),
        "--limit",
        str(LIMIT_RECORDS),
    ]
    return shlex.join(words)


def finished_message(
    final_dir: Path,
    step: int,
    losses: Mapping[str, float],
    run_dir: Path,
    data_jsonl: str,
) -> str:
    """Multi-line summary logged at the end of a run."""
    shown = ", ".join(f"{name} {value:.4g}" for name, value in losses.items() if name.startswith("loss/"))
    report = Path("reports") / run_dir.name
    return "\n".join(
        [
            f"Training finished at step {step}. Final ControlNet: {final_dir}",
            f"  last logged losses: {shown or 'none logged'}",
            "  evaluate it with:",
            f"    {inference_command(run_dir, data_jsonl, report)}",
        ]
    )
