"""The commands a newcomer runs after a first training run, from another folder than the one it ran in:
the run's base is found, a missing one is one line, inference runs at the training resolution, and a
dataset folder is taken as --data like the builders take it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from inference.__main__ import main
from inference.checkpoints import resolve_checkpoint, training_resolution

REPO = Path(__file__).resolve().parents[1]


def _older_run(work: Path, controlnet: Path, base: str, resolution: int = 32) -> Path:
    """A run recorded with a relative model.base (as runs were before bases were made absolute), laid out
    as training writes it: work/runs/first/checkpoint-2/{controlnet/, skinforge.yaml}."""
    checkpoint = work / "runs" / "first" / "checkpoint-2"
    shutil.copytree(controlnet, checkpoint / "controlnet")
    recipe = f"model:\n  base: {base}\ndata:\n  resolution: {resolution}\ntrain:\n  max_steps: 2\n"
    for folder in (checkpoint, checkpoint / "controlnet"):
        (folder / "skinforge.yaml").write_text(recipe, encoding="utf-8")
    return checkpoint


def test_a_relative_base_is_found_from_another_folder(
    tiny_sdxl_dir: Path, tiny_controlnet_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    (work / "models").mkdir(parents=True)
    (work / "models" / "sdxl").symlink_to(tiny_sdxl_dir, target_is_directory=True)
    checkpoint = _older_run(work, tiny_controlnet_dir, "models/sdxl")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert resolve_checkpoint(checkpoint).base == str(work / "models" / "sdxl"), "the run's own folder"
    assert training_resolution(checkpoint) == 32


def test_a_missing_base_is_one_line(tiny_controlnet_dir: Path, fill_jsonl: Path, tmp_path: Path) -> None:
    checkpoint = _older_run(tmp_path / "work", tiny_controlnet_dir, "models/gone")
    hub = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    env = {**os.environ, "PYTHONPATH": str(REPO), **hub}
    command = [sys.executable, "-m", "inference", "--checkpoint", str(checkpoint), "--no-metrics"]
    done = subprocess.run(
        [*command, "--data", str(fill_jsonl), "--out", str(tmp_path / "out")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("python -m inference: error:")]
    assert errors == [
        f"python -m inference: error: model.base of checkpoint {checkpoint}: models/gone is not a local "
        "folder (none here) nor in the Hugging Face cache, and HF_HUB_OFFLINE is set: pass the base SDXL "
        "folder with --base"
    ]


def test_inference_takes_a_dataset_folder_at_the_training_resolution(
    tiny_sdxl_dir: Path, tiny_controlnet_dir: Path, fill_jsonl: Path, tmp_path: Path
) -> None:
    checkpoint = _older_run(tmp_path / "work", tiny_controlnet_dir, str(tiny_sdxl_dir), resolution=32)
    out = tmp_path / "out"
    args = ["--checkpoint", str(checkpoint), "--out", str(out), "--no-metrics", "--steps", "1"]
    assert main([*args, "--data", str(fill_jsonl.parent), "--limit", "1", "--device", "cpu"]) == 0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["data"] == str(fill_jsonl) and report["settings"]["resolution"] == 32
    with Image.open(out / "images" / "checkpoint-2" / "00000_s0.png") as image:
        assert image.size == (32, 32), "the 64² condition is generated at the 32² the ControlNet trained at"

    empty = tmp_path / "not_a_dataset"
    empty.mkdir()
    assert main([*args, "--data", str(empty)]) == 2
