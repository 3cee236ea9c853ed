"""GPU benchmark of ControlNet training at full SDXL size, with random weights (nothing to download).

Builds the SDXL base UNet architecture (2.57 B parameters, the public config `SDXL_UNET` of
bench_inference.py) with random weights directly on the GPU, the ControlNet from it
(`ControlNetModel.from_unet`, 1.25 B, fp32 master weights, trainable; the UNet frozen in bf16), and runs
the project's own training step (`train.step_losses.ControlNetStepLosses` with the switches of
`train.memory_savers`) on synthetic cached latents and prompt embeddings, exactly what a warm-cache run
feeds it. Per combination of memory savers and resolution it reports peak GPU memory (allocated and
reserved), seconds per step (median), images/s and model FLOPs utilisation (MFU) against the GPU's dense
bf16 peak.

Each measurement runs in a fresh subprocess (`--one SPEC`), so peak memory is not inherited and an OOM
costs one row. FLOPs are counted with `torch.utils.flop_counter.FlopCounterMode` around one forward +
backward of the "savers off" row (once per resolution and batch). It counts matmul, convolution and
attention FLOPs, the MFU convention: elementwise work is not counted, and recomputation under gradient
checkpointing is not useful work, so every row at a resolution is divided by the same count.

Next to each row the memory planner's prediction (`train.plan`, the same switches traced on fake tensors
on the CPU, planned in worker processes while the GPU rows run): planned peak allocated memory and the
planned step time at `--plan-mfu` of the GPU's bf16 peak (executed FLOPs: recomputation included), so
the first GPU run also measures the planner's error. `--quick` is the run that fits 10 minutes.

    python bench/bench_sdxl_train_gpu.py --resolutions 1024 512 --max-batch --json sdxl_train.json
    python bench/bench_sdxl_train_gpu.py --quick     # 1024² and 512², 3 steps a row: ~10 minutes
    python bench/bench_sdxl_train_gpu.py --smoke     # the same code path on CPU with the tiny model

Targets (RESULTS.md): 1024², batch 1 fits in <= 24 GiB with the savers on; MFU >= 45 % with the savers off
at the largest batch that fits in 80 GB (on a larger GPU the search is capped with `--memory-cap-gib`).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gc
import json
import logging
import math
import multiprocessing
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

SAVERS_OFF: dict[str, Any] = {
    "gradient_checkpointing": "none",
    "optimizer": "adamw",
    "fused_adamw": True,
    "attention": "sdpa",
    "channels_last": False,
    "tf32": False,
    "zero_grad_set_to_none": False,
}
ALL_SAVERS: dict[str, Any] = {
    **SAVERS_OFF,
    "gradient_checkpointing": "both",
    "optimizer": "adamw_8bit",
    "channels_last": True,
    "tf32": True,
    "zero_grad_set_to_none": True,
}
COMBOS: dict[str, dict[str, Any]] = {
    "savers off": SAVERS_OFF,
    "checkpointing both": {**SAVERS_OFF, "gradient_checkpointing": "both"},
    "checkpointing + 8-bit AdamW": {
        **SAVERS_OFF,
        "gradient_checkpointing": "both",
        "optimizer": "adamw_8bit",
    },
    "all savers": ALL_SAVERS,
    "all savers + compile": {**ALL_SAVERS, "compile": True},
}
"""`TrainConfig` switches per row, on top of bf16 autocast (fp32 on the CPU smoke run). The compile row
runs only with `--compile` (compilation of the full-size models takes minutes)."""
DEFAULT_COMBOS = [name for name in COMBOS if not COMBOS[name].get("compile")]
FLOP_COMBO = "savers off"
PEAK_BF16_TFLOPS = {
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,  # SXM (the name reads "NVIDIA H100 80GB HBM3")
    "H200": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "RTX 4090": 165.0,
}
"""Dense bf16 tensor-core peaks (no sparsity) in TFLOP/s, the first key found in the device name wins."""
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
    memory_cap_gib: float | None = None
    """Cap of the process's GPU memory (to emulate a smaller card); None uses all of it."""


