"""GPU benchmark of ControlNet training at full SDXL size, with random weights (nothing to download).

Builds the SDXL base UNet architecture (2.57 B parameters, the public config) with random weights, the
ControlNet from it (`ControlNetModel.from_unet`, 1.25 B), and runs the project's own training step
(`train.step_losses.ControlNetStepLosses` with the switches of `train.memory_savers`) on synthetic
cached latents and prompt embeddings, exactly what a warm-cache run feeds it. Per combination of memory
savers and resolution it reports peak GPU memory, seconds per step, images/s and model FLOPs
utilisation (MFU) against the GPU's dense bf16 peak.

Each measurement runs in a fresh subprocess, so peak memory is not inherited and an OOM costs one row.
FLOPs are counted once per resolution with `torch.utils.flop_counter.FlopCounterMode` on a step of the
"savers off" row at batch 1 (forward + backward; matmul/conv/attention FLOPs, the MFU convention, so
recomputation under gradient checkpointing does not count as useful work) and scaled by the batch.

    python bench/bench_sdxl_train_gpu.py [--resolutions 1024 512] [--max-batch] [--json out.json]
    python bench/bench_sdxl_train_gpu.py --smoke     # the same code path on CPU with the tiny model

Targets (issue 7): 1024², batch 1 fits in <= 24 GiB with the savers on; MFU >= 45 % with the savers off
at the largest batch that fits in 80 GB.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

logger = logging.getLogger("bench.sdxl_train")

COMBOS: dict[str, dict[str, Any]] = {
    "savers off": {"gradient_checkpointing": "none", "optimizer": "adamw", "channels_last": False},
    "checkpointing": {"gradient_checkpointing": "both", "optimizer": "adamw", "channels_last": False},
    "checkpointing + 8-bit AdamW": {"gradient_checkpointing": "both", "optimizer": "adamw_8bit"},
    "all savers": {
        "gradient_checkpointing": "both",
        "optimizer": "adamw_8bit",
        "channels_last": True,
        "tf32": True,
    },
}
"""Switches of `TrainConfig` per row; everything else at the trainer's defaults (bf16 autocast with fp32
master weights, fused AdamW, SDPA, set_to_none)."""
CUDA_ONLY = {"adamw_8bit"}
PEAK_BF16_TFLOPS = {
    "H100 SXM": 989.0,
    "H100 80GB HBM3": 989.0,
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H200": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "RTX 4090": 165.0,
}
"""Dense bf16 tensor-core peaks (no sparsity), matched by substring of the device name."""
TARGET_MEMORY_GIB, TARGET_MFU = 24.0, 0.45


@dataclass
class Spec:
    """One measurement: a row of savers at one resolution and batch size."""

    combo: str
    resolution: int
    batch: int
    steps: int = 10
    warmup: int = 3
    count_flops: bool = False
    smoke_model: str | None = None
    """Folder of the tiny SDXL (CPU smoke run); None builds the full-size architecture on CUDA."""
    compile: bool = False


@dataclass
class Result:
    spec: Spec
    status: str = "ok"
    """'ok', 'OOM', or 'skipped: <why>'."""
    s_per_step: float = float("nan")
    peak_allocated_gib: float = float("nan")
    peak_reserved_gib: float = float("nan")
    flops_per_step: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------- one measurement


def _build_models(spec: Spec, device: torch.device) -> tuple[Any, Any]:
    from diffusers import ControlNetModel, UNet2DConditionModel

    if spec.smoke_model:
        unet = UNet2DConditionModel.from_pretrained(spec.smoke_model, subfolder="unet")
    else:
        from bench_inference import SDXL_UNET  # this script's folder is on sys.path

        with torch.device(device):
            unet = UNet2DConditionModel(**SDXL_UNET)
    with torch.device(device):
        controlnet = ControlNetModel.from_unet(unet)
    unet.requires_grad_(False)
    controlnet.train()
    return controlnet, unet


def _batch(unet: Any, spec: Spec, device: torch.device) -> dict[str, torch.Tensor]:
    """What the latent cache would give: latents, both prompt embeddings, time ids, the condition."""
    b, side = spec.batch, spec.resolution
    text_dim = unet.config.cross_attention_dim
    pooled_dim = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
    return {
        "latents": torch.randn(b, 4, side // 8, side // 8, device=device),
        "prompt_embeds": torch.randn(b, 77, text_dim, device=device),
        "pooled_embeds": torch.randn(b, pooled_dim, device=device),
        "time_ids": torch.tensor([[side, side, 0, 0, side, side]] * b, dtype=torch.float32, device=device),
        "conditioning_pixel_values": torch.rand(b, 3, side, side, device=device),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(spec: Spec) -> Result:
    """Builds everything for `spec` and times `spec.steps` optimizer steps after `spec.warmup`."""
    from accelerate import Accelerator
    from diffusers import DDPMScheduler
    from torch.utils.flop_counter import FlopCounterMode

    from train.config import SkinforgeConfig
    from train.memory_savers import apply_model_savers, controlnet_param_groups, make_optimizer, set_tf32
    from train.step_losses import ControlNetStepLosses

    device = torch.device("cpu" if spec.smoke_model else "cuda")
    cfg = SkinforgeConfig()
    for key, value in COMBOS[spec.combo].items():
        setattr(cfg.train, key, value)
    cfg.train.mixed_precision = "no" if spec.smoke_model else "bf16"
    cfg.train.compile = spec.compile
    if device.type == "cpu" and cfg.train.optimizer in CUDA_ONLY:
        return Result(spec, status="skipped: needs CUDA")
    accelerator = Accelerator(mixed_precision=cfg.train.mixed_precision, cpu=device.type == "cpu")
    controlnet, unet = _build_models(spec, device)
    if device.type == "cuda":
        set_tf32(cfg.train.tf32)
    apply_model_savers(cfg.train, controlnet, unet)
    unet.to(device, dtype=torch.bfloat16 if cfg.train.mixed_precision == "bf16" else torch.float32)
    optimizer = make_optimizer(cfg.train, controlnet_param_groups(controlnet, 1e-5, None), device)
    controlnet, optimizer = accelerator.prepare(controlnet, optimizer)
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    empty = {
        "prompt_embeds": torch.zeros(77, unet.config.cross_attention_dim, device=device),
        "pooled_embeds": torch.zeros(_batch(unet, spec, device)["pooled_embeds"].shape[1], device=device),
    }
    step_losses = ControlNetStepLosses(cfg, accelerator, controlnet, unet, scheduler, empty, None)
    batch = _batch(unet, spec, device)

    def step(index: int) -> None:
        losses = step_losses(batch, micro_step=index, step=index)
        accelerator.backward(losses["total"])
        accelerator.clip_grad_norm_(controlnet.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=cfg.train.zero_grad_set_to_none)

    flops = 0.0
    if spec.count_flops:
        counter = FlopCounterMode(display=False)
        with counter:
            step(0)
        flops = float(counter.get_total_flops())
    for index in range(spec.warmup):
        step(index + 1)
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for index in range(spec.steps):
        start = time.perf_counter()
        step(spec.warmup + 1 + index)
        _sync(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    reserved = torch.cuda.max_memory_reserved() / 2**30 if device.type == "cuda" else float("nan")
    return Result(spec, "ok", statistics.median(times), peak, reserved, flops)


def run_child(spec_json: str) -> None:
    """`--one`: measures one spec in this process and prints `RESULT <json>` as its last line."""
    from train.memory_savers import SaverUnavailable

    spec = Spec(**json.loads(spec_json))
    try:
        result = measure(spec)
    except torch.OutOfMemoryError:
        result = Result(spec, status="OOM")
    except SaverUnavailable as err:
        result = Result(spec, status=f"skipped: {err}")
    print("RESULT " + json.dumps(asdict(result)), flush=True)


# ------------------------------------------------------------------------------------------- the parent


def in_subprocess(spec: Spec, timeout: float) -> Result:
    command = [sys.executable, __file__, "--one", json.dumps(asdict(spec))]
    logger.info("%s @ %d², batch %d", spec.combo, spec.resolution, spec.batch)
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        oom = "OutOfMemoryError" in proc.stderr or "out of memory" in proc.stderr
        if not oom:
            logger.error("child failed:\n%s", proc.stderr[-3000:])
        return Result(spec, status="OOM" if oom else f"failed (exit {proc.returncode})")
    raw = json.loads(lines[-1].removeprefix("RESULT "))
    return Result(**{**raw, "spec": Spec(**raw["spec"])})


def largest_batch(base: Spec, timeout: float, limit: int = 64) -> Result | None:
    """Doubles the batch until OOM, then bisects: the largest batch of `base` that fits, measured."""
    best, batch, high = None, 1, None
    while batch <= limit and high is None:
        result = in_subprocess(Spec(**{**asdict(base), "batch": batch}), timeout)
        if result.status == "ok":
            best, batch = result, batch * 2
        else:
            high = batch
    low = best.spec.batch if best else 0
    while high is not None and high - low > 1:
        middle = (low + high) // 2
        result = in_subprocess(Spec(**{**asdict(base), "batch": middle}), timeout)
        if result.status == "ok":
            best, low = result, middle
        else:
            high = middle
    return best


def peak_tflops(name: str, override: float | None) -> float | None:
    if override:
        return override
    return next((value for key, value in PEAK_BF16_TFLOPS.items() if key in name), None)


def render(results: list[Result], flops_per_image: dict[int, float], peak: float | None, title: str) -> str:
    columns = ("resolution", "savers", "batch", "status", "peak alloc GiB", "peak reserved GiB")
    columns += ("s/step", "images/s", "model TFLOP/image", "MFU")
    lines = [title, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in results:
        s = r.spec
        images = s.batch / r.s_per_step if r.status == "ok" else float("nan")
        mfu = "n/a"
        if r.status == "ok" and peak and flops_per_image.get(s.resolution):
            mfu = f"{flops_per_image[s.resolution] * s.batch / r.s_per_step / (peak * 1e12):.1%}"
        lines.append(
            f"| {s.resolution}² | {s.combo} | {s.batch} | {r.status} | {r.peak_allocated_gib:.1f} | "
            f"{r.peak_reserved_gib:.1f} | {r.s_per_step:.3f} | {images:.2f} | "
            f"{flops_per_image.get(s.resolution, float('nan')) / 1e12:.3g} | {mfu} |"
        )
    return "\n".join(lines)


def verdicts(results: list[Result], best: Result | None, flops: dict[int, float], peak: float | None) -> str:
    lines = []
    fits = [
        r for r in results if r.spec.resolution == 1024 and r.spec.combo == "all savers" and r.status == "ok"
    ]
    if fits:
        gib = fits[0].peak_allocated_gib
        verdict = "met" if gib <= TARGET_MEMORY_GIB else "NOT met"
        lines.append(
            f"1024², batch 1, all savers: {gib:.1f} GiB (target <= {TARGET_MEMORY_GIB:.0f}): {verdict}"
        )
    if best and peak and flops.get(1024):
        mfu = flops[1024] * best.spec.batch / best.s_per_step / (peak * 1e12)
        verdict = "met" if mfu >= TARGET_MFU else "NOT met"
        lines.append(
            f"largest batch with savers off at 1024²: {best.spec.batch}, MFU {mfu:.1%} "
            f"(target >= {TARGET_MFU:.0%}): {verdict}"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--smoke", action="store_true", help="CPU run of the same code on the tiny model")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[1024, 512])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per row (median)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--max-batch", action="store_true", help="search the largest batch with savers off")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet and ControlNet")
    parser.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak, if not in the table")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per subprocess")
    parser.add_argument("--json", type=Path)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.one:
        run_child(args.one)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.smoke and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark needs a GPU (use --smoke to check it on CPU)")
    smoke_model = None
    if args.smoke:
        from train.tiny_sdxl import build_tiny_sdxl

        smoke_model = str(
            build_tiny_sdxl(Path(tempfile.mkdtemp(prefix="bench-sdxl-train-")) / "sdxl", seed=0)
        )
        args.resolutions, args.steps, args.warmup = [64], 2, 1
    common = {"steps": args.steps, "warmup": args.warmup, "smoke_model": smoke_model, "compile": args.compile}
    results, flops = [], {}
    for resolution in args.resolutions:
        for combo in COMBOS:
            spec = Spec(combo, resolution, 1, count_flops=combo == "savers off", **common)
            result = in_subprocess(spec, args.timeout)
            if result.flops_per_step:
                flops[resolution] = result.flops_per_step
            results.append(result)
    best = None
    if args.max_batch and not args.smoke:
        best = largest_batch(Spec("savers off", 1024, 1, **common), args.timeout)
        if best:
            results.append(best)
    name = "CPU (smoke, tiny model)" if args.smoke else torch.cuda.get_device_name()
    peak = None if args.smoke else peak_tflops(name, args.peak_tflops)
    import diffusers

    title = (
        f"{name}; torch {torch.__version__}, diffusers {diffusers.__version__}; {time.strftime('%Y-%m-%d')}; "
        f"median of {args.steps} steps after {args.warmup} warm-up; bf16 peak {peak or 'unknown'} TFLOP/s"
    )
    print(render(results, flops, peak, title))
    print(verdicts(results, best, flops, peak))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
