"""Every launcher loads with accelerate's own config reader and says what its header promises."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import diffusers.models.attention
import diffusers.models.resnet
import pytest
import torch
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser

ROOT = Path(__file__).parent.parent
CONFIGS = sorted((ROOT / "launch" / "accelerate").glob("*.yaml"))
SCRIPTS = sorted([*(ROOT / "launch").rglob("*.sh"), *(ROOT / "launch").rglob("*.sbatch")])
TRAINER = "train/train_controlnet_sdxl.py"


def _launch_args(config: str, *extra: str):
    """What `accelerate launch --config_file CONFIG ... TRAINER` resolves its arguments to."""
    parser = launch_command_parser()
    args = parser.parse_args(["--config_file", str(ROOT / config), *extra, TRAINER])
    return _validate_launch_command(args)


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


@pytest.mark.parametrize("recipe", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_deepspeed_clipping_matches_every_recipe(recipe: Path) -> None:
    """The trainer refuses a DeepSpeed run whose json clips at another value than the recipe."""
    from train.config import load_config
    from train.distributed import deepspeed_clipping_problem

    ds = json.loads((ROOT / "launch/deepspeed/zero2.json").read_text())
    max_grad_norm = load_config(recipe, check_paths=False).train.max_grad_norm
    assert deepspeed_clipping_problem(ds, max_grad_norm) is None
    problem = deepspeed_clipping_problem(ds, max_grad_norm + 0.5)
    assert problem is not None and "gradient_clipping" in problem and "train.max_grad_norm" in problem
    assert deepspeed_clipping_problem({**ds, "gradient_clipping": "auto"}, 1.0) is not None


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_launch_scripts_parse(script: Path) -> None:
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_sbatch_expands_the_node_rank_inside_each_task() -> None:
    text = (ROOT / "launch/slurm/train_controlnet.sbatch").read_text()
    task = text[text.index("\nsrun ") :]
    body = task[task.index("'") + 1 : task.rindex("'")]
    assert '--machine_rank "$SLURM_NODEID"' in body, "read SLURM_NODEID in the task, not on the batch host"
    assert "checkpoint.resume=latest" in body and "#SBATCH --requeue" in text


def test_fsdp_launch_wraps_the_controlnet_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment `accelerate launch` gives the ranks builds an FSDP2 plugin whose auto-wrap policy
    finds both block classes in an SDXL-shaped ControlNet (accelerate raises if a name is not found)."""
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
    from accelerate.utils.launch import prepare_multi_gpu_env
    from diffusers import ControlNetModel, UNet2DConditionModel

    from train.tiny_sdxl import _unet_config

    args, _, _ = _launch_args("launch/accelerate/fsdp_8gpu.yaml")
    for key, value in prepare_multi_gpu_env(args).items():
        monkeypatch.setenv(key, value)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True  # FULL_SHARD
    assert plugin.state_dict_type.name == "SHARDED_STATE_DICT"
    controlnet = ControlNetModel.from_unet(UNet2DConditionModel(**_unet_config()))
    policy = fsdp2_prepare_auto_wrap_policy(plugin, controlnet)
    wrapped = {type(m).__name__ for m in controlnet.modules() if policy(m)}
    assert wrapped == {"BasicTransformerBlock", "ResnetBlock2D"}


def test_deepspeed_multinode_launch_takes_the_recipe_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two nodes: torchrun per node (no pdsh/ssh); the ranks' DeepSpeed plugin passes accelerate's
    config-file checks and fills the "auto" values from what the trainer gives Accelerator."""
    from accelerate.utils import DeepSpeedPlugin
    from accelerate.utils.launch import prepare_deepspeed_cmd_env

    node = ["--num_machines", "2", "--num_processes", "16", "--machine_rank", "1"]
    node += ["--main_process_ip", "10.0.0.1", "--main_process_port", "29600"]
    args, defaults, mp_from_config = _launch_args("launch/accelerate/deepspeed_zero2_8gpu.yaml", *node)
    assert args.use_deepspeed and not mp_from_config, "mixed_precision must come from the recipe"
    fields = [*defaults.deepspeed_config, *(["mixed_precision"] if mp_from_config else [])]
    args.deepspeed_fields_from_accelerate_config = ",".join(fields)  # as accelerate's launch_command
    cmd, env = prepare_deepspeed_cmd_env(args)
    assert cmd is None, f"would start the ranks with {cmd} instead of torchrun on each node"
    assert (args.nnodes, args.node_rank, args.nproc_per_node) == ("2", 1, "8")
    monkeypatch.chdir(ROOT)  # the json path is relative to the repository root
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    plugin = DeepSpeedPlugin()
    plugin.set_mixed_precision("bf16")
    plugin.fill_match("gradient_accumulation_steps", must_match=False, gradient_accumulation_steps=2)
    ds = plugin.deepspeed_config
    assert plugin.zero_stage == 2 and ds["gradient_accumulation_steps"] == 2
    assert ds["bf16"]["enabled"] is True and ds["fp16"]["enabled"] is False
    assert "deepspeed" not in sys.modules, "the check must run without DeepSpeed installed"


@pytest.mark.slow
@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs"
)
def test_two_gpu_fsdp_launch_writes_sharded_state_a_whole_controlnet_and_validates(
    tiny_overrides: list[str], fill_jsonl: Path, tmp_path: Path
) -> None:
    """fsdp_8gpu.yaml on 2 GPUs, 2 steps: the checkpoint holds the DCP shards (SHARDED_STATE_DICT) and
    the gathered diffusers ControlNet, and validation (gathered on every rank, generated on the main
    one) does not hang. (tests/test_launch.py also resumes, and covers DeepSpeed.)"""
    run = tmp_path / "run"  # train.output_dir in tiny_overrides
    condition = fill_jsonl.parent / "conditioning_images/00000.png"
    overrides = [*tiny_overrides, "train.max_steps=2", "checkpoint.every_n_steps=2"]
    overrides += ["validation.every_n_steps=2", "validation.num_inference_steps=2"]
    overrides += ["validation.prompts=[red circle]", f"validation.conditioning_images=[{condition}]"]
    command = [
        str(Path(sys.executable).with_name("accelerate")),
        "launch",
        "--config_file",
        str(ROOT / "launch/accelerate/fsdp_8gpu.yaml"),
        "--num_processes",
        "2",
        "--main_process_port",
        "29543",
        str(ROOT / TRAINER),
        "--config",
        "configs/fill_tiny.yaml",
        *overrides,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    checkpoint = run / "checkpoint-2"
    assert (checkpoint / "controlnet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (checkpoint / "pytorch_model_fsdp_0" / ".metadata").is_file(), "not a sharded checkpoint"
    assert (run / "validation" / "step-000002.png").is_file()