@dataclass
class Result:
    """What a child measured; NaN/0 where it did not get that far."""

    spec: Spec
    status: str = "ok"
    """'ok', 'OOM', 'skipped: <why>' or 'failed (exit N)'."""
    s_per_step: float = float("nan")
    peak_allocated_gib: float = float("nan")
    peak_reserved_gib: float = float("nan")
    flops_per_step: float = 0.0
    """Model FLOPs of one forward + backward at this spec's batch; 0 if not counted."""
    extra: dict[str, Any] = field(default_factory=dict)
    planned_peak_gib: float = float("nan")
    """`train.plan`'s peak allocated memory for this spec (NaN: not planned)."""
    planned_flops_per_step: float = 0.0
    """`train.plan`'s executed FLOPs of one step (recomputation included); 0: not planned."""


# ------------------------------------------------------------------------------------- one measurement


def _build_models(spec: Spec, device: torch.device, weight_dtype: torch.dtype) -> tuple[Any, Any]:
    """Frozen UNet in `weight_dtype` and a trainable fp32 ControlNet copied from it, on `device`."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    if spec.smoke_model:
        unet = UNet2DConditionModel.from_pretrained(spec.smoke_model, subfolder="unet")
    else:
        from bench_inference import SDXL_UNET  # this script's folder is sys.path[0]

        with torch.device(device):  # random init on the GPU: seconds instead of minutes on the CPU
            unet = UNet2DConditionModel(**SDXL_UNET)
    with torch.device(device):
        controlnet = ControlNetModel.from_unet(unet)
    unet.requires_grad_(False)
    unet.to(device, dtype=weight_dtype)
    controlnet.to(device).train()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the fp32 UNet's blocks must not count as reserved by training
    return controlnet, unet


def _pooled_dim(unet: Any) -> int:
    return unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim


def _batch(unet: Any, spec: Spec, device: torch.device) -> dict[str, torch.Tensor]:
    """What the latent cache would give: latents, both prompt embeddings, time ids, the condition."""
    b, side = spec.batch, spec.resolution
    return {
        "latents": torch.randn(b, 4, side // 8, side // 8, device=device),
        "prompt_embeds": torch.randn(b, 77, unet.config.cross_attention_dim, device=device),
        "pooled_embeds": torch.randn(b, _pooled_dim(unet), device=device),
        "time_ids": torch.tensor([[side, side, 0, 0, side, side]] * b, dtype=torch.float32, device=device),
        "conditioning_pixel_values": torch.rand(b, 3, side, side, device=device),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def cuda_only(combo: str) -> bool:
    """Whether the row needs CUDA (8-bit AdamW is bitsandbytes' CUDA kernel)."""
    return COMBOS[combo]["optimizer"] == "adamw_8bit"


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
    cfg.train.mixed_precision = "no" if device.type == "cpu" else "bf16"
    if device.type == "cpu" and cuda_only(spec.combo):
        return Result(spec, status="skipped: needs CUDA")
    if device.type == "cuda" and spec.memory_cap_gib:
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, spec.memory_cap_gib * 2**30 / total))
    accelerator = Accelerator(mixed_precision=cfg.train.mixed_precision, cpu=device.type == "cpu")
    weight_dtype = torch.bfloat16 if cfg.train.mixed_precision == "bf16" else torch.float32
    controlnet, unet = _build_models(spec, device, weight_dtype)
    if device.type == "cuda":
        set_tf32(cfg.train.tf32)
    apply_model_savers(cfg.train, controlnet, unet)
    optimizer = make_optimizer(cfg.train, controlnet_param_groups(controlnet, cfg.train.lr, None), device)
    controlnet, optimizer = accelerator.prepare(controlnet, optimizer)
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    empty = {
        "prompt_embeds": torch.zeros(77, unet.config.cross_attention_dim, device=device),
        "pooled_embeds": torch.zeros(_pooled_dim(unet), device=device),
    }
    step_losses = ControlNetStepLosses(cfg, accelerator, controlnet, unet, scheduler, empty, None)
    batch = _batch(unet, spec, device)

    def forward_backward(index: int) -> None:
        losses = step_losses(batch, micro_step=index, step=index)
        accelerator.backward(losses["total"])

    def optimizer_step() -> None:
        accelerator.clip_grad_norm_(controlnet.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=cfg.train.zero_grad_set_to_none)

    flops = 0.0
    if spec.count_flops:  # doubles as the first warm-up step
        counter = FlopCounterMode(display=False)
        with counter:
            forward_backward(0)
        optimizer_step()
        flops = float(counter.get_total_flops())
    for index in range(spec.warmup):
        forward_backward(index + 1)
        optimizer_step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()  # reserved then measures what the steady-state steps hold
        torch.cuda.reset_peak_memory_stats()
    times = []
    for index in range(spec.steps):
        start = time.perf_counter()
        forward_backward(spec.warmup + 1 + index)
        optimizer_step()
        _sync(device)
        times.append(time.perf_counter() - start)
    on_gpu = device.type == "cuda"
    peak = torch.cuda.max_memory_allocated() / 2**30 if on_gpu else float("nan")
    reserved = torch.cuda.max_memory_reserved() / 2**30 if on_gpu else float("nan")
    extra = {"step_times": times, "compile": cfg.train.compile}
    return Result(spec, "ok", statistics.median(times), peak, reserved, flops, extra)


