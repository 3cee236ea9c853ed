"""The memory/compute planner (`python -m train.plan`) against what a real step measures on the CPU, an
independent FLOP count and the real-size models' sizes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers import ControlNetModel, UNet2DConditionModel
from diffusers.models.attention_processor import Attention
from training_helpers import reset_accelerator, set_up_trainer

from train.plan import plan
from train.plan.models import SHIPPED_SDXL
from train.plan.sharding import TrainableSizes, per_gpu
from train.plan.trace import trace_step
from train.plan.tracker import MemoryPeak
from train.trainer import ControlNetTrainer

ROOT = Path(__file__).parent.parent
TOLERANCE = 0.15


def _storages_bytes(tensors: list[torch.Tensor]) -> int:
    seen = {id(t.untyped_storage()): t.untyped_storage().nbytes() for t in tensors}
    return sum(seen.values())


def measured_peak(trainer: ControlNetTrainer, batch: dict) -> int:
    """Peak bytes of one steady-state micro-step of the real trainer: the tensors alive before it
    (weights, optimizer state, batch) plus the highest point of the CPU allocator's own allocation and
    free records during it (torch.profiler's memory events)."""
    trainer._micro_step(batch)  # creates the optimizer state
    before = [*trainer.unet.parameters(), *trainer.unet.buffers(), *trainer.controlnet.parameters()]
    before += [*trainer.controlnet.buffers(), *trainer.empty_prompt.values()]
    before += [v for v in batch.values() if isinstance(v, torch.Tensor)]
    before += [v for s in trainer.optimizer.optimizer.state.values() for v in s.values()]
    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
    ) as prof:
        trainer._micro_step(batch)
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = highest = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()
        highest = max(highest, live)
    return _storages_bytes(before) + highest


def _tiny(tiny_overrides: list[str], *extra: str) -> ControlNetTrainer:
    overrides = [*tiny_overrides, "data.resolution=128", "train.batch_size=4", "data.empty_prompt_prob=0"]
    return set_up_trainer([*overrides, *extra])


@pytest.mark.slow  # a tiny trainer set-up, a profiled step and a plan: ~20-60 s on two busy cores
@pytest.mark.parametrize("precision", ["no", "bf16"])
def test_planned_peak_is_within_15_percent_of_a_real_cpu_step(
    tiny_overrides: list[str], precision: str
) -> None:
    trainer = _tiny(tiny_overrides, f"train.mixed_precision={precision}")
    measured = measured_peak(trainer, next(iter(trainer.loader)))
    reset_accelerator()
    planned = plan(trainer.config, gpu=False).peak.total
    assert abs(planned / measured - 1) <= TOLERANCE, (planned, measured)


@pytest.mark.slow
def test_planned_peak_with_gradient_checkpointing(tiny_overrides: list[str]) -> None:
    """Recomputed blocks are freed block by block, in the trace as in a real step (the FLOP count must
    not keep the recomputed graphs alive)."""
    trainer = _tiny(tiny_overrides, "train.gradient_checkpointing=both")
    measured = measured_peak(trainer, next(iter(trainer.loader)))
    reset_accelerator()
    planned = plan(trainer.config, gpu=False).peak.total
    assert abs(planned / measured - 1) <= TOLERANCE, (planned, measured)


def _forward_flops(module: torch.nn.Module, run: object) -> dict[str, float]:
    """Matmul/convolution/attention FLOPs of one forward, per top-level child, counted from the layers'
    shapes by hooks (independent of FlopCounterMode)."""
    counts: dict[str, float] = {}
    handles = []
    for name, sub in module.named_modules():
        top = name.split(".")[0]

        def hook(mod: torch.nn.Module, args: tuple, out: torch.Tensor, top: str = top) -> None:
            if isinstance(mod, torch.nn.Conv2d):
                k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
                flops = 2 * out.numel() * k
            elif isinstance(mod, torch.nn.Linear):
                flops = 2 * out.numel() * mod.in_features
            else:  # Attention: scores and weighted sum over the keys
                queries, keys = (
                    args[0].shape[1],
                    (args[1] if len(args) > 1 and args[1] is not None else args[0]).shape[1],
                )
                flops = 4 * args[0].shape[0] * queries * keys * mod.inner_dim
            counts[top] = counts.get(top, 0.0) + flops

        if isinstance(sub, (torch.nn.Conv2d, torch.nn.Linear, Attention)):
            handles.append(sub.register_forward_hook(hook))
    with torch.no_grad():
        run()
    for handle in handles:
        handle.remove()
    return counts


