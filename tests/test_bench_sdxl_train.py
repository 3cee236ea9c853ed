"""The full-size GPU training benchmark (bench/bench_sdxl_train_gpu.py): its code path runs on CPU with
the tiny model (--smoke), its batch search and peak table are checked offline, and one real 512² row
runs where a GPU is present."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from bench_scripts import load_bench_script

ROOT = Path(__file__).parent.parent
SCRIPT = ROOT / "bench" / "bench_sdxl_train_gpu.py"


def _bench() -> ModuleType:
    return load_bench_script("bench_sdxl_train_gpu")


def _run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def _table_rows(stdout: str) -> dict[str, list[str]]:
    """The markdown rows of the printed table by their 'savers' cell."""
    rows = [line.strip("|").split("|") for line in stdout.splitlines() if line.startswith("| ")]
    return {cells[1].strip(): [c.strip() for c in cells] for cells in rows[1:]}


@pytest.mark.slow  # ~60 s on two shared cores: two child interpreters and two planning workers
def test_smoke_run_measures_the_cpu_rows_and_skips_the_cuda_ones(tiny_sdxl_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    proc = _run("--smoke", "--smoke-model", str(tiny_sdxl_dir), "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["spec"]["combo"]: r for r in json.loads(out.read_text())["rows"]}
    for combo in ("savers off", "checkpointing both"):
        assert rows[combo]["status"] == "ok", rows[combo]
        assert math.isfinite(rows[combo]["s_per_step"]) and rows[combo]["s_per_step"] > 0
    assert rows["savers off"]["flops_per_step"] > 1e8, "FLOPs of one tiny step were not counted"
    table = _table_rows(proc.stdout)
    assert set(table) == {"savers off", "checkpointing both", "checkpointing + 8-bit AdamW", "all savers"}
    for combo in ("savers off", "checkpointing both"):
        resolution, _, batch, status, alloc, reserved, s_per_step, images, tflop, mfu, planned, seconds = (
            table[combo]
        )
        assert (resolution, batch, status) == ("64²", "1", "ok")
        assert (alloc, reserved, mfu) == ("n/a", "n/a", "n/a")  # no GPU memory, no bf16 peak on a CPU
        assert math.isfinite(float(s_per_step)) and float(images) > 0
        assert float(tflop) > 0  # the savers-off count applies to every row at that resolution
        assert seconds == "n/a"  # no bf16 peak to plan a time against
        assert rows[combo]["planned_flops_per_step"] > 1e8
    # the tiny model's planned peaks (a few MiB) print as 0.0 GiB; the json keeps them exactly
    planned = {combo: rows[combo]["planned_peak_gib"] for combo in ("savers off", "checkpointing both")}
    assert 0 < planned["checkpointing both"] <= planned["savers off"] < 1, planned
    assert table["checkpointing + 8-bit AdamW"][3] == "skipped: needs CUDA"
    assert table["all savers"][3] == "skipped: needs CUDA"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_without_cuda_and_without_smoke_it_exits_with_the_reason() -> None:
    proc = _run("--resolutions", "512", timeout=120)
    assert proc.returncode != 0
    assert "no CUDA device" in proc.stderr and "--smoke" in proc.stderr


def test_largest_batch_doubles_then_bisects(monkeypatch: pytest.MonkeyPatch) -> None:
    bench = _bench()
    probed: list[int] = []

    def fake(spec: object, timeout: float) -> object:
        probed.append(spec.batch)  # type: ignore[attr-defined]
        fits = spec.batch <= 11  # type: ignore[attr-defined]
        return bench.Result(spec, "ok" if fits else "OOM", s_per_step=1.0)

    monkeypatch.setattr(bench, "in_subprocess", fake)
    best = bench.largest_batch(bench.Spec("savers off", 1024, 1), timeout=1.0)
    assert best.spec.batch == 11
    assert probed == [1, 2, 4, 8, 16, 12, 10, 11]


def test_planner_columns_and_error_line() -> None:
    bench = _bench()
    spec = bench.Spec("checkpointing + 8-bit AdamW", 1024, 2)
    cfg = bench.plan_config(spec)
    assert (cfg.train.gradient_checkpointing, cfg.train.optimizer) == ("both", "adamw_8bit")
    assert (cfg.train.batch_size, cfg.data.resolution, cfg.train.mixed_precision) == (2, 1024, "bf16")
    ok = bench.Result(spec, "ok", s_per_step=1.0, peak_allocated_gib=20.0, flops_per_step=1e14)
    ok.planned_peak_gib, ok.planned_flops_per_step = 22.0, 2e14
    oom = bench.Result(bench.Spec("savers off", 1024, 8), "OOM")
    oom.planned_peak_gib = 90.0
    assert bench.planned_seconds(ok, 1000.0, 0.5) == pytest.approx(0.4)
    line = bench.planner_error([ok, oom], 79.0)
    assert "+10.0% to +10.0% over 1 rows" in line and "met" in line
    assert "1 of 1 OOM rows planned not to fit" in line
    table = bench.render([ok], {}, 1000.0, "title", 0.5)
    assert table.splitlines()[-1].endswith("| 22.0 | 0.400 |")


def test_peak_table_reads_the_device_names() -> None:
    bench = _bench()
    assert bench.peak_tflops("NVIDIA H100 80GB HBM3", None) == 989.0
    assert bench.peak_tflops("NVIDIA H100 PCIe", None) == 756.0
    assert bench.peak_tflops("NVIDIA H200", None) == 989.0
    assert bench.peak_tflops("NVIDIA A100-SXM4-80GB", None) == 312.0
    assert bench.peak_tflops("NVIDIA GeForce RTX 4090", None) == 165.0
    assert bench.peak_tflops("Some GPU", None) is None
    assert bench.peak_tflops("NVIDIA H100 PCIe", 500.0) == 500.0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_one_full_size_row_on_the_gpu(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    proc = _run(
        "--resolutions", "512", "--combos", "savers off", "--steps", "2", "--warmup", "1", "--json", str(out),
        timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = json.loads(out.read_text())["rows"]
    assert row["status"] in ("ok", "OOM"), proc.stderr[-3000:]  # OOM: a card under ~32 GB
    if row["status"] == "ok":
        assert 0 < row["peak_allocated_gib"] <= row["peak_reserved_gib"] < 200
        assert row["flops_per_step"] > 1e12 and math.isfinite(row["s_per_step"])
        assert "| 512² | savers off | 1 | ok |" in proc.stdout
