"""Stop signals sent to a real trainer, its `accelerate launch` or `python -m train.launch`: the step is
finished, a checkpoint written, exit 75; a second signal exits at once; a second writer is refused."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from diffusers import ControlNetModel
from process_helpers import ROOT, logged_steps, start_trainer, wait_for_step
from training_helpers import reset_accelerator, run_training

from train.checkpoint_verify import checkpoint_problems
from train.checkpointing import list_checkpoints
from train.stop_signals import EXIT_STOPPED

LONG_RUN = ["train.max_steps=1000", "checkpoint.every_n_steps=1000", "log.every_n_steps=1"]
"""A run that only a signal ends, logging every step."""


@pytest.fixture(autouse=True)
def fresh_accelerator_state() -> Iterator[None]:
    yield
    reset_accelerator()


def _run_dir(overrides: list[str]) -> Path:
    return Path(next(o for o in overrides if o.startswith("train.output_dir=")).split("=", 1)[1])


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return ControlNetModel.from_pretrained(folder).state_dict()


def test_the_sbatch_job_forwards_usr1_and_requeues_after_a_checkpointed_stop(tmp_path: Path) -> None:
    """The template's shell logic with stand-ins for srun and scontrol: SLURM's USR1 reaches the task,
    and its exit status 75 requeues the job."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_ins = {
        "srun": "#!/bin/bash\ntrap 'echo task got USR1 >> \"$LOG\"; exit 75' USR1\n"
        'echo started >> "$LOG"\nwhile true; do sleep 0.05; done\n',
        "scontrol": '#!/bin/bash\nif [ "$1" = requeue ]; then echo "scontrol $*" >> "$LOG"\n'
        "else echo node1; fi\n",
    }
    for name, text in stand_ins.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)
    log = tmp_path / "log"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "LOG": str(log),
        "SLURM_JOB_ID": "42",
        "SLURM_JOB_NODELIST": "node1",
        "MAIN_IP": "127.0.0.1",
    }
    job = subprocess.Popen(
        ["bash", str(ROOT / "launch/slurm/train_controlnet.sbatch"), "configs/fill_tiny.yaml"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    end = time.monotonic() + 30
    while not (log.is_file() and "started" in log.read_text()) and time.monotonic() < end:
        time.sleep(0.05)
    job.send_signal(signal.SIGUSR1)
    text, _ = job.communicate(timeout=30)
    assert job.returncode == EXIT_STOPPED, text
    assert log.read_text().splitlines() == ["started", "task got USR1", "scontrol requeue 42"]


@pytest.mark.slow
@pytest.mark.parametrize(("launcher", "sig"), [("wrapper", signal.SIGTERM), ("direct", signal.SIGINT)])
def test_a_stop_signal_checkpoints_the_step_and_the_resumed_run_ends_as_a_straight_one(
    tiny_overrides: list[str], tmp_path: Path, launcher: str, sig: signal.Signals
) -> None:
    run = _run_dir(tiny_overrides)
    common = [*tiny_overrides, "train.max_steps=10", "checkpoint.every_n_steps=100", "log.every_n_steps=1"]
    with start_trainer(common, tmp_path / "log", launcher) as trainer:
        wait_for_step(trainer, run, 2)
        trainer.send_signal(sig)
        text = trainer.output()
    assert trainer.returncode == EXIT_STOPPED, text
    stopped_at = logged_steps(run)[-1]
    assert 2 <= stopped_at < 10
    assert f"{sig.name} received: stopping after the current step" in text
    assert f"Stopped on {sig.name} after step {stopped_at}" in text
    assert [p.name for p in list_checkpoints(run)] == [f"checkpoint-{stopped_at}"]
    assert not (run / "controlnet").exists(), "an interrupted run has no final weights"

    run_training([*common, "train.num_threads=1", "checkpoint.resume=latest"])
    straight = tmp_path / "straight"
    run_training([*common, "train.num_threads=1", f"train.output_dir={straight}"])
    assert logged_steps(run) == list(range(1, 11))
    a, b = _weights(run / "controlnet"), _weights(straight / "controlnet")
    assert all(torch.equal(a[k], b[k]) for k in a), "stop + resume drifted from the straight run"


@pytest.mark.slow
def test_sigterm_to_plain_accelerate_launch_still_checkpoints_the_orphaned_trainer(
    tiny_overrides: list[str], tmp_path: Path
) -> None:
    """accelerate's one-process launcher dies at once on SIGTERM; its trainer is told by the kernel
    (PR_SET_PDEATHSIG) and stops at a checkpoint instead of training on alone."""
    run = _run_dir(tiny_overrides)
    with start_trainer([*tiny_overrides, *LONG_RUN], tmp_path / "log", "accelerate") as launcher:
        wait_for_step(launcher, run, 2)
        launcher.send_signal(signal.SIGTERM)
        launcher.output()
        end = time.monotonic() + 300
        while "Stopped on SIGTERM" not in (text := launcher.log.read_text()) and time.monotonic() < end:
            time.sleep(0.1)  # the orphaned trainer writes on into the same file
    stopped_at = logged_steps(run)[-1]
    assert "Stopped on SIGTERM" in text, text
    assert [p.name for p in list_checkpoints(run)] == [f"checkpoint-{stopped_at}"]


@pytest.mark.slow
def test_usr1_to_the_wrapper_stops_two_ranks_at_one_step(tiny_overrides: list[str], tmp_path: Path) -> None:
    run = _run_dir(tiny_overrides)
    overrides = [*tiny_overrides, *LONG_RUN, f"cache.dir={run}/cache"]
    with start_trainer(overrides, tmp_path / "log", "wrapper", processes=2) as wrapper:
        wait_for_step(wrapper, run, 2)
        wrapper.send_signal(signal.SIGUSR1)
        text = wrapper.output()
    assert wrapper.returncode == EXIT_STOPPED, text
    stopped_at = logged_steps(run)[-1]
    for rank in (0, 1):
        assert f"[rank {rank}] train.trainer: Stopped on SIGUSR1 after step {stopped_at}" in text
    (checkpoint,) = list_checkpoints(run)
    assert checkpoint.name == f"checkpoint-{stopped_at}" and checkpoint_problems(checkpoint) == []
    assert sorted(p.name for p in checkpoint.glob("random_states_*.pkl")) == [
        "random_states_0.pkl",
        "random_states_1.pkl",
    ]


@pytest.mark.slow
def test_a_second_signal_exits_at_once_without_a_checkpoint(
    tiny_overrides: list[str], fill_jsonl: Path, tmp_path: Path
) -> None:
    """Step 1 is followed by a long validation; the first SIGTERM waits for it, the second does not."""
    run = _run_dir(tiny_overrides)
    overrides = [
        *tiny_overrides,
        "train.max_steps=5",
        "log.every_n_steps=1",
        "validation.every_n_steps=1",
        "validation.at_start=false",
        f"validation.jsonl={fill_jsonl}",
        "validation.max_records=1",
        "validation.num_inference_steps=1000",
        "validation.ocr=false",
    ]
    with start_trainer(overrides, tmp_path / "log") as trainer:
        wait_for_step(trainer, run, 1)
        trainer.send_signal(signal.SIGTERM)
        time.sleep(3)  # past the window in which copies of one request are taken as one
        assert trainer.returncode is None, "the validation ended before the second signal: make it longer"
        sent = time.monotonic()
        trainer.send_signal(signal.SIGTERM)
        text = trainer.output()
        took = time.monotonic() - sent
    assert trainer.returncode == -signal.SIGTERM, text
    assert took < 5
    assert "SIGTERM again: exiting at once" in text
    assert list_checkpoints(run) == []


@pytest.mark.slow
def test_two_trainers_in_one_folder_the_second_is_refused_naming_the_first(
    tiny_overrides: list[str], tmp_path: Path
) -> None:
    run = _run_dir(tiny_overrides)
    overrides = [*tiny_overrides, *LONG_RUN]
    with start_trainer(overrides, tmp_path / "first.log") as first:
        wait_for_step(first, run, 1)
        with start_trainer(overrides, tmp_path / "second.log") as second:
            text = second.output()
        assert second.returncode != 0
        assert f'is being written by another run ({{"pid": {first.pid}, "host"' in text, text
        assert first.returncode is None, "the refused run must leave the first one alone"
        first.send_signal(signal.SIGTERM)
        first_text = first.output()
    assert first.returncode == EXIT_STOPPED, first_text
    steps = logged_steps(run)
    assert steps == list(range(1, len(steps) + 1)), "metrics.jsonl holds one run's lines, in order"
