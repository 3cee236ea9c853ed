"""`python -m inference --device` defaults to auto: CUDA when present, else the CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from data.captioner import resolve_device
from inference.__main__ import build_parser

REPO = Path(__file__).resolve().parents[1]


def test_device_defaults_to_auto() -> None:
    args = build_parser().parse_args(["--checkpoint", "c", "--data", "d.jsonl", "--out", "o"])
    assert args.device == "auto"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_one_clear_error(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "inference", "--checkpoint", str(tmp_path), "--data", "d.jsonl"]
    command += ["--out", str(tmp_path / "o"), "--device", "cuda"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "torch sees no CUDA GPU; use --device cpu" in done.stderr and "Traceback" not in done.stderr