# ------------------------------------------------------------------------------------- the plan of a row


def plan_config(spec: Spec) -> Any:
    """The trainer config of `spec`'s row, as the planner takes it (the shipped SDXL configs unless smoke)."""
    from train.config import SkinforgeConfig

    cfg = SkinforgeConfig()
    for key, value in COMBOS[spec.combo].items():
        setattr(cfg.train, key, value)
    cfg.train.mixed_precision = "no" if spec.smoke_model else "bf16"
    cfg.train.batch_size = spec.batch
    cfg.train.gradient_accumulation_steps = 1
    cfg.data.resolution = spec.resolution
    cfg.data.buckets = False
    if spec.smoke_model:
        cfg.model.base = spec.smoke_model
    return cfg


def plan_row(spec: Spec) -> tuple[float, float]:
    """Planned peak (GiB) and executed FLOPs of one step of `spec` (a worker process: CPU only)."""
    from train.plan import plan

    result = plan(plan_config(spec), gpu=spec.smoke_model is None)
    return result.peak.total / 2**30, result.trace.flops_per_step


def _plan_key(spec: Spec) -> tuple[str, int, int]:
    return spec.combo, spec.resolution, spec.batch


class Planner:
    """Plans rows in worker processes while the GPU rows run; `fill` waits for a row's plan."""

    def __init__(self, workers: int) -> None:
        context = multiprocessing.get_context("spawn")  # the parent may hold a CUDA context
        self.pool = concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context)
        self.futures: dict[tuple[str, int, int], concurrent.futures.Future] = {}

    def submit(self, spec: Spec) -> None:
        if _plan_key(spec) not in self.futures:
            self.futures[_plan_key(spec)] = self.pool.submit(plan_row, spec)

    def fill(self, result: Result, timeout: float) -> None:
        self.submit(result.spec)
        try:
            peak, flops = self.futures[_plan_key(result.spec)].result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            logger.error(
                "no plan of %s @ %d² within %.0f s", result.spec.combo, result.spec.resolution, timeout
            )
            return
        except Exception:  # a planner bug must not cost the measured rows; it is logged with its trace
            logger.exception("planning %s @ %d² failed", result.spec.combo, result.spec.resolution)
            return
        result.planned_peak_gib, result.planned_flops_per_step = peak, flops

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


