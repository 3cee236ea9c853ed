"""glibc keeps a CPU step's freed buffers (`common.host_memory`); the trainer and `python -m inference` turn
that on for CPU runs.

Each case runs `tests/malloc_probe.py` in a fresh process: malloc settings are process-wide, and the
probe must see the allocator exactly as the trainer (or nothing) left it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning")


def probe(*args: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests/malloc_probe.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_freed_memory(seen: dict[str, float], kept: bool) -> None:
    """Kept: (almost) no page is faulted in again. Returned (glibc's default trims the freed heap top):
    each round faults in a good part of its pages again."""
    share = seen["faults_per_round"] / seen["pages_per_round"]
    assert share < 0.02 if kept else share > 0.25, seen


def test_freed_buffers_come_back_without_page_faults() -> None:
    assert_freed_memory(probe("default"), kept=False)
    assert_freed_memory(probe("keep"), kept=True)


@pytest.mark.parametrize("keep", [True, False])
def test_cpu_trainer_setup_keeps_freed_memory_unless_switched_off(
    keep: bool, tiny_overrides: list[str]
) -> None:
    overrides = [*tiny_overrides, f"train.keep_freed_host_memory={str(keep).lower()}"]
    assert_freed_memory(probe("trainer", "configs/fill_tiny.yaml", *overrides), kept=keep)


@pytest.mark.parametrize("keep", [True, False])
def test_cpu_inference_keeps_freed_memory_unless_told_not_to(
    keep: bool, tiny_sdxl_dir: Path, tiny_controlnet_dir: Path, fill_jsonl: Path, tmp_path: Path
) -> None:
    args = ["--checkpoint", str(tiny_controlnet_dir), "--base", str(tiny_sdxl_dir), "--data", str(fill_jsonl)]
    args += ["--out", str(tmp_path / "out"), "--limit", "1", "--steps", "1", "--resolution", "32"]
    args += ["--no-metrics", *([] if keep else ["--return-freed-memory"])]
    seen = probe("inference", *args)
    assert (tmp_path / "out" / "grid.png").is_file()
    assert_freed_memory(seen, kept=keep)
