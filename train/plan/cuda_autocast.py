"""CUDA autocast's float32 ops, on a trace that runs on the CPU.

Under CUDA autocast, group_norm, layer_norm and nearest upsampling run in float32 (and return it) even on
bf16/fp16 inputs; CPU autocast keeps them in the lower precision. Their outputs are the SDXL UNet's
widest activations (every ResNet and transformer block starts with a norm, then a SiLU that saves its
float32 input), so a CPU trace of a GPU step would under-count activations. While active, these ops get
CUDA's policy on the CPU autocast key too. Ops outside this list follow CPU autocast, which matches CUDA
for the convolutions, matmuls and attention that carry the rest of the memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

FLOAT32_OPS = ("group_norm", "layer_norm", "upsample_nearest2d.vec", "upsample_nearest2d")
"""From `autocast_mode.cpp`'s CUDA fp32 list, the ops that a diffusers UNet calls on activations."""

_CPU_AUTOCAST = torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastCPU)


def _float32_kernel(op: Callable[..., Any]) -> Callable[..., Any]:
    def kernel(*args: Any, **kwargs: Any) -> Any:
        with torch._C._ExcludeDispatchKeyGuard(_CPU_AUTOCAST):
            cast = [a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]
            return op(*cast, **kwargs)

    return kernel


@contextmanager
def cuda_autocast_policy() -> Iterator[None]:
    """CPU autocast behaves like CUDA autocast for `FLOAT32_OPS` inside this block."""
    library = torch.library.Library("aten", "IMPL")
    try:
        for name in FLOAT32_OPS:
            packet, _, overload = name.partition(".")
            op = getattr(getattr(torch.ops.aten, packet), overload or "default")
            library.impl(name, _float32_kernel(op), "AutocastCPU")
        yield
    finally:
        library._destroy()
