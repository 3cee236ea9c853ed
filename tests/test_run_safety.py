"""A run folder is never silently mixed up: one writer, verified checkpoints, honest resumes, no leftovers."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from training_helpers import read_metrics, reset_accelerator, run_training, set_up_trainer

from common.run_lock import RunFolderBusy, RunLock
from train.checkpoint_verify import CheckpointError, checkpoint_problems
from train.checkpointing import resolve_resume


@pytest.fixture(autouse=True)
def fresh_accelerator_state() -> Iterator[None]:
    yield
    reset_accelerator()


@pytest.fixture
def trained(tiny_overrides: list[str]) -> tuple[Path, list[str]]:
    """A 2-step run with checkpoint-1 and checkpoint-2, and the overrides that made it."""
    overrides = [*tiny_overrides, "train.max_steps=2", "checkpoint.every_n_steps=1", "log.every_n_steps=1"]
    run_training(overrides)
    return Path(tiny_overrides[3].split("=", 1)[1]), overrides


def _truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def test_a_damaged_newest_checkpoint_is_named_and_latest_falls_back(
    trained: tuple[Path, list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    run, _ = trained
    assert checkpoint_problems(run / "checkpoint-2") == []
    weights = run / "checkpoint-2" / "model.safetensors"
    _truncate(weights, weights.stat().st_size // 2)
    (run / "checkpoint-2" / "optimizer.bin").write_bytes(b"")
    problems = checkpoint_problems(run / "checkpoint-2")
    assert any(p.startswith(f"{weights}:") and "truncated" in p for p in problems), problems
    assert any("optimizer.bin" in p for p in problems), problems

    with caplog.at_level(logging.WARNING):
        assert resolve_resume("latest", run) == run / "checkpoint-1"
    assert "Skipping damaged checkpoint-2" in caplog.text and str(weights) in caplog.text
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        resolve_resume(str(run / "checkpoint-2"), run)

    (run / "checkpoint-1" / "trainer_state.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"every checkpoint .* is damaged"):
        resolve_resume("latest", run)
    assert "checkpoint-1/trainer_state.json: not valid JSON" in caplog.text


def test_resume_after_a_damaged_checkpoint_redoes_its_steps(
    trained: tuple[Path, list[str]], capfd: pytest.CaptureFixture[str]
) -> None:
    run, overrides = trained
    _truncate(run / "checkpoint-2" / "controlnet" / "diffusion_pytorch_model.safetensors", 100)
    capfd.readouterr()
    trainer = run_training([*overrides, "checkpoint.resume=latest"])
    assert trainer.state.step == 2
    log = capfd.readouterr().err
    assert "Skipping damaged checkpoint-2" in log and "checkpoint-1 at step 1" in log
    assert checkpoint_problems(run / "checkpoint-2") == []
    assert [m["step"] for m in read_metrics(run)] == [1, 2]


def test_a_changed_recipe_is_refused_with_the_list_of_changes(trained: tuple[Path, list[str]]) -> None:
    run, overrides = trained
    resume = [*overrides, "checkpoint.resume=latest", "train.max_steps=3"]
    before = (run / "skinforge.yaml").read_text()
    with pytest.raises(CheckpointError) as refused:
        set_up_trainer([*resume, "train.batch_size=1", "train.lr=3e-4", "data.max_records=8"])
    message = str(refused.value)
    for change in ("train.batch_size: 2 -> 1", "train.lr: 0.0001 -> 0.0003", "data.max_records: None -> 8"):
        assert change in message
    assert "allow_config_change" in message and "max_steps" not in message
    assert (run / "skinforge.yaml").read_text() == before, "a refused resume must not touch the run"


def test_an_allowed_change_records_the_learning_rate_the_run_really_uses(
    trained: tuple[Path, list[str]], capfd: pytest.CaptureFixture[str]
) -> None:
    run, overrides = trained
    capfd.readouterr()
    run_training(
        [
            *overrides,
            "checkpoint.resume=latest",
            "train.max_steps=3",
            "log.every_n_steps=3",
            "train.lr=3e-4",
            "checkpoint.allow_config_change=true",
        ]
    )
    log = capfd.readouterr().err
    assert "changed settings: train.max_steps: 2 -> 3; log.every_n_steps: 1 -> 3" in log
    assert "changed recipe (checkpoint.allow_config_change=true): train.lr: 0.0001 -> 0.0003" in log
    assert yaml.safe_load((run / "skinforge.yaml").read_text())["train"]["lr"] == 1e-4
    assert yaml.safe_load((run / "checkpoint-3" / "skinforge.yaml").read_text())["train"]["lr"] == 1e-4
    assert read_metrics(run)[-1]["lr"] == pytest.approx(1e-4)


def test_a_fresh_start_over_an_earlier_runs_checkpoints_is_refused(trained: tuple[Path, list[str]]) -> None:
    _, overrides = trained
    with pytest.raises(CheckpointError, match="checkpoint-2 of an earlier run"):
        set_up_trainer([*overrides, "checkpoint.resume=null"])


def test_leftovers_of_a_killed_run_are_removed_and_metrics_keep_one_line_per_step(
    trained: tuple[Path, list[str]],
) -> None:
    """As a kill -9 during checkpoint-2's save leaves it: a temp folder, step 2's metrics, a torn line."""
    run, overrides = trained
    (run / "checkpoint-2").rename(run / ".checkpoint-2.tmp")
    (run / ".controlnet.tmp").mkdir()
    (run / ".skinforge.yaml.k1ll3d.tmp").write_text("")  # an atomic write's temp file
    with (run / "metrics.jsonl").open("a") as metrics:
        metrics.write('{"step": 3, "loss/tot')
    trainer = run_training([*overrides, "checkpoint.resume=latest"])
    assert trainer.state.step == 2
    assert sorted(p.name for p in run.iterdir() if p.name.endswith(".tmp")) == []
    assert [m["step"] for m in read_metrics(run)] == [1, 2]


HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from common.run_lock import RunLock
    RunLock(Path(sys.argv[1])).acquire()
    print("locked", flush=True)
    time.sleep(600)
    """
)


def test_a_second_writer_is_refused_naming_the_first_and_a_dead_one_holds_nothing(
    tiny_overrides: list[str],
) -> None:
    run = Path(tiny_overrides[3].split("=", 1)[1])
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderBusy, match=rf'"pid": {holder.pid}, "host"'):
            set_up_trainer([*tiny_overrides, "train.max_steps=1"])
        assert not (run / "skinforge.yaml").exists()
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    lock = RunLock(run)
    lock.acquire()  # the kernel released the dead holder's lock
    lock.release()