def test_planned_flops_match_an_independent_count(tiny_overrides: list[str]) -> None:
    """Backward costs twice the forward where weight gradients are needed (the ControlNet) and once
    where only input gradients are (the UNet's up path, the only part the loss reaches back through)."""
    trainer = _tiny(tiny_overrides)
    step = trainer.step_losses
    batch = next(iter(trainer.loader))
    captured: dict[str, tuple] = {}

    def predict(noisy: torch.Tensor, timesteps: torch.Tensor, cond: object) -> torch.Tensor:
        captured["args"] = (noisy, timesteps, cond)
        return original(noisy, timesteps, cond)

    original = step._predict
    step._predict = predict  # type: ignore[method-assign]
    step(batch, micro_step=0, step=0)
    step._predict = original  # type: ignore[method-assign]
    noisy, timesteps, cond = captured["args"]
    added = {"text_embeds": cond.pooled_embeds, "time_ids": cond.time_ids}
    cn = _forward_flops(
        trainer.controlnet,
        lambda: trainer.controlnet(
            noisy, timesteps, cond.prompt_embeds, controlnet_cond=cond.image, added_cond_kwargs=added
        ),
    )
    unet = _forward_flops(
        trainer.unet, lambda: trainer.unet(noisy, timesteps, cond.prompt_embeds, added_cond_kwargs=added)
    )
    up_path = sum(v for k, v in unet.items() if k in ("up_blocks", "conv_out"))
    independent = 3 * sum(cn.values()) + sum(unet.values()) + up_path
    reset_accelerator()
    planned = plan(trainer.config, gpu=False).trace.flops_per_step
    assert abs(planned / independent - 1) <= TOLERANCE, (planned, independent)


@pytest.mark.slow  # one real-size trace of two micro-steps: ~30 s on two busy cores
def test_weight_gradient_and_optimizer_bytes_are_exact_for_real_size_sdxl() -> None:
    from train.config import SkinforgeConfig

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(
            UNet2DConditionModel.load_config(SHIPPED_SDXL, subfolder="unet")
        )
        controlnet = ControlNetModel.from_unet(unet)
    assert sum(p.numel() for p in unet.parameters()) == 2_567_463_684  # SDXL base 1.0's published size
    trained = sum(p.numel() for p in controlnet.parameters())
    config = SkinforgeConfig()
    config.train.mixed_precision = "bf16"
    config.train.gradient_accumulation_steps = 2  # gradients held through the traced micro-step
    trace = trace_step(config, 64, 64, gpu=False, count_flops=False)
    kinds = trace.peak.by_kind
    assert trace.trainable_params == trained
    assert kinds["weights"] == 2 * sum(p.numel() for p in unet.parameters()) + 4 * trained
    assert kinds["gradients"] == 4 * trained
    assert kinds["optimizer"] == 2 * 4 * trained


def test_sharding_divides_what_each_strategy_shards() -> None:
    gib = 2**30
    sizes = TrainableSizes(
        params=gib, fp32_bytes=4 * gib, traced_optimizer_bytes=8 * gib, largest_unit_bytes=0
    )
    peak = MemoryPeak(
        {"weights": 9 * gib, "gradients": 4 * gib, "optimizer": 8 * gib, "activations": gib, "workspace": 0}
    )
    assert per_gpu(peak, sizes, "single", 1, 2).total == peak.total
    assert per_gpu(peak, sizes, "ddp", 8, 2).by_kind["gradients"] == 8 * gib  # + DDP's buckets
    fsdp = per_gpu(peak, sizes, "fsdp", 8, 2).by_kind
    assert (fsdp["weights"], fsdp["gradients"], fsdp["optimizer"]) == (5.5 * gib, 0.5 * gib, gib)
    zero3 = per_gpu(peak, sizes, "zero3", 8, 2).by_kind
    assert zero3["optimizer"] == 1.5 * gib  # fp32 master + two moments, 1/8
    assert zero3["activations"] == gib  # activations are per GPU whatever the strategy


@pytest.mark.slow  # two tiny traces in a subprocess
def test_cli_says_what_does_not_fit_and_which_saver_would(tiny_sdxl_dir: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "train.plan", "--config", "configs/fill_tiny.yaml",
         f"model.base={tiny_sdxl_dir}", "train.batch_size=64", "--gpu-memory", "1.09"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "does NOT fit" in proc.stdout
    assert "would fit with: " in proc.stdout
    for kind in ("weights", "gradients", "optimizer", "activations", "workspace"):
        assert kind in proc.stdout


def test_sweep_table_gives_each_layout_the_smallest_card_it_fits() -> None:
    from train.plan.sweep import table

    gib = 2**30
    train = {"mixed_precision": "bf16", "gradient_checkpointing": "both", "optimizer": "adamw"}

    def row(strategy: str, cache: bool, total: float) -> dict:
        layout = {"strategy": strategy, "gpus": 8 if strategy != "single" else 1, "cache": cache}
        peak = {"total": int(total * gib)}
        return {
            "resolution": 1024,
            "train": train,
            "layout": layout,
            "peak_bytes": peak,
            "flops_per_step": 2e13,
        }

    lines = table([row("single", True, 30.0), row("single", False, 100.0), row("zero2", True, 20.0)])
    head, _, body = lines.splitlines()
    assert head.split(" | ")[4:7] == ["1 GPU", "1 GPU, cache off", "zero2 ×8"]
    assert body == "| 1024² | bf16/fp16 | both | adamw | 30.0 (40) | 100.0 (none) | 20.0 (24) | 20.0 |"
