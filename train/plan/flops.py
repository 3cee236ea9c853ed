"""Matmul, convolution and attention FLOPs of the ops run inside a block, by torch's own formulas.

`torch.utils.flop_counter.FlopCounterMode` is not used around the traced step because its module tracker
keeps a gradient hook on the inputs and outputs of every module call until it exits. The graphs that
gradient checkpointing recomputes in backward are never run backward themselves, so those hooks kept the
recomputed blocks' saved tensors alive: the memory trace of a checkpointed step then counted every block
as recomputed at once (+35 % on the tiny model) where a real step frees each block after its backward.
This mode counts with the same per-op formulas (`flop_counter.flop_registry`) and keeps nothing.
"""

from __future__ import annotations

from typing import Any

from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry


class FlopCount(TorchDispatchMode):
    """Adds up the FLOPs of every op that torch's FLOP counter has a formula for (`total`)."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out
