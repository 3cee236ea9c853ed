"""Long jobs show progress with rate and ETA in a log too, not only on a terminal."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from common.progress import progress_bar

REPO = Path(__file__).resolve().parents[1]


def test_progress_is_logged_with_rate_and_eta_off_a_terminal(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="progress"), progress_bar(4, "job", "img") as bar:
        for _ in range(4):
            bar.update(1)
    lines = [r.getMessage() for r in caplog.records if r.name == "progress"]
    assert lines[0].startswith("job: 0/4 (0%)"), "a line when the job starts"
    assert lines[-1].startswith("job: 4/4 (100%) elapsed") and "ETA 00:00" in lines[-1]
    assert lines[-1].endswith("img/s"), lines[-1]


def test_builder_progress_reaches_a_piped_log(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a", "b", "c"):
        Image.new("RGB", (16, 16), (9, 99, 199)).save(folder / f"{name}.png")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SKINFORGE_PROGRESS_EVERY_S": "0"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "data",
            "canny",
            "--in",
            str(folder),
            "--out",
            str(tmp_path / "o"),
            "--workers",
            "1",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "canny: 3/3 (100%) elapsed" in done.stderr and "item/s" in done.stderr
