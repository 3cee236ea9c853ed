"""The full-size GPU training benchmark: its code path runs on CPU with the tiny model (--smoke), and
one real 512² row runs where a GPU is present."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).parent.parent
SCRIPT = ROOT / "bench" / "bench_sdxl_train_gpu.py"


@pytest.mark.slow
def test_smoke_run_measures_the_cpu_rows_and_skips_the_cuda_ones(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["spec"]["combo"]: r for r in json.loads(out.read_text())}
    assert rows["savers off"]["status"] == rows["checkpointing"]["status"] == "ok"
    assert math.isfinite(rows["savers off"]["s_per_step"]) and rows["savers off"]["s_per_step"] > 0
    assert rows["savers off"]["flops_per_step"] > 1e8, "FLOPs of one tiny step were not counted"
    assert rows["all savers"]["status"] == "skipped: needs CUDA"
    assert "| 64² | checkpointing | 1 | ok |" in proc.stdout


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_one_full_size_row_on_the_gpu(tmp_path: Path) -> None:
    spec = {"combo": "checkpointing", "resolution": 512, "batch": 1, "steps": 2, "warmup": 1}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--one", json.dumps(spec)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    result = json.loads(proc.stdout.splitlines()[-1].removeprefix("RESULT "))
    assert result["status"] in ("ok", "OOM"), proc.stderr[-3000:]
    if result["status"] == "ok":
        assert 0 < result["peak_allocated_gib"] < 80
