"""The README's main job, end to end in a fresh folder: shipped circles base + fill data -> train (with
validation, the convergence signal and the best checkpoint kept) -> infer every checkpoint -> report.
Whether the demo's final ControlNet draws circles on unseen outlines at its full recipe is measured by
bench/bench_demo_targets.py."""

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
def test_demo_script_trains_validates_and_reports(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DEMO_DIR": str(tmp_path),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    result = subprocess.run(
        ["bash", str(ROOT / "scripts/demo.sh"), "log.progress_bar=false", "train.max_steps=100",
         "checkpoint.every_n_steps=50", "validation.num_inference_steps=4"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]

    run = tmp_path / "runs/fill_demo"
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == 100
    validated = [m["step"] for m in metrics if "validation/edge_f1_tolerant" in m]
    assert validated == [0, 50, 100]
    assert "convergence" in result.stderr  # the run's last word on it, converged or not
    assert [p.name for p in list_checkpoints(run)] == ["checkpoint-0", "checkpoint-50", "checkpoint-100"]
    state = json.loads((run / "checkpoint-100" / "trainer_state.json").read_text())
    assert [step for step, _ in state["convergence"]["history"]] == [0, 50, 100]
    selection = json.loads((run / "best" / "selection.json").read_text())
    assert selection["metric"] == "circle_iou" and selection["step"] in validated
    assert state["best"] == selection
    report = json.loads((tmp_path / "reports/fill_demo/report.json").read_text())
    names = [c["name"] for c in report["checkpoints"]]
    assert names[:3] == ["checkpoint-0", "checkpoint-50", "checkpoint-100"] and "final" in names
    html = (tmp_path / "reports/fill_demo/report.html").read_text()
    assert "checkpoint-0" in html and "<table" in html and "final (step 100)" in html
    with Image.open(tmp_path / "reports/fill_demo/grid.png") as grid:
        assert grid.width >= 6 * 256 and grid.height >= 8 * 256