def run_child(spec_json: str) -> None:
    """`--one`: measures one spec in this process and prints `RESULT <json>` as its last line."""
    from train.memory_savers import SaverUnavailable

    spec = Spec(**json.loads(spec_json))
    try:
        result = measure(spec)
    except SaverUnavailable as err:
        result = Result(spec, status=f"skipped: {err}")
    except RuntimeError as err:  # cuBLAS/cuDNN report a failed allocation as a RuntimeError
        if not _is_oom(err):
            raise
        result = Result(spec, status="OOM")
    print("RESULT " + json.dumps(asdict(result)), flush=True)


# ------------------------------------------------------------------------------------------- the parent


def in_subprocess(spec: Spec, timeout: float) -> Result:
    """Runs `spec` in a fresh interpreter; a crash without a result line is an OOM or a failure row."""
    command = [sys.executable, str(Path(__file__).resolve()), "--one", json.dumps(asdict(spec))]
    logger.info("%s @ %d², batch %d", spec.combo, spec.resolution, spec.batch)
    try:
        proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        logger.error("%s @ %d²: no result within %.0f s", spec.combo, spec.resolution, timeout)
        return Result(spec, status=f"failed (timeout {timeout:.0f} s)")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        oom = "OutOfMemoryError" in proc.stderr or "out of memory" in proc.stderr
        if not oom:
            logger.error("child failed:\n%s", proc.stderr[-3000:])
        return Result(spec, status="OOM" if oom else f"failed (exit {proc.returncode})")
    raw = json.loads(lines[-1].removeprefix("RESULT "))
    return Result(**{**raw, "spec": Spec(**raw["spec"])})


def largest_batch(base: Spec, timeout: float, limit: int = 128) -> Result | None:
    """Doubles the batch until it does not fit, then bisects: the largest batch of `base` that fits."""
    best: Result | None = None
    batch, high = 1, None
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
    """The GPU's dense bf16 peak: the override, else the table entry found in its name, else None."""
    if override:
        return override
    return next((value for key, value in PEAK_BF16_TFLOPS.items() if key in name), None)


def flops_of(result: Result, per_image: dict[int, float]) -> float:
    """Model FLOPs of `result`'s step: its own count, else the resolution's per-image count x batch."""
    if result.flops_per_step:
        return result.flops_per_step
    return per_image.get(result.spec.resolution, 0.0) * result.spec.batch


def mfu(result: Result, per_image: dict[int, float], peak: float | None) -> float | None:
    flops = flops_of(result, per_image)
    if result.status != "ok" or not peak or not flops:
        return None
    return flops / result.s_per_step / (peak * 1e12)


def _num(value: float, spec: str) -> str:
    return "n/a" if math.isnan(value) else format(value, spec)


def planned_seconds(result: Result, peak: float | None, plan_mfu: float) -> float:
    """The planned step time: the planner's executed FLOPs at `plan_mfu` of the bf16 peak (NaN: unknown)."""
    if not peak or not result.planned_flops_per_step:
        return float("nan")
    return result.planned_flops_per_step / (plan_mfu * peak * 1e12)


