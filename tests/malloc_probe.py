"""Run by tests/test_host_memory.py in a fresh process: page faults of a training-step-like allocation
pattern, after `common.host_memory.keep_freed_memory()`, a trainer's `setup()` or a `python -m inference`
run (its `main`), or after none of them.

The pattern is what a CPU step does to glibc: many multi-megabyte buffers live together, then all are
freed. By default glibc trims the freed top of the heap and faults every page in again the next round.
Prints one JSON line: {"faults_per_round": F, "pages_per_round": P}.
"""

from __future__ import annotations

import json
import resource
import sys

import numpy as np

BLOCK_FLOATS = 1 << 20  # 4 MiB, like a [4, 16, 128, 128] fp32 activation
BLOCKS = 12
ROUNDS = 6
WARMUP_ROUNDS = 2


def faults_per_round() -> float:
    faults = []
    for _ in range(ROUNDS):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        blocks = [np.ones(BLOCK_FLOATS, dtype=np.float32) for _ in range(BLOCKS)]  # touches every page
        del blocks
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    measured = faults[WARMUP_ROUNDS:]
    return sum(measured) / len(measured)


def main() -> None:
    mode, *rest = sys.argv[1:]
    if mode == "keep":
        from common.host_memory import keep_freed_memory

        if not keep_freed_memory():
            raise SystemExit("keep_freed_memory() was refused")
    elif mode == "trainer":
        from train.config import load_config
        from train.trainer import ControlNetTrainer

        config_path, *overrides = rest
        ControlNetTrainer(load_config(config_path, overrides)).setup()
    elif mode == "inference":
        from inference.__main__ import main as inference_main

        if inference_main(rest) != 0:
            raise SystemExit("python -m inference failed")
    elif mode != "default":
        raise SystemExit(f"unknown mode {mode!r}")
    pages = BLOCKS * BLOCK_FLOATS * 4 // resource.getpagesize()
    sys.stdout.write(json.dumps({"faults_per_round": faults_per_round(), "pages_per_round": pages}) + "\n")


if __name__ == "__main__":
    main()
