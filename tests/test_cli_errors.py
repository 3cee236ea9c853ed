"""The trainer's command line as a newcomer meets it: flags named with their override, dataset problems
as a file:line list, each once and without a traceback (real subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from train.cli_flags import flag_problems
from train.config import KEY_HINTS
from train.launch_precheck import precheck, trainer_argv

REPO = Path(__file__).resolve().parents[1]
TRAINER = "train/train_controlnet_sdxl.py"


def _train(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, TRAINER, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_flags_are_named_with_their_override() -> None:
    argv = ["--config", "c.yaml", "--max_steps", "10", "--learning_rate=1e-4", "--use_8bit_adam", "--bogus"]
    kept, problems = flag_problems(argv, KEY_HINTS)
    assert kept == ["--config", "c.yaml"], "the flags' values are not taken for overrides"
    assert problems[0] == "unknown option --max_steps: overrides are dotted here, write train.max_steps=10"
    assert problems[1].endswith("write train.lr=1e-4")
    assert problems[2].endswith("write train.optimizer=adamw_8bit")
    assert problems[3].startswith("unknown option --bogus: the trainer takes --config FILE and dotted")


def test_trainer_flag_error_is_one_message(tiny_overrides: list[str]) -> None:
    done = _train("--config", "configs/fill_tiny.yaml", *tiny_overrides, "--max_steps", "10")
    assert done.returncode == 2
    assert "unknown option --max_steps: overrides are dotted here, write train.max_steps=10" in done.stderr
    assert "Traceback" not in done.stderr and "1 problem(s) in the command line" in done.stderr


@pytest.mark.slow
def test_dataset_error_is_its_problem_list(tiny_overrides: list[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"text": "a", "image": "a.png", "conditioning_image": "a.png"})
        + "\n"
        + json.dumps({"text": 3, "image": "b.png"})
        + "\n",
        encoding="utf-8",
    )
    done = _train("--config", "configs/fill_tiny.yaml", *tiny_overrides, f"data.train_jsonl={bad}")
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"{bad}:2: text" in done.stderr and f"{bad}:2: conditioning_image" in done.stderr
    assert "Traceback" not in done.stderr


def test_launch_precheck_stops_a_bad_config_before_any_process(
    tiny_overrides: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    launch = [
        "--config_file",
        "launch/accelerate/cpu_2proc.yaml",
        TRAINER,
        "--config",
        "configs/fill_tiny.yaml",
    ]
    assert trainer_argv(launch) == ["--config", "configs/fill_tiny.yaml"]
    assert precheck([*launch, *tiny_overrides]) is None, "a good config launches"
    assert precheck([*launch, *tiny_overrides, "train.lr_warmup_steps=500", "train.max_steps=6"]) == 2
    err = capsys.readouterr().err
    assert "train.lr_warmup_steps (500) exceeds train.max_steps (6): lower it" in err
    assert precheck(["-m", "inference", "--run", "x"]) is None, "other launches are left alone"


def test_launch_with_a_bad_config_is_one_short_message(tiny_overrides: list[str]) -> None:
    """Through `python -m train.launch` and a 2-process CPU config: no rank starts, no tracebacks."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "train.launch",
        "--config_file",
        "launch/accelerate/cpu_2proc.yaml",
        TRAINER,
    ]
    command += ["--config", "configs/fill_tiny.yaml", *tiny_overrides, "train.lr_warmup_steps=500"]
    command += ["train.max_steps=6"]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "exceeds train.max_steps (6): lower it to at most 6" in done.stderr
    assert "(from the command line: train.lr_warmup_steps=500, train.max_steps=6)" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 2, done.stderr


def test_smoke_preset_shrinks_a_1024_recipe_and_overrides_still_win(tmp_path: Path) -> None:
    from train.cli_flags import config_from_args

    data = tmp_path / "train.jsonl"
    data.write_text("", encoding="utf-8")
    config = config_from_args(
        "configs/keyboard_1024.yaml", [f"data.train_jsonl={data}", "train.max_steps=6"], [], smoke=True
    )
    assert config.model.base == str(Path("assets/tiny-sdxl-trained").absolute()), "recorded absolute"
    assert config.data.resolution == 128
    assert config.train.mixed_precision == "no" and config.train.batch_size == 1
    assert config.train.max_steps == 6 and config.data.train_jsonl == str(data), "the user's overrides win"
    assert config.train.output_dir == "runs/keyboard_1024_smoke" and config.data.buckets, "recipe kept"
    assert flag_problems(["--config", "c.yaml", "--smoke"], KEY_HINTS) == (
        ["--config", "c.yaml", "--smoke"],
        [],
    )


@pytest.mark.slow
def test_smoke_run_of_the_1024_recipe_on_a_small_dataset(fill_jsonl: Path, tmp_path: Path) -> None:
    """The README's worked CPU command, on a user's small dataset (here the fill records)."""
    run = tmp_path / "run"
    done = _train(
        "--config", "configs/keyboard_1024.yaml", "--smoke", f"data.train_jsonl={fill_jsonl}",
        f"train.output_dir={run}", f"cache.dir={tmp_path / 'cache'}", "train.max_steps=4",
        "checkpoint.every_n_steps=2", timeout=1500,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Training finished at step 4. Final ControlNet: {run / 'controlnet'}" in done.stderr
    assert (run / "checkpoint-4").is_dir() and (run / "controlnet" / "config.json").is_file()
