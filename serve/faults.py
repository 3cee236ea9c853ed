"""Failure injection into the real pipeline, to test the degradation paths on a CPU.

Each fault is a hook on a real module of the loaded pipeline (or, for compile, a real
``torch.compile`` with a backend that fails), so the service's own code path meets the same
exception a GPU would raise; nothing of the pipeline is mocked. Enabled only by ``--inject-fault``
(or ``SKINFORGE_SERVE_FAULTS``, comma-separated), which tests use; a production start has none.

* ``oom_denoise_above=N``: the UNet raises ``torch.OutOfMemoryError`` for an input batch of more
  than N rows (2 rows per image when guidance > 1);
* ``oom_denoise``: the UNet always runs out of memory;
* ``oom_decode_untiled``: the VAE decoder runs out of memory unless VAE tiling is on;
* ``oom_decode``: the VAE decoder always runs out of memory;
* ``nan_vae_fp16``: the VAE decoder returns NaNs while it runs in float16 (SDXL's VAE overflow);
* ``compile_error``: the compiled UNet/ControlNet fail to compile at their first call;
* ``error_once``: the UNet raises a RuntimeError at its first call (an unexpected bug: 500, and the
  worker must go on);
* ``slow_load=MS``: loading takes MS milliseconds longer (to see the "loading" state of /healthz).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

from serve.registry import Registry

logger = logging.getLogger(__name__)

__all__ = ["ENV", "FAULT_NAMES", "inject", "parse_faults"]

ENV = "SKINFORGE_SERVE_FAULTS"
FAULT_NAMES = (
    "oom_denoise_above",
    "oom_denoise",
    "oom_decode_untiled",
    "oom_decode",
    "nan_vae_fp16",
    "compile_error",
    "slow_load",
    "error_once",
)


def parse_faults(given: tuple[str, ...] | list[str]) -> dict[str, int | None]:
    """{name: argument} of the CLI's faults plus the environment's; unknown names are an error."""
    specs = [*given, *filter(None, os.environ.get(ENV, "").split(","))]
    faults: dict[str, int | None] = {}
    for spec in specs:
        name, _, value = spec.strip().partition("=")
        if name not in FAULT_NAMES:
            raise ValueError(f"unknown fault {name!r}; one of {', '.join(FAULT_NAMES)}")
        faults[name] = int(value) if value else None
    return faults


def _out_of_memory(where: str) -> torch.OutOfMemoryError:
    return torch.OutOfMemoryError(f"CUDA out of memory (injected by {ENV} in {where})")


def _failing_backend(graph: torch.fx.GraphModule, inputs: list[Any]) -> Any:
    raise RuntimeError("injected compiler failure")


def inject(registry: Registry, faults: dict[str, int | None]) -> None:
    """Install ``faults`` on every loaded checkpoint's modules."""
    if not faults:
        return
    logger.warning("injecting faults into the pipeline: %s", faults)
    seen: set[int] = set()
    for name in registry.names:
        modules = registry.modules(name)
        for module in modules.values():
            if id(module) in seen:
                continue
            seen.add(id(module))
            if module is modules["unet"]:
                _unet_faults(module, faults)
            elif module is modules["vae"]:
                _vae_faults(module, faults)
    if "compile_error" in faults:
        registry.recompile(_failing_backend)


def _unet_faults(unet: torch.nn.Module, faults: dict[str, int | None]) -> None:
    limit = faults.get("oom_denoise_above")
    always = "oom_denoise" in faults
    errors_left = [1 if "error_once" in faults else 0]

    def pre_hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        sample = args[0] if args else kwargs["sample"]
        if always or (limit is not None and sample.shape[0] > limit):
            raise _out_of_memory(f"the UNet, batch of {sample.shape[0]} rows")
        if errors_left[0]:
            errors_left[0] -= 1
            raise RuntimeError(f"injected by {ENV}: an unexpected error in the UNet")

    if always or limit is not None or errors_left[0]:
        unet.register_forward_pre_hook(pre_hook, with_kwargs=True)


def _vae_faults(vae: torch.nn.Module, faults: dict[str, int | None]) -> None:
    untiled, always, nan = "oom_decode_untiled" in faults, "oom_decode" in faults, "nan_vae_fp16" in faults

    def pre_hook(module: torch.nn.Module, args: tuple) -> None:
        if always or (untiled and not vae.use_tiling):
            raise _out_of_memory("the VAE decoder" + ("" if always else " without tiling"))

    def nan_hook(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        if next(module.parameters()).dtype == torch.float16:
            return torch.full_like(output, float("nan"))
        return output

    if always or untiled:
        vae.decoder.register_forward_pre_hook(pre_hook)
    if nan:
        vae.decoder.register_forward_hook(nan_hook)
