"""`python -m train.plan`: peak GPU memory (weights, gradients, optimizer state, activations,
workspace), FLOPs per optimizer step and step time of a training configuration, planned on the CPU
from the real-size models traced on fake tensors (no weights, no GPU).

    python -m train.plan --config configs/keyboard_1024.yaml train.batch_size=1 --gpu a100-40gb
    python -m train.plan --config configs/keyboard_1024.yaml --gpu-memory 24 --strategy zero2 --gpus 8
    python -m train.plan --config configs/keyboard_1024.yaml --sweep --resolutions 512 1024 --gpus 8
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from common.atomic import atomic_write_text
from train.config import load_config
from train.config_loader import ConfigError
from train.plan.devices import GIB, GPUS, RESERVED_GIB, Gpu, gpu_by_name
from train.plan.planner import Layout, Plan, plan
from train.plan.sharding import STRATEGIES
from train.plan.suggest import savers_that_fit
from train.plan.sweep import plan_rows, table
from train.plan.sweep import sweep as run_sweep

DEFAULT_MFU = 0.4


def render(result: Plan, gpu: Gpu | None, mfu: float) -> str:
    """The plan of one configuration, as a user reads it."""
    t, lay = result.config.train, result.layout
    where = "1 GPU" if lay.strategy == "single" else f"{lay.strategy} over {lay.gpus} GPUs"
    lines = [
        f"{result.height}x{result.width}, batch {t.batch_size} x {t.gradient_accumulation_steps} "
        f"accumulation per GPU, {t.mixed_precision}, checkpointing {t.gradient_checkpointing}, "
        f"{t.optimizer}, {t.attention}, "
        f"cache {'on' if lay.cache else 'off'}, {where}",
        f"ControlNet {result.trace.trainable_params / 1e9:.3f} B parameters trained, UNet "
        f"{result.trace.frozen_params / 1e9:.3f} B frozen",
        "peak memory per GPU (allocated tensors):",
    ]
    for kind, size in result.peak.by_kind.items():
        lines.append(f"  {kind:<12}{size / GIB:8.2f} GiB")
    lines.append(
        f"  {'total':<12}{result.peak.total / GIB:8.2f} GiB (+{RESERVED_GIB:g} GiB kept free in a fit)"
    )
    lines.append(
        f"FLOPs per optimizer step per GPU: {result.trace.flops_per_step / 1e12:.2f} TFLOP (executed)"
    )
    if gpu is not None:
        verdict = "fits" if result.fits(gpu.memory_gib) else "does NOT fit"
        lines.append(f"{gpu.name} ({gpu.memory_gib:g} GiB): {verdict}")
        seconds = result.step_seconds(gpu, mfu)
        if seconds is not None:
            lines.append(
                f"at {mfu:.0%} of {gpu.bf16_tflops:g} TFLOP/s: {seconds:.3f} s/step, "
                f"{result.images_per_step / seconds:.2f} images/s ({result.images_per_step} per step)"
            )
    lines += [f"note: {note}" for note in result.notes]
    lines.append(f"traced in {result.trace.trace_seconds:.0f} s")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m train.plan", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="the trainer's YAML recipe; overrides follow")
    parser.add_argument("--gpu", choices=list(GPUS), help="a named card (memory and bf16 peak)")
    parser.add_argument("--gpu-memory", type=float, metavar="GIB", help="a card of this much memory")
    parser.add_argument("--mfu", type=float, default=DEFAULT_MFU, help="utilisation for the step time")
    parser.add_argument("--strategy", choices=STRATEGIES, default="single")
    parser.add_argument("--gpus", type=int, default=1, help="GPUs of a ddp/fsdp/zero2/zero3 run")
    parser.add_argument("--no-cache", action="store_true", help="plan without the latent/embedding cache")
    parser.add_argument("--sweep", action="store_true", help="tabulate every saver combination")
    parser.add_argument(
        "--resolutions", type=int, nargs="+", help="sweep these sides (default: the recipe's)"
    )
    parser.add_argument("--json", help="also write the plan(s) here")
    return parser.parse_known_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args, overrides = parse_args(argv)
    try:
        config = load_config(args.config, overrides, check_paths=False)
    except ConfigError as err:
        sys.stderr.write(f"{err}\n")
        return 2
    gpu = gpu_by_name(args.gpu) if args.gpu else None
    if args.gpu_memory:
        gpu = Gpu(f"{args.gpu_memory:g} GiB GPU", args.gpu_memory, gpu.bf16_tflops if gpu else 0.0)
    if args.sweep:
        gpus = max(args.gpus, 2)
        layouts = [Layout("single", 1, True), Layout("single", 1, False)]
        layouts += [Layout(s, gpus, True) for s in STRATEGIES if s != "single"]
        plans = list(run_sweep(config, args.resolutions or [config.data.resolution], layouts))
        print(table(plan_rows(plans)))
        print(
            "\nGiB per GPU (smallest of the 24/40/80 GB cards it fits): planned peak + 1 GiB kept free <= "
            "the card's memory; sharded layouts by formula"
        )
        _write_json(args.json, plans)
        return 0
    result = plan(config, Layout(args.strategy, args.gpus, not args.no_cache))
    print(render(result, gpu, args.mfu))
    if gpu is not None and not result.fits(gpu.memory_gib):
        savers = savers_that_fit(result, gpu.memory_gib)
        print(
            "would fit with: "
            + (" ".join(savers) if savers else "none of the savers tried (8-bit AdamW, checkpointing both)")
        )
    _write_json(args.json, [result])
    return 0


def _write_json(path: str | None, plans: list[Plan]) -> None:
    if path:
        atomic_write_text(Path(path), json.dumps(plan_rows(plans), indent=1))


if __name__ == "__main__":
    sys.exit(main())
