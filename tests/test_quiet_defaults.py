"""No noise on every command: the torchvision fallback warning is silenced where it does not apply,
DataLoader workers are capped at the usable cores with one log line."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from common.quiet_warnings import TORCHVISION_FALLBACK
from train.loader_workers import usable_cores, usable_workers

REPO = Path(__file__).resolve().parents[1]


def test_pipeline_import_has_no_torchvision_warning_but_others_pass(caplog: pytest.LogCaptureFixture) -> None:
    code = "import inference.pipeline, transformers as t; t.CLIPImageProcessor; t.SiglipImageProcessor"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "torchvision" not in done.stderr, done.stderr
    logger = logging.getLogger("transformers.utils.import_utils")
    with caplog.at_level(logging.WARNING, logger=logger.name):
        logger.warning("`X` requires torchvision (not installed); falling back to `XPil` ...")
        logger.warning("some other transformers warning")
    assert [r.getMessage() for r in caplog.records] == ["some other transformers warning"]
    assert TORCHVISION_FALLBACK in "`X` requires torchvision (not installed); falling back to `XPil`"


def test_loader_workers_capped_at_usable_cores(caplog: pytest.LogCaptureFixture) -> None:
    cores = usable_cores()
    assert cores == len(os.sched_getaffinity(0))
    with caplog.at_level(logging.INFO, logger="train.loader_workers"):
        assert usable_workers(0) == 0 and usable_workers(cores) == cores
        assert not caplog.records, "nothing to say when the request fits"
        assert usable_workers(cores + 6) == cores
    assert [r.getMessage() for r in caplog.records] == [
        f"data.num_workers={cores + 6} capped at the {cores} CPU cores this process may use"
    ]
