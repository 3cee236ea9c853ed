"""The samplers a run can pick by name, built from the base model's scheduler config.

Building from the base's config keeps its training noise schedule (betas, prediction type, timestep
spacing); only the sampling algorithm changes, as diffusers' ``Scheduler.from_config`` intends.
"""

from __future__ import annotations

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from inference.settings import SCHEDULER_NAMES

__all__ = ["make_scheduler"]

_CLASSES: dict[str, type[SchedulerMixin]] = {
    "unipc": UniPCMultistepScheduler,
    "dpm++2m": DPMSolverMultistepScheduler,
    "euler": EulerDiscreteScheduler,
    "ddim": DDIMScheduler,
}
_OPTIONS: dict[str, dict[str, object]] = {
    # DPM-Solver++ of order 2, multistep: what A1111 and ComfyUI call "DPM++ 2M".
    "dpm++2m": {"algorithm_type": "dpmsolver++", "solver_order": 2},
}
assert tuple(_CLASSES) == SCHEDULER_NAMES


def make_scheduler(name: str | None, base: SchedulerMixin) -> SchedulerMixin:
    """The scheduler called ``name`` with ``base``'s noise schedule; ``base`` itself for None."""
    if name is None:
        return base
    if name not in _CLASSES:
        raise ValueError(f"unknown scheduler {name!r}; expected one of {', '.join(SCHEDULER_NAMES)}")
    return _CLASSES[name].from_config(base.config, **_OPTIONS.get(name, {}))
