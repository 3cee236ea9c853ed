"""Real `accelerate launch` subprocesses: two CPU ranks form one job, and a broken launch is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).parent.parent
ACCELERATE = Path(sys.executable).with_name("accelerate")
pytestmark = pytest.mark.slow


def launch(
    script: Path, args: list[str], env_extra: dict[str, str], port: int
) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env_extra}
    command = [
        str(ACCELERATE),
        "launch",
        "--config_file",
        str(ROOT / "launch/accelerate/cpu_2proc.yaml"),
        "--main_process_port",
        str(port),
        str(script),
        *args,
    ]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_two_cpu_ranks_train_one_model_on_different_data(tiny_overrides: list[str]) -> None:
    run = Path(tiny_overrides[3].split("=", 1)[1])
    overrides = [
        *tiny_overrides,
        "train.max_steps=3",
        "train.num_threads=1",
        "checkpoint.every_n_steps=2",
        f"cache.dir={run}/cache",
    ]
    result = launch(
        ROOT / "tests/launch_probe.py",
        ["configs/fill_tiny.yaml", *overrides],
        {"ACCELERATE_USE_CPU": "true"},
        port=29531,
    )
    assert result.returncode == 0, result.stderr[-4000:]

    probes = [json.loads((run / f"probe-rank{r}.json").read_text()) for r in (0, 1)]
    assert [p["world"] for p in probes] == [2, 2]
    assert probes[0]["digest"] == probes[1]["digest"], "ranks ended with different weights"
    seen0, seen1 = set(probes[0]["seen"]), set(probes[1]["seen"])
    assert len(probes[0]["seen"]) == len(probes[1]["seen"]) == 3 * 2
    assert not seen0 & seen1, f"both ranks trained on records {sorted(seen0 & seen1)}"
    assert sorted((run / "checkpoint-3").glob("random_states_*.pkl"))[-1].name == "random_states_1.pkl"
    shards = sorted(p.name for p in run.glob("cache/*/shard-*.safetensors"))
    assert shards == [f"shard-w00002-r0000{r}-p00000.safetensors" for r in (0, 1)], (
        "each rank encodes a slice"
    )


def test_two_cpu_ranks_share_buckets_and_reuse_the_cache(
    tiny_overrides: list[str], bucket_jsonl: Path, tmp_path: Path
) -> None:
    """18 records in 3 buckets of 6, batch 2: 9 batches, cut to 8 so that each rank gets 4 and none
    repeats another's; a second launch reads the cache the first one encoded."""
    base = [o for o in tiny_overrides if not o.startswith(("data.train_jsonl=", "train.output_dir="))]
    cache = tmp_path / "cache"
    for name in ("first", "second"):
        run = tmp_path / name
        overrides = [
            *base,
            f"data.train_jsonl={bucket_jsonl}",
            "data.buckets=true",
            "data.bucket_step=16",
            f"train.output_dir={run}",
            f"cache.dir={cache}",
            "train.max_steps=4",
            "train.num_threads=1",
        ]
        result = launch(
            ROOT / "tests/launch_probe.py",
            ["configs/fill_tiny.yaml", *overrides],
            {"ACCELERATE_USE_CPU": "true"},
            port=29533,
        )
        assert result.returncode == 0, result.stderr[-4000:]
        probes = [json.loads((run / f"probe-rank{r}.json").read_text()) for r in (0, 1)]
        assert probes[0]["digest"] == probes[1]["digest"], "ranks ended with different weights"
        seen = probes[0]["seen"] + probes[1]["seen"]
        assert len(seen) == 16 and len(set(seen)) == 16, f"a record was trained on twice: {sorted(seen)}"
    assert "Reusing encoded cache" in result.stderr


def test_processes_that_do_not_form_one_job_are_refused(tiny_overrides: list[str]) -> None:
    run = Path(tiny_overrides[3].split("=", 1)[1])
    env = {"ACCELERATE_USE_CPU": "false"}
    result = launch(
        ROOT / "train/train_controlnet_sdxl.py",
        ["--config", "configs/fill_tiny.yaml", *tiny_overrides, "train.max_steps=1"],
        env,
        port=29532,
    )
    assert result.returncode != 0
    assert "did not join one distributed job" in result.stderr
    assert not (run / "controlnet").exists()
    # plain `accelerate launch` with several processes: torchrun's grace and the safe command, at start
    assert "torchrun kills the trainers 30 s after a stop signal" in result.stderr
    assert "python -m train.launch (the same arguments as accelerate launch) gives them 600 s" in (
        result.stderr
    )


def _gpu_launch(config: str, overrides: list[str], port: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        str(ACCELERATE),
        "launch",
        "--config_file",
        str(ROOT / "launch/accelerate" / config),
        "--num_processes",
        "2",
        "--main_process_port",
        str(port),
        str(ROOT / "train/train_controlnet_sdxl.py"),
        "--config",
        "configs/fill_tiny.yaml",
        *overrides,
    ]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.device_count() < 2,
    reason="needs 2 CUDA GPUs",
)
@pytest.mark.parametrize(
    ("config", "port"), [("fsdp_8gpu.yaml", 29541), ("deepspeed_zero2_8gpu.yaml", 29542)]
)
def test_sharded_launches_save_and_resume_checkpoints(
    tiny_overrides: list[str], config: str, port: int
) -> None:
    """FSDP and DeepSpeed need every rank in save_state; the diffusers ControlNet must come out whole."""
    if config.startswith("deepspeed"):
        pytest.importorskip("deepspeed")
    run = Path(tiny_overrides[3].split("=", 1)[1])
    overrides = [
        *tiny_overrides,
        "train.mixed_precision=bf16",
        "checkpoint.every_n_steps=2",
        "train.max_steps=2",
    ]
    result = _gpu_launch(config, overrides, port)
    assert result.returncode == 0, result.stderr[-4000:]
    assert (run / "checkpoint-2" / "controlnet" / "diffusion_pytorch_model.safetensors").is_file()
    resumed = _gpu_launch(config, [*overrides, "train.max_steps=3", "checkpoint.resume=latest"], port)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "Resumed from" in resumed.stderr and (run / "checkpoint-3").is_dir()
    from diffusers import ControlNetModel

    ControlNetModel.from_pretrained(run / "controlnet")
