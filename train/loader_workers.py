"""DataLoader workers capped at the cores this process may use.

torch warns, at every epoch's iterator, when `num_workers` exceeds the CPUs in the process's affinity
mask ("This DataLoader will create 8 worker processes in total. Our suggested max number of worker in
current system is 2..."), and more workers than cores only contend with the training threads. So the
trainer asks for at most that many, and says so once.
"""

from __future__ import annotations

import logging
import os

__all__ = ["usable_cores", "usable_workers"]

logger = logging.getLogger(__name__)


def usable_cores() -> int:
    """CPUs in this process's affinity mask (a container's or a job's share), not the machine's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def usable_workers(requested: int) -> int:
    """``requested`` DataLoader workers, capped at the usable cores (logged once when capped)."""
    cores = usable_cores()
    if requested <= cores:
        return requested
    logger.info("data.num_workers=%d capped at the %d CPU cores this process may use", requested, cores)
    return cores
