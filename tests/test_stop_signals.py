"""Stop signals sent to a real trainer, its `accelerate launch` or `python -m train.launch`: the step is
finished, a checkpoint written, exit 75; a second signal exits at once; a second writer is refused.

The stops under `python -m train.launch` sleep `SLOW_STOP_S` between the stop decision and the checkpoint
(`SKINFORGE_TEST_SLOW_STOP_S`): longer than any launcher's grace before SIGKILL (accelerate 1.16's
one-process launcher: 5 s; torchrun: 30 s unless told otherwise), as a step and a checkpoint at SDXL size
take, so a launcher that kills its trainers mid-checkpoint fails these tests."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import accelerate
import psutil
import pytest
import torch
from diffusers import ControlNetModel
from packaging.version import Version
from process_helpers import ROOT, logged_steps, start_trainer, wait_for_step
from training_helpers import reset_accelerator, run_training

from train.checkpoint_verify import checkpoint_problems
from train.checkpointing import list_checkpoints
from train.stop_signals import (
    ACCELERATE_KILLS_SINCE,
    EXIT_STOPPED,
    SLOW_STOP_ENV,
    report_launcher_grace,
)

LONG_RUN = ["train.max_steps=1000", "checkpoint.every_n_steps=1000", "log.every_n_steps=1"]
"""A run that only a signal ends, logging every step."""
SLOW_STOP_S = 8
"""Past accelerate 1.16's 5 s: the one-process stops."""
SLOWER_THAN_TORCHRUN_S = 35
"""Past torchrun's default 30 s: the two-rank stop."""


@pytest.fixture(autouse=True)
def fresh_accelerator_state() -> Iterator[None]:
    yield
    reset_accelerator()


def _run_dir(overrides: list[str]) -> Path:
    return Path(next(o for o in overrides if o.startswith("train.output_dir=")).split("=", 1)[1])


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return ControlNetModel.from_pretrained(folder).state_dict()


def _signal_every_process(root: int, sig: signal.Signals) -> None:
    """As SLURM ends a job step and as `kill` of a whole container: the process and all its descendants."""
    processes = [psutil.Process(root), *psutil.Process(root).children(recursive=True)]
    for process in processes:
        process.send_signal(sig)


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
@pytest.mark.parametrize(
    ("launcher", "sig", "to"),
    [
        ("wrapper", signal.SIGTERM, "launcher"),
        ("wrapper", signal.SIGTERM, "every process"),
        ("direct", signal.SIGINT, "launcher"),
    ],
)
def test_a_stop_signal_checkpoints_the_step_and_the_resumed_run_ends_as_a_straight_one(
    tiny_overrides: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    launcher: str,
    sig: signal.Signals,
    to: str,
) -> None:
    """A stop that takes longer than any launcher's grace: the wrapper's trainer keeps it whether the
    signal reaches the wrapper (`docker stop`, `kill`) or every process (SLURM's time limit)."""
    if launcher == "wrapper":
        monkeypatch.setenv(SLOW_STOP_ENV, str(SLOW_STOP_S))
    run = _run_dir(tiny_overrides)
    common = [*tiny_overrides, "train.max_steps=10", "checkpoint.every_n_steps=100", "log.every_n_steps=1"]
    with start_trainer(common, tmp_path / "log", launcher) as trainer:
        wait_for_step(trainer, run, 2)
        if to == "every process":
            _signal_every_process(trainer.pid, sig)
        else:
            trainer.send_signal(sig)
        text = trainer.output()
    assert trainer.returncode == EXIT_STOPPED, text
    stopped_at = logged_steps(run)[-1]
    assert 2 <= stopped_at < 10
    assert f"{sig.name} received: stopping after the current step" in text
    assert f"Stopped on {sig.name} after step {stopped_at}" in text
    assert [p.name for p in list_checkpoints(run)] == [f"checkpoint-{stopped_at}"]
    assert not (run / "controlnet").exists(), "an interrupted run has no final weights"

    monkeypatch.delenv(SLOW_STOP_ENV, raising=False)
    run_training([*common, "train.num_threads=1", "checkpoint.resume=latest"])
    straight = tmp_path / "straight"
    run_training([*common, "train.num_threads=1", f"train.output_dir={straight}"])
    assert logged_steps(run) == list(range(1, 11))
    a, b = _weights(run / "controlnet"), _weights(straight / "controlnet")
    assert all(torch.equal(a[k], b[k]) for k in a), "stop + resume drifted from the straight run"


@pytest.mark.slow
def test_plain_accelerate_launch_names_its_grace_at_start_and_a_quick_stop_still_checkpoints(
    tiny_overrides: list[str], tmp_path: Path
) -> None:
    """accelerate's one-process launcher cannot be made to wait: 1.16 SIGKILLs its trainer 5 s after a
    SIGTERM, older ones exit at once and leave it alone (the kernel tells it, PR_SET_PDEATHSIG). The
    trainer says so at start, naming the safe command; a stop quicker than that still checkpoints."""
    run = _run_dir(tiny_overrides)
    with start_trainer([*tiny_overrides, *LONG_RUN], tmp_path / "log", "accelerate") as launcher:
        wait_for_step(launcher, run, 2)
        launcher.send_signal(signal.SIGTERM)
        launcher.output()
        end = time.monotonic() + 300
        while "Stopped on SIGTERM" not in (text := launcher.log.read_text()) and time.monotonic() < end:
            time.sleep(0.1)  # an orphaned trainer writes on into the same file
    if Version(accelerate.__version__) >= ACCELERATE_KILLS_SINCE:
        assert f"accelerate launch {accelerate.__version__} kills this trainer 5 s after a SIGTERM" in text
    else:
        assert f"accelerate launch {accelerate.__version__} exits at once on a stop signal" in text
    assert "python -m train.launch (the same arguments as accelerate launch)" in text
    stopped_at = logged_steps(run)[-1]
    assert "Stopped on SIGTERM" in text, text
    assert [p.name for p in list_checkpoints(run)] == [f"checkpoint-{stopped_at}"]


def test_a_torchrun_worker_names_torchruns_grace_and_the_safe_command(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Plain `accelerate launch` with several processes: torchrun's 30 s by default, or what its
    TORCH_ELASTIC_SHUTDOWN_TIMEOUT says."""
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
    monkeypatch.delenv("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", raising=False)
    monkeypatch.delenv("SKINFORGE_EXIT_STATUS_FILE", raising=False)
    report_launcher_grace()
    monkeypatch.setenv("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "45")
    report_launcher_grace()
    first, second = (r.getMessage() for r in caplog.records)
    assert first.startswith("torchrun kills the trainers 30 s after a stop signal")
    assert second.startswith("torchrun kills the trainers 45 s after a stop signal")
    assert "python -m train.launch (the same arguments as accelerate launch) gives them 600 s" in first


@pytest.mark.slow
def test_usr1_to_the_wrapper_stops_two_ranks_at_one_step(
    tiny_overrides: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torchrun forwards USR1 and waits for a stop longer than its default 30 s."""
    monkeypatch.setenv(SLOW_STOP_ENV, str(SLOWER_THAN_TORCHRUN_S))
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
