"""One configuration's training step, traced on fake tensors of the real-size models: peak memory by
kind and FLOPs, from the trainer's own micro-step (`ControlNetTrainer._micro_step`: its losses, backward,
clipping, optimizer and LR-scheduler steps), with no weights and no GPU.

What the trace cannot run is replaced, and said so in `StepTrace.notes`: xformers is traced as SDPA (on a
GPU both run memory-efficient kernels that keep no score matrix, and so does the CPU kernel traced here),
8-bit AdamW as torch's AdamW with its state replaced by bitsandbytes' sizes, fp16 as bf16 (same sizes),
`train.compile` without compilation; the text loss is not planned.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from dataclasses import dataclass, field

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from diffusers.optimization import get_scheduler
from torch._subclasses.fake_tensor import FakeTensorMode

from data.records import Record
from train.config import SkinforgeConfig
from train.memory_savers import apply_model_savers, controlnet_param_groups, make_optimizer
from train.nonfinite import NonFiniteGuard
from train.plan.cuda_autocast import cuda_autocast_policy
from train.plan.flops import FlopCount
from train.plan.models import build_meta_models, to_fake
from train.plan.tracker import MemoryPeak, MemoryTracker
from train.step_losses import ControlNetStepLosses
from train.trainer import DTYPES, ControlNetTrainer

logger = logging.getLogger(__name__)

CUDA_BLOCK = 512
"""The CUDA caching allocator rounds every allocation up to this many bytes."""
BNB_MIN_8BIT_SIZE = 4096
BNB_BLOCK = 256
"""bitsandbytes' AdamW8bit: tensors of at least 4096 elements keep both moments in uint8 with one fp32
absmax per block of 256; smaller ones keep fp32 moments."""


FSDP_UNITS = ("BasicTransformerBlock", "ResnetBlock2D")
"""The blocks `launch/accelerate/fsdp_8gpu.yaml` wraps."""


class UnknownValuesGuard(NonFiniteGuard):
    """A fake step has no values to check: every update is applied, as on a finite step."""

    def step_is_finite(self, *args: object, **kwargs: object) -> bool:
        return True


@dataclass
class StepTrace:
    """What one traced optimizer step of one process needs."""

    peak: MemoryPeak
    flops_per_step: float
    """Executed matmul/convolution/attention FLOPs of one optimizer step (all its micro-steps; the
    recomputation of gradient checkpointing included)."""
    trainable_params: int
    frozen_params: int
    trainable_param_bytes: int
    frozen_param_bytes: int
    trainable_numels: list[int]
    largest_unit_bytes: int
    """The largest transformer or ResNet block of the ControlNet (FSDP's wrapped unit), in bytes."""
    trace_seconds: float
    notes: list[str] = field(default_factory=list)


def adamw_8bit_state_bytes(numels: list[int]) -> int:
    """bitsandbytes AdamW8bit's state for parameters of these sizes (formula: two moments each)."""
    total = 0
    for n in numels:
        if n >= BNB_MIN_8BIT_SIZE:
            total += 2 * (n + 4 * -(-n // BNB_BLOCK))
        else:
            total += 2 * 4 * n
    return total


def _fresh_accelerator(mixed_precision: str, accumulation: int) -> Accelerator:
    """A CPU accelerator with these settings, whatever an earlier plan in this process set."""
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    return Accelerator(cpu=True, mixed_precision=mixed_precision, gradient_accumulation_steps=accumulation)


def _batch(unet: torch.nn.Module, batch_size: int, height: int, width: int) -> dict[str, object]:
    """What the latent cache gives a micro-step (`train.controlnet_dataset.collate_samples`)."""
    cfg = unet.config
    pooled = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
    return {
        "latents": torch.zeros(batch_size, cfg.in_channels, height // 8, width // 8),
        "prompt_embeds": torch.zeros(batch_size, 77, cfg.cross_attention_dim),
        "pooled_embeds": torch.zeros(batch_size, pooled),
        "time_ids": torch.zeros(batch_size, 6),
        "conditioning_pixel_values": torch.zeros(batch_size, 3, height, width),
        "index": list(range(batch_size)),
    }


def trace_step(
    config: SkinforgeConfig, height: int, width: int, gpu: bool = True, count_flops: bool = True
) -> StepTrace:
    """Traces `config`'s micro-steps at `height` x `width` (per-process batch `train.batch_size`) until
    the steady state: the optimizer state exists and, with gradient accumulation, gradients are held
    through a whole micro-step. `gpu`: CUDA autocast's float32 ops and 512-byte allocation blocks."""
    start = time.perf_counter()
    t = config.train
    notes: list[str] = []
    traced = dataclasses.replace(t, attention="sdpa", compile=False, optimizer="adamw")
    if t.attention == "xformers":
        notes.append("xformers traced as SDPA (memory-efficient kernels: no score matrix kept)")
    if t.compile:
        notes.append("train.compile: traced without compilation")
    precision = t.mixed_precision
    if precision == "fp16":
        notes.append("fp16 traced as bf16 (same sizes; the loss scaler's state is a few bytes)")
        precision = "bf16"
    if config.text_loss.enabled:
        notes.append("text_loss: not planned (VAE decoder and recognizer not traced)")
    models = build_meta_models(config.model)
    unet, controlnet = models.unet, models.controlnet
    unet.to(dtype=DTYPES[precision])
    apply_model_savers(traced, controlnet, unet)
    device = torch.device("cpu")
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    to_fake(unet, mode, device)
    to_fake(controlnet, mode, device)
    accumulation = min(t.gradient_accumulation_steps, 2)
    accelerator = _fresh_accelerator(precision, accumulation)
    groups = controlnet_param_groups(controlnet, t.lr, t.lr_new_layers)
    trainable = [p for group in groups for p in group["params"]]
    optimizer = make_optimizer(traced, groups, device)
    scheduler = get_scheduler(
        t.lr_scheduler, optimizer, num_warmup_steps=t.lr_warmup_steps, num_training_steps=t.max_steps
    )
    prepared, optimizer, scheduler = accelerator.prepare(
        controlnet, optimizer, scheduler, device_placement=[False, False, False]
    )
    with mode:
        batch = _batch(unet, t.batch_size, height, width)
        empty = {
            "prompt_embeds": batch["prompt_embeds"][0].clone(),
            "pooled_embeds": batch["pooled_embeds"][0].clone(),
        }
    trainer = ControlNetTrainer(config)
    trainer.accelerator = accelerator
    trainer.controlnet = prepared
    trainer.unet = unet
    trainer.optimizer = optimizer
    trainer.lr_scheduler = scheduler
    trainer.records = [
        Record(text="planned", image=f"planned-{i}.png", conditioning_image=f"planned-{i}-condition.png")
        for i in range(t.batch_size)
    ]
    trainer.nonfinite = UnknownValuesGuard(t.on_nonfinite, t.max_skipped_steps)
    trainer.step_losses = ControlNetStepLosses(
        config, accelerator, prepared, unet, models.noise_scheduler, empty, None
    )
    tracker = MemoryTracker(round_to=CUDA_BLOCK if gpu else 1)
    tracker.register(
        [*unet.parameters(), *unet.buffers(), *controlnet.parameters(), *controlnet.buffers()], "weights"
    )
    tracker.register([v for v in batch.values() if isinstance(v, torch.Tensor)], "activations")
    tracker.register(empty.values(), "activations")
    _create_optimizer_state(optimizer.optimizer, trainable, t.zero_grad_set_to_none)
    tracker.register(_state_tensors(optimizer.optimizer), "optimizer")
    tracker.register([p.grad for p in trainable if p.grad is not None], "gradients")
    # With the optimizer state in place, ga 1 is at its steady state from the first micro-step; with
    # accumulation the second micro-step of a window holds the first's gradients throughout.
    micro_steps = 1 if accumulation == 1 else 2
    counter = FlopCount()
    policy = cuda_autocast_policy() if gpu and precision != "no" else contextlib.nullcontext()
    with policy, tracker.tracing(trainable, optimizer.optimizer):
        for index in range(micro_steps):
            with counter if count_flops and index == micro_steps - 1 else contextlib.nullcontext():
                trainer._micro_step(batch)
    peak = tracker.peak
    if t.optimizer == "adamw_8bit":
        peak.by_kind["optimizer"] = adamw_8bit_state_bytes([p.numel() for p in trainable])
        notes.append("8-bit AdamW state by formula (bitsandbytes' uint8 moments, fp32 absmax per 256)")
    frozen = list(unet.parameters())
    result = StepTrace(
        peak=peak,
        flops_per_step=float(counter.total) * t.gradient_accumulation_steps,
        trainable_params=sum(p.numel() for p in trainable),
        frozen_params=sum(p.numel() for p in frozen),
        trainable_param_bytes=sum(p.numel() * p.element_size() for p in trainable),
        frozen_param_bytes=sum(p.numel() * p.element_size() for p in frozen),
        trainable_numels=[p.numel() for p in trainable],
        largest_unit_bytes=_largest_unit_bytes(controlnet),
        trace_seconds=time.perf_counter() - start,
        notes=notes,
    )
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    return result


def _create_optimizer_state(
    optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter], set_to_none: bool
) -> None:
    """The state a run holds from its first update on: one optimizer step on zero gradients (untraced),
    so that the traced micro-step is a steady-state one. With `train.zero_grad_set_to_none=false` the
    zeroed gradients stay allocated through the next step, as in a run."""
    for param in params:
        param.grad = torch.zeros_like(param)
    optimizer.step()
    optimizer.zero_grad(set_to_none=set_to_none)


def _state_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The moments (the per-parameter step counters are scalars, left out as in the tracker)."""
    return [
        v
        for state in optimizer.state.values()
        for v in state.values()
        if isinstance(v, torch.Tensor) and v.dim()
    ]


def _largest_unit_bytes(controlnet: torch.nn.Module) -> int:
    units = [m for m in controlnet.modules() if type(m).__name__ in FSDP_UNITS]
    return max((sum(p.numel() * p.element_size() for p in m.parameters()) for m in units), default=0)
