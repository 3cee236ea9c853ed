"""The GPUs a plan can be made for: memory that torch sees and dense bf16 tensor-core peak."""

from __future__ import annotations

from dataclasses import dataclass

GIB = 2**30
RESERVED_GIB = 1.0
"""Kept free in every fit: the CUDA context, cuBLAS/cuDNN workspaces and the caching allocator's slack,
which are not tensors and so not traced (an estimate, not a measurement)."""


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_gib: float
    """`torch.cuda.get_device_properties(0).total_memory` of the card."""
    bf16_tflops: float
    """Dense bf16 peak (no sparsity), TFLOP/s."""


GPUS = {
    "rtx3090": Gpu("RTX 3090", 23.6, 71.0),
    "rtx4090": Gpu("RTX 4090", 23.6, 165.0),
    "a10g": Gpu("A10G", 22.1, 70.0),
    "l40s": Gpu("L40S", 44.4, 362.0),
    "a100-40gb": Gpu("A100 40GB", 39.4, 312.0),
    "a100-80gb": Gpu("A100 80GB", 79.2, 312.0),
    "h100": Gpu("H100 SXM", 79.1, 989.0),
    "h100-pcie": Gpu("H100 PCIe", 79.1, 756.0),
    "h100-nvl": Gpu("H100 NVL", 93.1, 835.0),
    "h200": Gpu("H200", 139.8, 989.0),
}
TABLE_SIZES_GB = (24, 40, 80)
"""The card sizes every sweep row is marked against."""


def gpu_by_name(name: str) -> Gpu:
    key = name.lower().replace(" ", "-")
    if key not in GPUS:
        raise ValueError(f"unknown GPU {name!r}: one of {', '.join(GPUS)}, or give --gpu-memory GIB")
    return GPUS[key]


def gpu_from_torch_name(device_name: str, total_bytes: int) -> Gpu:
    """The table's entry whose name is in torch's device name (longest first), else memory only."""
    for gpu in sorted(GPUS.values(), key=lambda g: -len(g.name)):
        if all(part in device_name for part in gpu.name.replace("SXM", "").split()):
            return Gpu(device_name, total_bytes / GIB, gpu.bf16_tflops)
    return Gpu(device_name, total_bytes / GIB, 0.0)


def fits(total_bytes: float, memory_gib: float) -> bool:
    """Whether a planned peak fits a card, with `RESERVED_GIB` kept free."""
    return total_bytes / GIB + RESERVED_GIB <= memory_gib
