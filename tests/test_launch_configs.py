"""Every launcher loads with accelerate's own config reader and says what its header promises."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import diffusers.models.attention
import diffusers.models.resnet
import pytest
from accelerate.commands.config.config_args import load_config_from_file

ROOT = Path(__file__).parent.parent
CONFIGS = sorted((ROOT / "launch" / "accelerate").glob("*.yaml"))
SCRIPTS = [ROOT / "launch" / "multinode.sh", ROOT / "launch" / "slurm" / "train_controlnet.sbatch"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_accelerate_reads_every_config(path: Path) -> None:
    config = load_config_from_file(str(path))
    assert config.num_processes >= 1 and config.compute_environment == "LOCAL_MACHINE"


def test_fsdp_config_wraps_blocks_that_exist_in_diffusers() -> None:
    config = load_config_from_file(str(ROOT / "launch/accelerate/fsdp_8gpu.yaml"))
    assert config.distributed_type == "FSDP" and config.num_processes == 8
    fsdp = config.fsdp_config
    assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert fsdp["fsdp_state_dict_type"] == "SHARDED_STATE_DICT"
    modules = (diffusers.models.attention, diffusers.models.resnet)
    for name in fsdp["fsdp_transformer_layer_cls_to_wrap"].split(","):
        assert any(hasattr(m, name) for m in modules), f"{name} is not a diffusers block"


def test_deepspeed_config_is_zero2_with_auto_values_from_the_recipe() -> None:
    config = load_config_from_file(str(ROOT / "launch/accelerate/deepspeed_zero2_8gpu.yaml"))
    assert config.distributed_type == "DEEPSPEED"
    ds_file = ROOT / config.deepspeed_config["deepspeed_config_file"]
    ds = json.loads(ds_file.read_text())
    assert ds["zero_optimization"]["stage"] == 2
    for key in ("gradient_accumulation_steps", "train_micro_batch_size_per_gpu", "train_batch_size"):
        assert ds[key] == "auto", f"{key} must come from the recipe"
    assert ds["gradient_clipping"] == 1.0, "must equal train.max_grad_norm of the shipped recipes"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_launch_scripts_parse(script: Path) -> None:
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_sbatch_expands_the_node_rank_inside_each_task() -> None:
    text = (ROOT / "launch/slurm/train_controlnet.sbatch").read_text()
    task = text[text.index("\nsrun ") :]
    body = task[task.index("'") + 1 : task.rindex("'")]
    assert '--machine_rank "$SLURM_NODEID"' in body, "read SLURM_NODEID in the task, not on the batch host"
    assert "checkpoint.resume=latest" in body and "#SBATCH --requeue" in text