def render(
    results: list[Result], per_image: dict[int, float], peak: float | None, title: str, plan_mfu: float = 0.45
) -> str:
    """The markdown table, one row per result, with the planner's prediction beside the measurement."""
    columns = ("resolution", "savers", "batch", "status", "peak alloc GiB", "peak reserved GiB")
    columns += ("s/step", "images/s", "model TFLOP/step", "MFU", "planned peak GiB")
    columns += (f"planned s/step @{plan_mfu:.0%}",)
    lines = [title, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in results:
        s, ok = r.spec, r.status == "ok"
        images = s.batch / r.s_per_step if ok else float("nan")
        flops = flops_of(r, per_image) if ok else 0.0
        utilisation = mfu(r, per_image, peak)
        lines.append(
            f"| {s.resolution}² | {s.combo} | {s.batch} | {r.status} | {_num(r.peak_allocated_gib, '.1f')} | "
            f"{_num(r.peak_reserved_gib, '.1f')} | {_num(r.s_per_step, '.3f')} | {_num(images, '.2f')} | "
            f"{f'{flops / 1e12:.4g}' if flops else 'n/a'} | "
            f"{'n/a' if utilisation is None else f'{utilisation:.1%}'} | {_num(r.planned_peak_gib, '.1f')} | "
            f"{_num(planned_seconds(r, peak, plan_mfu), '.3f')} |"
        )
    return "\n".join(lines)


def verdicts(
    results: list[Result], best: Result | None, per_image: dict[int, float], peak: float | None
) -> list[str]:
    """The issue's two targets, each 'met', 'NOT met' or why it was not measured."""
    row = next(
        (r for r in results if (r.spec.resolution, r.spec.combo, r.spec.batch) == (1024, "all savers", 1)),
        None,
    )
    if row is None:
        memory = "1024² batch 1 with savers on: not measured (needs 1024 in --resolutions)"
    elif row.status != "ok":
        memory = f"1024² batch 1 with all savers: {row.status}: NOT met"
    else:
        verdict = "met" if row.peak_reserved_gib <= TARGET_MEMORY_GIB else "NOT met"
        memory = (
            f"1024² batch 1 with all savers: {row.peak_reserved_gib:.1f} GiB reserved "
            f"({row.peak_allocated_gib:.1f} allocated), target <= {TARGET_MEMORY_GIB:.0f} GiB: {verdict}"
        )
    if best is None:
        speed = "MFU with savers off at the largest batch: not measured (run with --max-batch)"
    else:
        value = mfu(best, per_image, peak)
        verdict = (
            "unknown peak (give --peak-tflops)"
            if value is None
            else ("met" if value >= TARGET_MFU else "NOT met")
        )
        shown = "n/a" if value is None else f"{value:.1%}"
        speed = (
            f"largest batch with savers off at 1024²: {best.spec.batch}, MFU {shown}, "
            f"target >= {TARGET_MFU:.0%}: {verdict}"
        )
    return [memory, speed]


def planner_error(results: list[Result], memory_gib: float) -> str:
    """How far the planned peaks are from the measured ones, and whether the plan foresaw each OOM."""
    ok = [r for r in results if r.status == "ok" and not math.isnan(r.planned_peak_gib)]
    errors = [r.planned_peak_gib / r.peak_allocated_gib - 1 for r in ok]
    line = (
        f"planner vs peak allocated: {min(errors):+.1%} to {max(errors):+.1%} over {len(ok)} rows "
        f"(target within ±15%: {'met' if all(abs(e) <= 0.15 for e in errors) else 'NOT met'})"
        if errors
        else "planner vs peak allocated: no row both measured and planned"
    )
    ooms = [r for r in results if r.status == "OOM" and not math.isnan(r.planned_peak_gib)]
    foreseen = sum(1 for r in ooms if r.planned_peak_gib + 1.0 > memory_gib)
    return line + (f"; {foreseen} of {len(ooms)} OOM rows planned not to fit" if ooms else "")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--one", metavar="SPEC_JSON", help=argparse.SUPPRESS)
    parser.add_argument("--smoke", action="store_true", help="CPU run of the same code on the tiny model")
    parser.add_argument("--smoke-model", type=Path, help="tiny SDXL folder to reuse (default: build one)")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[1024, 512])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per row (median)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before them")
    parser.add_argument("--max-batch", action="store_true", help="search the largest batch with savers off")
    parser.add_argument(
        "--memory-cap-gib",
        type=float,
        default=79.0,
        help="GPU memory the --max-batch search may use (the issue's 80 GB card), capped to the GPU's",
    )
    parser.add_argument("--compile", action="store_true", help="add the 'all savers + compile' row")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the 10-minute run: 3 steps after a warm-up per row, no batch search",
    )
    parser.add_argument("--no-plan", action="store_true", help="leave out the planner's prediction")
    parser.add_argument(
        "--plan-mfu", type=float, default=TARGET_MFU, help="utilisation of the planned step time (the target)"
    )
    parser.add_argument("--plan-workers", type=int, default=4, help="processes planning rows meanwhile")
    parser.add_argument(
        "--combos",
        nargs="+",
        choices=list(COMBOS),
        metavar="NAME",
        help="rows to run (default: all but compile)",
    )
    parser.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak, if not in the table")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per subprocess")
    parser.add_argument("--json", type=Path, help="also write the rows and the verdicts here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.one:
        run_child(args.one)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.smoke and not torch.cuda.is_available():
        sys.exit("no CUDA device: this benchmark needs a GPU (use --smoke to check its code path on CPU)")
    smoke_model = None
    if args.smoke:
        from train.tiny_sdxl import build_tiny_sdxl

        folder = args.smoke_model or Path(tempfile.mkdtemp(prefix="bench-sdxl-train-")) / "sdxl"
        smoke_model = str(build_tiny_sdxl(folder, seed=0))
        args.resolutions, args.steps, args.warmup, args.max_batch = [64], 2, 1, False
    if args.quick:
        args.steps, args.warmup, args.max_batch = 3, 1, False
    common = {"steps": args.steps, "warmup": args.warmup, "smoke_model": smoke_model}
    combos = args.combos or DEFAULT_COMBOS + (["all savers + compile"] if args.compile else [])
    results: list[Result] = []
    per_image: dict[int, float] = {}
    specs = [
        Spec(combo, resolution, 1, count_flops=combo == FLOP_COMBO, **common)
        for resolution in args.resolutions
        for combo in combos
    ]
    planner = None if args.no_plan else Planner(args.plan_workers)
    for spec in specs if planner else []:
        planner.submit(spec)
    for spec in specs:
        if args.smoke and cuda_only(spec.combo):
            result = Result(spec, status="skipped: needs CUDA")  # what the child says, without its start
        else:
            result = in_subprocess(spec, args.timeout)
        if result.flops_per_step:
            per_image[spec.resolution] = result.flops_per_step / spec.batch
        results.append(result)
    best = None
    if args.max_batch:
        base = Spec(FLOP_COMBO, 1024, 1, count_flops=True, memory_cap_gib=args.memory_cap_gib, **common)
        best = largest_batch(base, args.timeout)
        if best:
            results.append(best)
    if planner:
        for result in results:
            planner.fill(result, args.timeout)
        planner.close()
    name = "CPU (smoke, tiny model, fp32)" if args.smoke else torch.cuda.get_device_name()
    peak = None if args.smoke else peak_tflops(name, args.peak_tflops)
    import diffusers

    title = (
        f"{name}; torch {torch.__version__}, diffusers {diffusers.__version__}; {time.strftime('%Y-%m-%d')}; "
        f"median of {args.steps} steps after {args.warmup} warm-up; dense bf16 peak "
        f"{f'{peak:g} TFLOP/s' if peak else 'n/a'}"
    )
    lines = verdicts(results, best, per_image, peak) if not args.smoke else []
    if planner and not args.smoke:
        lines.append(planner_error(results, torch.cuda.get_device_properties(0).total_memory / 2**30))
    print(render(results, per_image, peak, title, args.plan_mfu))
    print("\n".join(lines))
    if args.json:
        meta = {"device": name, "torch": torch.__version__, "diffusers": diffusers.__version__}
        meta |= {"date": time.strftime("%Y-%m-%d"), "peak_bf16_tflops": peak}
        payload = {"meta": meta, "rows": [asdict(r) for r in results], "verdicts": lines}
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
