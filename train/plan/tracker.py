"""Live tensor memory over a traced step, split into what holds it, at the peak.

A dispatch mode sees every tensor an op returns (real or fake: a fake tensor has a storage of the real
size), counts its storage once while it lives, and tags it as it is created: *workspace* by default,
then re-tagged when the step shows what it is: saved for backward (*activations*, through autograd's
saved-tensor hooks), accumulated into a parameter's `.grad` (*gradients*), kept in the optimizer's state
after its step (*optimizer*). Weights and inputs are registered before the step. At every new peak the
per-kind totals are copied, so the split is the one at the peak moment.

Sizes are rounded up to the CUDA caching allocator's 512-byte blocks when `round_to` says so; its larger
segment rounding and fragmentation are not modelled (they show as reserved > allocated on a GPU).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

KINDS = ("weights", "gradients", "optimizer", "activations", "workspace")
STICKY = frozenset({"weights", "gradients", "optimizer"})
"""Kinds a storage keeps when it is also saved for backward (a weight saved by a matmul stays a weight)."""


@dataclass
class MemoryPeak:
    """Bytes by kind at the peak, and the peak itself (their sum)."""

    by_kind: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())


class MemoryTracker(TorchDispatchMode):
    """Tracks live storages while active (see the module's docstring)."""

    def __init__(self, round_to: int = 1) -> None:
        super().__init__()
        self.round_to = round_to
        self._live: dict[int, tuple[str, int]] = {}
        self._refs: dict[int, weakref.ref] = {}
        self.current: dict[str, int] = dict.fromkeys(KINDS, 0)
        self.peak = MemoryPeak()

    # ------------------------------------------------------------------------------ bookkeeping
    def _size(self, storage: torch.UntypedStorage) -> int:
        size = storage.nbytes()
        return -(-size // self.round_to) * self.round_to if size else 0

    def _freed(self, key: int) -> None:
        kind, size = self._live.pop(key)
        self._refs.pop(key, None)
        self.current[kind] -= size

    def _add(self, tensor: torch.Tensor, kind: str) -> None:
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self._live:
            return
        size = self._size(storage)
        self._live[key] = (kind, size)
        self._refs[key] = weakref.ref(storage, lambda _, key=key: self._freed(key))
        self.current[kind] += size
        self._note_peak()

    def _note_peak(self) -> None:
        if sum(self.current.values()) > self.peak.total:
            self.peak = MemoryPeak(dict(self.current))

    def retag(self, tensor: torch.Tensor, kind: str) -> None:
        """Counts `tensor`'s storage as `kind` from now on (registering it if it was not seen)."""
        key = id(tensor.untyped_storage())
        if key not in self._live:
            self._add(tensor, kind)
            return
        old, size = self._live[key]
        if old == kind or (kind == "activations" and old in STICKY):
            return
        self._live[key] = (kind, size)
        self.current[old] -= size
        self.current[kind] += size
        self._note_peak()

    def register(self, tensors: Iterable[torch.Tensor], kind: str) -> None:
        """Tensors that exist before the step (weights, the batch)."""
        for tensor in tensors:
            self.retag(tensor, kind)

    def reset_peak(self) -> None:
        """Starts a new peak from what is live now (e.g. after a warm-up step)."""
        self.peak = MemoryPeak(dict(self.current))

    # ------------------------------------------------------------------------------ tracing
    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor) and tensor.layout == torch.strided:
                self._add(tensor, "workspace")
        return out

    @contextmanager
    def tracing(
        self, params: Iterable[torch.nn.Parameter], optimizer: torch.optim.Optimizer
    ) -> Iterator[None]:
        """Active over the step: saved tensors become activations, `.grad`s gradients, and the optimizer's
        state after each of its steps optimizer state."""
        params = list(params)

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            if tensor.layout == torch.strided:
                self.retag(tensor, "activations")
            return tensor

        def accumulated(param: torch.Tensor) -> None:
            if param.grad is not None:
                self.retag(param.grad, "gradients")

        def stepped(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            for state in opt.state.values():
                for value in state.values():
                    if isinstance(value, torch.Tensor) and value.dim() > 0:
                        self.retag(value, "optimizer")

        handles = [p.register_post_accumulate_grad_hook(accumulated) for p in params if p.requires_grad]
        handles.append(optimizer.register_step_post_hook(stepped))
        try:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), self:
                yield
        finally:
            for handle in handles:
                handle.remove()
