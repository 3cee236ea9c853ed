"""Per-GPU memory of a traced single-process step under data parallelism, by formula (not traced: the
trace runs one process).

The frozen UNet, the activations and the workspace are per GPU whatever the strategy (only the
ControlNet is prepared by accelerate). What changes is where the ControlNet's weights, gradients and
optimizer state live:

- `ddp`: all on every GPU, plus DDP's gradient buckets (one more copy of the gradients);
- `fsdp` (FSDP2, full shard, as `launch/accelerate/fsdp_8gpu.yaml`): weights, gradients and state 1/N,
  plus the gathered weights and unsharded gradients of the two largest wrapped blocks in flight;
- `zero2` (DeepSpeed through accelerate): the module in the training precision, its fp32 master copy
  and moments 1/N, gradients 1/N in the training precision plus DeepSpeed's default buckets
  (reduce and all-gather, 5e8 elements each);
- `zero3`: as ZeRO-2 with the module's weights 1/N too, plus up to `stage3_max_live_parameters` (1e9)
  gathered.
"""

from __future__ import annotations

from dataclasses import dataclass

from train.plan.tracker import MemoryPeak

STRATEGIES = ("single", "ddp", "fsdp", "zero2", "zero3")
DS_BUCKET_ELEMENTS = 5e8
DS_MAX_LIVE_PARAMETERS = 1e9


@dataclass(frozen=True)
class TrainableSizes:
    params: int
    fp32_bytes: int
    """The ControlNet's fp32 master weights (= its fp32 gradients)."""
    traced_optimizer_bytes: int
    largest_unit_bytes: int
    """The largest FSDP-wrapped block's fp32 weights (a transformer or ResNet block)."""


def per_gpu(
    peak: MemoryPeak, sizes: TrainableSizes, strategy: str, gpus: int, compute_bytes: int
) -> MemoryPeak:
    """`peak` of one process, rewritten for one of `gpus` GPUs under `strategy`. `compute_bytes`: 2 for
    bf16/fp16 runs, 4 for fp32."""
    kinds = dict(peak.by_kind)
    n = max(gpus, 1)
    frozen_weights = kinds["weights"] - sizes.fp32_bytes
    if strategy == "single" or (n == 1 and strategy == "ddp"):
        return MemoryPeak(kinds)
    if strategy == "ddp":
        kinds["gradients"] += sizes.fp32_bytes
    elif strategy == "fsdp":
        kinds["weights"] = frozen_weights + sizes.fp32_bytes / n + 2 * sizes.largest_unit_bytes
        kinds["gradients"] = kinds["gradients"] / n + 2 * sizes.largest_unit_bytes
        kinds["optimizer"] = kinds["optimizer"] / n
    elif strategy in ("zero2", "zero3"):
        module = sizes.params * compute_bytes
        master = sizes.fp32_bytes if compute_bytes != 4 else 0
        kinds["optimizer"] = (kinds["optimizer"] + master) / n
        buckets = 2 * DS_BUCKET_ELEMENTS * compute_bytes
        kinds["gradients"] = sizes.params * compute_bytes / n + buckets
        if strategy == "zero2":
            kinds["weights"] = frozen_weights + module
        else:
            live = min(DS_MAX_LIVE_PARAMETERS, sizes.params) * compute_bytes
            kinds["weights"] = frozen_weights + module / n + live
    else:
        raise ValueError(f"unknown strategy {strategy!r}: one of {', '.join(STRATEGIES)}")
    return MemoryPeak({k: int(v) for k, v in kinds.items()})
