"""The trainer as a real process (direct, through `accelerate launch` or `python -m train.launch`),
for tests that signal, kill or race it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).parent.parent
TRAINER = "train/train_controlnet_sdxl.py"
CONFIG = "configs/fill_tiny.yaml"


def trainer_command(overrides: list[str], launcher: str = "direct", processes: int = 1) -> list[str]:
    """`direct` runs the script; `accelerate` and `wrapper` (python -m train.launch) launch it with the
    1-process or the 2-process CPU config."""
    script = [TRAINER, "--config", CONFIG, *overrides, "train.num_threads=1"]
    if launcher == "direct":
        return [sys.executable, *script]
    config = "launch/accelerate/cpu_1proc.yaml" if processes == 1 else "launch/accelerate/cpu_2proc.yaml"
    args = ["--config_file", config, "--main_process_port", str(29700 + os.getpid() % 200)]
    if launcher == "accelerate":
        return [str(Path(sys.executable).with_name("accelerate")), "launch", *args, *script]
    return [sys.executable, "-m", "train.launch", *args, *script]


class TrainerProcess:
    """A trainer started in the background, its output in a file (a pipe nobody reads would fill and
    block it); `with` kills what is still running when the test ends, passed or not."""

    def __init__(self, command: list[str], log: Path) -> None:
        self.log = log
        env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
        with log.open("w") as sink:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.pid = self.process.pid

    def __enter__(self) -> TrainerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)  # the launcher and its trainers
            self.process.wait()

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def send_signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    def kill(self) -> None:
        self.process.kill()

    def output(self, timeout: float = 600) -> str:
        """Everything the process printed, once it has ended."""
        self.process.wait(timeout)
        return self.log.read_text(errors="replace")


def start_trainer(
    overrides: list[str], log: Path, launcher: str = "direct", processes: int = 1
) -> TrainerProcess:
    return TrainerProcess(trainer_command(overrides, launcher, processes), log)


def logged_steps(run: Path) -> list[int]:
    """Steps of metrics.jsonl's whole lines (the last one may be half-written)."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    steps = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            steps.append(json.loads(line)["step"])
        except (json.JSONDecodeError, KeyError):
            continue
    return steps


def wait_for_log(trainer: TrainerProcess, pattern: str, timeout: float = 600) -> str:
    """Until the trainer's output matches the regular expression `pattern`; returns the match."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if found := re.search(pattern, trainer.log.read_text(errors="replace")):
            return found.group(0)
        if trainer.returncode is not None:
            raise AssertionError(
                f"trainer ended ({trainer.returncode}) before {pattern!r}:\n{trainer.output()}"
            )
        time.sleep(0.02)
    raise AssertionError(f"no {pattern!r} after {timeout} s")


def wait_for_step(trainer: TrainerProcess, run: Path, step: int, timeout: float = 600) -> None:
    """Until metrics.jsonl logs `step` (needs log.every_n_steps=1); fails if the process ends first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if step in logged_steps(run):
            return
        if trainer.returncode is not None:
            raise AssertionError(
                f"trainer ended ({trainer.returncode}) before step {step}:\n{trainer.output()}"
            )
        time.sleep(0.05)
    raise AssertionError(
        f"no step {step} after {timeout} s:\n{trainer.log.read_text(errors='replace')[-3000:]}"
    )
