"""Faults injected into real training runs: kill -9 at random moments (during saves too) over many
restarts, and a full disk. The run must end exactly as an uninterrupted one, or stop saying why with
its earlier checkpoints intact. (NaN/Inf: tests/test_nonfinite.py; signals: tests/test_stop_signals.py;
damaged checkpoints, two writers, changed recipes: tests/test_run_safety.py.)"""

from __future__ import annotations

import errno
import os
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from diffusers import ControlNetModel
from process_helpers import TrainerProcess, logged_steps, start_trainer, wait_for_log, wait_for_step
from training_helpers import reset_accelerator, run_training, set_up_trainer

from train.checkpoint_verify import checkpoint_problems
from train.checkpointing import list_checkpoints, save_checkpoint

pytestmark = pytest.mark.slow
KILL_TEST_STEPS = 200
"""A tiny-model step and its save take milliseconds: with 60 steps a restart that resumed late could
finish, or save too fast for the watcher to see a temp folder, before its kill."""


@pytest.fixture(autouse=True)
def fresh_accelerator_state() -> Iterator[None]:
    yield
    reset_accelerator()


def _kill_during_save(trainer: TrainerProcess, run: Path, timeout: float = 600) -> bool:
    """SIGKILL as soon as a checkpoint's temp folder appears; False if the trainer ended first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and trainer.returncode is None:
        if any(run.glob(".checkpoint-*.tmp")):
            trainer.kill()
            return True
        time.sleep(0.002)
    return False


def test_kill_9_at_random_moments_over_ten_restarts_ends_as_a_straight_run(
    tiny_overrides: list[str], tmp_path: Path
) -> None:
    run = Path(tiny_overrides[3].split("=", 1)[1])
    common = [
        *tiny_overrides,
        f"train.max_steps={KILL_TEST_STEPS}",  # long enough that no restart ends before its kill
        "checkpoint.every_n_steps=2",
        "checkpoint.total_limit=2",
        "log.every_n_steps=1",
    ]
    rng = random.Random(15)
    kills, during_saves, leftovers_removed = 0, 0, 0
    while kills < 10:
        with start_trainer([*common, "checkpoint.resume=latest"], tmp_path / f"{kills}.log") as trainer:
            # this process's own start: leftovers removed, metrics.jsonl cut back to the resumed step
            started = wait_for_log(trainer, r"Resumed from \S+ at step \d+|no checkpoint yet")
            resumed = int(started.rsplit(" ", 1)[1]) if started.startswith("Resumed") else 0
            if kills % 2:
                killed = _kill_during_save(trainer, run)
                during_saves += killed
            else:
                wait_for_step(trainer, run, resumed + 1)
                time.sleep(rng.uniform(0.0, 0.5))
                killed = trainer.returncode is None
                trainer.kill()
            text = trainer.output()
        assert killed, f"the run ended before its kill:\n{text}"
        assert trainer.returncode == -signal.SIGKILL
        leftovers_removed += "left by an interrupted save" in text
        kills += 1
    with start_trainer([*common, "checkpoint.resume=latest"], tmp_path / "final.log") as final:
        text = final.output()
    assert final.returncode == 0, text
    leftovers_removed += "left by an interrupted save" in text

    assert during_saves >= 4 and leftovers_removed >= 1
    assert not list(run.glob(".*.tmp")), "no temp folder outlives the run"
    assert logged_steps(run) == list(range(1, KILL_TEST_STEPS + 1)), "metrics.jsonl: one line per step"
    straight = tmp_path / "straight"
    run_training([*common, "train.num_threads=1", f"train.output_dir={straight}"])
    a = ControlNetModel.from_pretrained(run / "controlnet").state_dict()
    b = ControlNetModel.from_pretrained(straight / "controlnet").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "ten kills changed the final weights"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """A size-limited tmpfs (needs root); yields a function mounting one of the given size."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted: list[Path] = []

    def mount(size_mib: int) -> Path:
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(folder)],
            capture_output=True,
            text=True,
        )
        if result.returncode:
            pytest.skip(f"cannot mount a tmpfs: {result.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "--lazy", str(folder)], check=True)  # open files of failed runs


def test_a_full_disk_stops_naming_free_and_needed_space_and_keeps_earlier_checkpoints(
    tiny_overrides: list[str], small_disk: Callable[[int], Path]
) -> None:
    """A 22 MiB checkpoint on a 56 MiB disk: two fit, the third is refused before a byte is written."""
    run = small_disk(56) / "run"
    overrides = [
        *tiny_overrides,
        f"train.output_dir={run}",
        "train.max_steps=4",
        "checkpoint.every_n_steps=1",
        "checkpoint.total_limit=null",
    ]
    with pytest.raises(OSError, match=r"no space left .* MiB free, a checkpoint needs about") as caught:
        run_training(overrides)
    assert caught.value.errno == errno.ENOSPC
    assert [p.name for p in list_checkpoints(run)] == ["checkpoint-1", "checkpoint-2"]
    assert all(checkpoint_problems(p) == [] for p in list_checkpoints(run))
    assert not list(run.glob(".*.tmp"))

    reset_accelerator()
    shutil.rmtree(run / "checkpoint-1")  # space freed: the run resumes and finishes
    trainer = run_training([*overrides, "checkpoint.total_limit=1"])
    assert trainer.state.step == 4 and [p.name for p in list_checkpoints(run)] == ["checkpoint-4"]


def test_a_save_that_runs_out_of_space_midway_says_so_and_leaves_no_partial_checkpoint(
    tiny_overrides: list[str], small_disk: Callable[[int], Path]
) -> None:
    """The writer's own error ("basic_ios::clear: iostream error" from torch's) becomes a clear one."""
    run = small_disk(8) / "run"
    trainer = set_up_trainer([*tiny_overrides, f"train.output_dir={run}", "train.max_steps=1"])
    with pytest.raises(OSError, match=r"no space left .* MiB free") as caught:
        save_checkpoint(
            trainer.accelerator, trainer._exportable_models(), run, trainer.state, "", None, needed_bytes=1
        )
    assert caught.value.errno == errno.ENOSPC and caught.value.__cause__ is not None
    assert not list(run.glob(".*.tmp")) and list_checkpoints(run) == []
    trainer.close()
