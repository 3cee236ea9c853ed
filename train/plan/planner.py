"""A configuration's plan: the traced step (`train.plan.trace`), rewritten per GPU for data parallelism
and for an uncached run (`train.plan.sharding`, by formula), and its time at a stated utilisation."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from train.config import SkinforgeConfig
from train.plan.devices import Gpu, fits
from train.plan.models import build_meta_encoders, config_folder
from train.plan.sharding import TrainableSizes, per_gpu
from train.plan.trace import StepTrace, trace_step
from train.plan.tracker import MemoryPeak

ENCODER_NOTE = (
    "cache off: the VAE and both text encoders stay on the GPU (diffusers' script keeps the VAE and "
    "encodes every batch); their weights are counted, their no-grad forward is not traced"
)


@dataclass(frozen=True)
class Layout:
    """How a traced step is run: the parallel strategy over `gpus` GPUs and whether inputs are cached."""

    strategy: str = "single"
    gpus: int = 1
    cache: bool = True


@dataclass
class Plan:
    config: SkinforgeConfig
    layout: Layout
    height: int
    width: int
    trace: StepTrace
    peak: MemoryPeak
    """Per GPU."""
    notes: list[str] = field(default_factory=list)

    @property
    def images_per_step(self) -> int:
        t = self.config.train
        return t.batch_size * t.gradient_accumulation_steps * self.layout.gpus

    def fits(self, memory_gib: float) -> bool:
        return fits(self.peak.total, memory_gib)

    def step_seconds(self, gpu: Gpu, mfu: float) -> float | None:
        """Seconds per optimizer step if the executed FLOPs run at `mfu` of the GPU's bf16 peak."""
        if not gpu.bf16_tflops:
            return None
        return self.trace.flops_per_step / (mfu * gpu.bf16_tflops * 1e12)


def encoder_bytes(config: SkinforgeConfig) -> int:
    """Weights of the VAE (fp32 under fp16: SDXL's VAE overflows in fp16) and the two text encoders."""
    encoders = build_meta_encoders(config_folder(config.model))
    size = {"no": 4, "bf16": 2, "fp16": 2}[config.train.mixed_precision]
    total = 0
    for name, module in encoders.items():
        element = 4 if name == "vae" and config.train.mixed_precision == "fp16" else size
        total += sum(p.numel() for p in module.parameters()) * element
    return total


def rewrite(config: SkinforgeConfig, trace: StepTrace, layout: Layout, height: int, width: int) -> Plan:
    """The plan of `trace` under `layout` (no new trace)."""
    compute = 4 if config.train.mixed_precision == "no" else 2
    sizes = TrainableSizes(
        trace.trainable_params,
        trace.trainable_param_bytes,
        trace.peak.by_kind["optimizer"],
        trace.largest_unit_bytes,
    )
    peak = per_gpu(trace.peak, sizes, layout.strategy, layout.gpus, compute)
    notes = list(trace.notes)
    if layout.strategy != "single":
        notes.append(f"{layout.strategy} over {layout.gpus} GPUs: by formula (train.plan.sharding)")
    if not layout.cache:
        peak.by_kind["weights"] += encoder_bytes(config)
        notes.append(ENCODER_NOTE)
    return Plan(config, layout, height, width, trace, peak, notes)


def plan(
    config: SkinforgeConfig, layout: Layout = Layout(), gpu: bool = True, count_flops: bool = True
) -> Plan:
    """Traces `config`'s step at `data.resolution`² (with buckets: the same pixel budget) and plans it."""
    side = config.data.resolution
    trace = trace_step(config, side, side, gpu=gpu, count_flops=count_flops)
    result = rewrite(config, trace, layout, side, side)
    if config.data.buckets:
        result.notes.append(f"data.buckets: planned at {side}² (buckets hold about as many pixels)")
    return result


def with_train(config: SkinforgeConfig, **changes: object) -> SkinforgeConfig:
    """A copy of `config` with `train` fields changed."""
    return dataclasses.replace(config, train=dataclasses.replace(config.train, **changes))
