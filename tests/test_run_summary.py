"""A finished run ends with the final ControlNet's path, its step, the last losses and the next command."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from train.run_summary import finished_message

REPO = Path(__file__).resolve().parents[1]


def test_message_names_path_step_losses_and_command(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "kb"
    text = finished_message(
        run / "controlnet", 40, {"loss/total": 0.1234567, "lr/controlnet": 1e-5}, run, "v.jsonl"
    )
    lines = text.splitlines()
    assert lines[0] == f"Training finished at step 40. Final ControlNet: {run / 'controlnet'}"
    assert lines[1] == "  last logged losses: loss/total 0.1235", "losses only, not learning rates"
    assert lines[3].split() == [
        "python", "-m", "inference", "--checkpoint", str(run), "--data", "v.jsonl",
        "--out", "reports/kb", "--limit", "8",
    ]  # fmt: skip


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )


@pytest.mark.slow
def test_a_real_run_ends_with_a_command_that_works(tiny_overrides: list[str], tmp_path: Path) -> None:
    overrides = [
        *tiny_overrides,
        "train.max_steps=2",
        "checkpoint.every_n_steps=2",
        "validation.every_n_steps=0",
    ]
    done = _python("train/train_controlnet_sdxl.py", "--config", "configs/fill_tiny.yaml", *overrides)
    assert done.returncode == 0, done.stderr[-3000:]
    log = done.stderr
    assert "1 process(es) (world size); train.batch_size=2 per process x 1 gradient accumulation" in log
    run = Path(tiny_overrides[3].split("=", 1)[1])
    assert f"Training finished at step 2. Final ControlNet: {run / 'controlnet'}" in log
    command = next(
        line.strip() for line in log.splitlines() if line.strip().startswith("python -m inference")
    )
    words = shlex.split(command)
    words[words.index("--out") + 1] = str(tmp_path / "report")  # not the repository's reports/
    words[words.index("--limit") + 1] = "2"
    evaluated = _python(*words[1:], "--steps", "2", "--no-ocr")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert (tmp_path / "report" / "report.html").is_file()
