"""The README's main job, end to end in a fresh folder: tiny SDXL + fill data -> train -> infer -> report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from train.checkpointing import list_checkpoints

ROOT = Path(__file__).parent.parent


@pytest.mark.slow
def test_demo_script_trains_and_reports(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DEMO_DIR": str(tmp_path),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    result = subprocess.run(
        ["bash", str(ROOT / "scripts/demo.sh"), "log.progress_bar=false"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]

    run = tmp_path / "runs/fill_tiny"
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 240
    assert [p.name for p in list_checkpoints(run)] == ["checkpoint-160", "checkpoint-240"]
    report = json.loads((tmp_path / "reports/fill_tiny/report.json").read_text())
    assert [c["name"] for c in report["checkpoints"]] == ["checkpoint-160", "fill_tiny"]
    html = (tmp_path / "reports/fill_tiny/report.html").read_text()
    assert "checkpoint-160" in html and "<table" in html
    assert (tmp_path / "reports/fill_tiny/metrics.csv").is_file()
    with Image.open(tmp_path / "reports/fill_tiny/grid.png") as grid:
        assert grid.width >= 4 * 256 and grid.height >= 4 * 256
