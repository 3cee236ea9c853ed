"""Inference benchmark: diffusers' default pipeline vs our fastest settings, in the same run.

CPU part (always): the tiny random SDXL (``train.tiny_sdxl``) with a tiny ControlNet, 128x128 conditions,
20 steps, CFG 5, batches of 4 images (4 seeds of one prompt, as an evaluation renders them). Variants:

* ``diffusers``: ``StableDiffusionXLControlNetPipeline.from_pretrained`` with default settings, called
  with prompt strings (it encodes the prompts in every call);
* ``ours``: ``inference.pipeline`` with default settings (prompt embeddings once per unique prompt);
* ``ours+channels_last``, ``ours+compile`` (torch.compile of UNet and ControlNet; its compile time
  is in the first batch, reported apart from the steady state) and ``ours fastest`` (both).

Variants are loaded once and measured in ``--rounds`` interleaved rounds of ``--batches`` batches (the
VM's speed drifts); the machine is shared, so each block waits for idle CPUs and blocks during which
other processes used more than 15 % of the CPUs are left out when quieter ones exist.

GPU part (only when CUDA is available): a full-size SDXL-architecture model with random weights (UNet
2.6 B, ControlNet from it, CLIP-L and OpenCLIP-bigG text encoders, the SDXL VAE) saved in fp16, one
image per call at 512² and 1024², 20 steps: P50/P95 latency and peak GPU memory for diffusers' default
fp16 pipeline, ours, and ours fastest (channels-last + torch.compile). ``--gpu-smoke`` runs that code
path on the CPU with the tiny model, to check it without a GPU.

    python bench/bench_inference.py [--rounds 3] [--batches 3] [--markdown] [--json out.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from diffusers import ControlNetModel, StableDiffusionXLControlNetPipeline  # noqa: E402

from inference.pipeline import GenerationSettings, generate, load_pipeline  # noqa: E402
from inference.settings import ComponentDtypes, SpeedSettings  # noqa: E402

logger = logging.getLogger("bench")

PROMPTS = ["a red keyboard skin", "a blue keyboard skin", "a green keyboard skin", "a black keyboard skin"]
QUIET = 0.15
"""Blocks during which other processes used more of the CPUs than this are left out (if any are quiet)."""

Runner = Callable[[list[str], list[Image.Image], list[int], int], None]
"""(prompts, conditions, seeds, side) -> generate that batch."""


@dataclass
class Result:
    variant: str
    load_s: float
    first_batch_s: float
    batches_s: list[float] = field(default_factory=list)
    background: list[float] = field(default_factory=list)
    peak_mib: float | None = None


# --------------------------------------------------------------------------- machine load


def busy_cpu_seconds() -> float:
    """CPU seconds all processes have spent busy since boot (all cores), from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as stat:
        ticks = [int(v) for v in stat.readline().split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def wait_for_quiet(timeout: float = 300.0) -> None:
    """Start a block only when other work leaves the CPUs mostly idle (gives up after ``timeout``)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        before = busy_cpu_seconds()
        time.sleep(1.0)
        share = (busy_cpu_seconds() - before) / (os.cpu_count() or 1)
        if share <= QUIET:
            return
        logger.info("CPUs %.0f%% busy with other work; waiting", 100 * share)
    logger.warning("CPUs still busy after %.0f s; measuring anyway", timeout)


def timed_block(run: Callable[[], None]) -> tuple[float, float]:
    """(seconds, others' share of the CPUs) of one call; our own CPU time is taken out of the busy time."""
    busy, own, start = busy_cpu_seconds(), time.process_time(), time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    others = busy_cpu_seconds() - busy - (time.process_time() - own)
    return seconds, max(0.0, others) / (seconds * (os.cpu_count() or 1))


# --------------------------------------------------------------------------- models


def build_tiny(work: Path) -> tuple[Path, Path]:
    from train.tiny_sdxl import build_tiny_controlnet, build_tiny_sdxl

    base = build_tiny_sdxl(work / "tiny-sdxl", seed=0)
    return base, build_tiny_controlnet(base, work / "tiny-controlnet", seed=0)


SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=(5, 10, 20), transformer_layers_per_block=(1, 2, 10), cross_attention_dim=2048,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816, norm_num_groups=32,
)  # fmt: skip
SDXL_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2, norm_num_groups=32, sample_size=1024, scaling_factor=0.13025, force_upcast=True,
)  # fmt: skip
TEXT_ENCODERS = {  # CLIP ViT-L/14 text tower and OpenCLIP ViT-bigG/14 text tower, with projection
    "text_encoder": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                     "num_attention_heads": 12, "projection_dim": 768, "hidden_act": "quick_gelu"},
    "text_encoder_2": {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
                       "num_attention_heads": 20, "projection_dim": 1280, "hidden_act": "gelu"},
}  # fmt: skip


def build_full_size(tiny: Path, out: Path, device: str) -> tuple[Path, Path]:
    """SDXL-architecture random weights in fp16 (tokenizers and scheduler from the tiny model)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    for part in ("tokenizer", "tokenizer_2", "scheduler", "model_index.json"):
        copy = shutil.copytree if (tiny / part).is_dir() else shutil.copy
        copy(tiny / part, out / part)
    with torch.device(device):
        unet = UNet2DConditionModel(**SDXL_UNET).half()
        unet.save_pretrained(out / "unet")
        ControlNetModel.from_unet(unet).half().save_pretrained(out.parent / "controlnet")
        del unet
        AutoencoderKL(**SDXL_VAE).half().save_pretrained(out / "vae")
        for name, model_cls in (
            ("text_encoder", CLIPTextModel),
            ("text_encoder_2", CLIPTextModelWithProjection),
        ):
            config = CLIPTextConfig.from_pretrained(tiny / name)
            config.update({**TEXT_ENCODERS[name], "vocab_size": 49408})
            model_cls(config).half().save_pretrained(out / name)
    return out, out.parent / "controlnet"


# --------------------------------------------------------------------------- variants


def diffusers_runner(base: Path, controlnet: Path, device: str, dtype: torch.dtype, steps: int) -> Runner:
    """diffusers' pipeline as its docs use it: one dtype, prompts as strings, default everything."""
    cn = ControlNetModel.from_pretrained(controlnet, dtype=dtype)
    pipe = StableDiffusionXLControlNetPipeline.from_pretrained(base, controlnet=cn, dtype=dtype).to(device)
    pipe.set_progress_bar_config(disable=True)

    def run(prompts: list[str], conditions: list[Image.Image], seeds: list[int], side: int) -> None:
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        pipe(prompt=prompts, image=conditions, height=side, width=side, num_inference_steps=steps,
             guidance_scale=5.0, generator=generators)  # fmt: skip

    return run


def ours_runner(
    base: Path, controlnet: Path, device: str, dtypes: ComponentDtypes, speed: SpeedSettings, steps: int
) -> Runner:
    pipe = load_pipeline(str(base), controlnet, device, dtypes, speed=speed)

    def run(prompts: list[str], conditions: list[Image.Image], seeds: list[int], side: int) -> None:
        settings = GenerationSettings(num_inference_steps=steps, guidance_scale=5.0, resolution=side)
        generate(pipe, prompts, conditions, seeds, settings, batch_size=len(prompts))

    return run


def conditions(side: int, n: int) -> list[Image.Image]:
    """Edge-map-like conditions: white rectangle outlines on black."""
    images = []
    for i in range(n):
        pixels = np.zeros((side, side, 3), dtype=np.uint8)
        a, b = side // 8 + i, side - side // 8 - i
        pixels[a, a:b] = pixels[b, a:b] = pixels[a:b, a] = pixels[a:b, b] = 255
        images.append(Image.fromarray(pixels))
    return images


# --------------------------------------------------------------------------- CPU part


def cpu_variants(args: argparse.Namespace, base: Path, controlnet: Path) -> dict[str, Callable[[], Runner]]:
    fp32 = ComponentDtypes.uniform(torch.float32)
    variants: dict[str, Callable[[], Runner]] = {
        "diffusers": lambda: diffusers_runner(base, controlnet, "cpu", torch.float32, args.steps),
        "ours": lambda: ours_runner(base, controlnet, "cpu", fp32, SpeedSettings(), args.steps),
        "ours+channels_last": lambda: ours_runner(
            base, controlnet, "cpu", fp32, SpeedSettings(channels_last=True), args.steps
        ),
    }
    if not args.skip_compile:
        variants["ours+compile"] = lambda: ours_runner(
            base, controlnet, "cpu", fp32, SpeedSettings(compile=True), args.steps
        )
        variants["ours fastest"] = lambda: ours_runner(
            base, controlnet, "cpu", fp32, SpeedSettings(compile=True, channels_last=True), args.steps
        )
    return variants


def batch_of(index: int, batch: int, side: int) -> tuple[list[str], list[Image.Image], list[int]]:
    """Batch ``index``: ``batch`` seeds of one prompt (prompts cycle), each seed its own condition."""
    prompt = PROMPTS[index % len(PROMPTS)]
    seeds = [index * batch + i for i in range(batch)]
    return [prompt] * batch, conditions(side, batch), seeds


def measure_cpu(args: argparse.Namespace, base: Path, controlnet: Path) -> list[Result]:
    runners: dict[str, Runner] = {}
    results: dict[str, Result] = {}
    for name, make in cpu_variants(args, base, controlnet).items():
        wait_for_quiet()
        start = time.perf_counter()
        runners[name] = make()
        load = time.perf_counter() - start
        first, _ = timed_block(
            lambda run=runners[name]: run(*batch_of(0, args.batch_size, args.size), args.size)
        )
        results[name] = Result(name, load, first)
        logger.info("%s: load %.1f s, first batch %.1f s", name, load, first)
    index = 1
    for round_ in range(args.rounds):
        for name, run in runners.items():
            wait_for_quiet()
            for _ in range(args.batches):
                batch = batch_of(index, args.batch_size, args.size)
                seconds, others = timed_block(lambda run=run, batch=batch: run(*batch, args.size))
                results[name].batches_s.append(seconds)
                results[name].background.append(others)
                index += 1
        logger.info("round %d/%d done", round_ + 1, args.rounds)
    return list(results.values())


def quiet_batches(result: Result) -> list[float]:
    """Batch times measured while other processes left the CPUs alone (all of them if none was quiet)."""
    quiet = [s for s, b in zip(result.batches_s, result.background, strict=True) if b <= QUIET]
    return quiet or result.batches_s


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def render_cpu(results: list[Result], args: argparse.Namespace) -> str:
    default = statistics.median(quiet_batches(results[0]))
    lines = [
        f"CPU, tiny SDXL, {args.size}², {args.steps} steps, CFG 5, batch {args.batch_size}, "
        f"{torch.get_num_threads()} threads, {args.rounds}x{args.batches} batches per variant",
        "",
        "| variant | load s | first batch s | P50 s/batch | P95 s/batch | images/s | vs diffusers | quiet |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        times = quiet_batches(r)
        p50, p95 = statistics.median(times), percentile(times, 95)
        lines.append(
            f"| {r.variant} | {r.load_s:.1f} | {r.first_batch_s:.1f} | {p50:.3f} | {p95:.3f} | "
            f"{args.batch_size / p50:.2f} | {default / p50:.2f}x | {len(times)}/{len(r.batches_s)} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- GPU part


def gpu_variants(base: Path, controlnet: Path, device: str, steps: int) -> dict[str, Callable[[], Runner]]:
    half = torch.float16 if device.startswith("cuda") else torch.float32
    ours = ComponentDtypes.uniform(half)
    fastest = ComponentDtypes(half, torch.bfloat16 if device.startswith("cuda") else torch.float32, half)
    return {
        "diffusers": lambda: diffusers_runner(base, controlnet, device, half, steps),
        "ours": lambda: ours_runner(base, controlnet, device, ours, SpeedSettings(), steps),
        "ours fastest": lambda: ours_runner(
            base, controlnet, device, fastest, SpeedSettings(channels_last=True, compile=True), steps
        ),
    }


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure_gpu_variant(
    name: str, make: Callable[[], Runner], sizes: list[int], repeats: int, device: str
) -> list[Result]:
    """Load once, then for each size: 2 warm-up calls (compile happens there), ``repeats`` timed calls."""
    start = time.perf_counter()
    run = make()
    sync(device)
    load = time.perf_counter() - start
    results = []
    for side in sizes:
        prompts, conds, _ = batch_of(0, 1, side)
        warm = time.perf_counter()
        for seed in (0, 1):
            run(prompts, conds, [seed], side)
        sync(device)
        result = Result(f"{name} {side}²", load, (time.perf_counter() - warm) / 2)
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        for seed in range(repeats):
            began = time.perf_counter()
            run(prompts, conds, [seed], side)
            sync(device)
            result.batches_s.append(time.perf_counter() - began)
        if device.startswith("cuda"):
            result.peak_mib = torch.cuda.max_memory_allocated() / 2**20
        results.append(result)
        logger.info("%s: P50 %.3f s", result.variant, statistics.median(result.batches_s))
    del run
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return results


def measure_gpu(args: argparse.Namespace, base: Path, controlnet: Path, device: str) -> list[Result]:
    results = []
    for name, make in gpu_variants(base, controlnet, device, args.gpu_steps).items():
        results += measure_gpu_variant(name, make, args.gpu_sizes, args.gpu_repeats, device)
    return results


def render_gpu(results: list[Result], device: str, steps: int) -> str:
    if device.startswith("cuda"):
        title = f"{torch.cuda.get_device_name()}: SDXL-architecture random weights"
    else:
        title = "CPU smoke run of the GPU part, tiny model"
    lines = [
        f"{title}, 1 image per call, {steps} steps, CFG 5",
        "",
        "| variant | load s | warm-up s/call | P50 s | P95 s | images/s | peak MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        p50 = statistics.median(r.batches_s)
        peak = f"{r.peak_mib:.0f}" if r.peak_mib is not None else "–"
        lines.append(
            f"| {r.variant} | {r.load_s:.1f} | {r.first_batch_s:.2f} | {p50:.3f} | "
            f"{percentile(r.batches_s, 95):.3f} | {1 / p50:.2f} | {peak} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (CPU part)")
    parser.add_argument("--batches", type=int, default=3, help="timed batches per variant per round")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--size", type=int, default=128, help="CPU part image side")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--skip-compile", action="store_true", help="leave out ours+compile (CPU part)")
    parser.add_argument("--skip-cpu", action="store_true", help="only the GPU part")
    parser.add_argument("--gpu-sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--gpu-repeats", type=int, default=10)
    parser.add_argument("--gpu-steps", type=int, default=20)
    parser.add_argument("--gpu-smoke", action="store_true", help="run the GPU part's code on CPU, tiny model")
    parser.add_argument("--work-dir", type=Path, help="keep models here (default: a temp dir, removed)")
    parser.add_argument("--json", type=Path, help="also write the raw timings here")
    return parser.parse_args(argv)


def versions() -> str:
    import diffusers

    return f"torch {torch.__version__}, diffusers {diffusers.__version__}, {os.cpu_count()} CPUs"


def run(args: argparse.Namespace, work: Path) -> int:
    torch.set_num_threads(args.threads)
    tiny, tiny_cn = build_tiny(work)
    raw: dict[str, list[dict[str, object]]] = {}
    if not args.skip_cpu:
        cpu = measure_cpu(args, tiny, tiny_cn)
        raw["cpu"] = [asdict(r) for r in cpu]
        print(render_cpu(cpu, args) + "\n")
    if torch.cuda.is_available() or args.gpu_smoke:
        device = "cuda" if torch.cuda.is_available() and not args.gpu_smoke else "cpu"
        if device == "cuda":
            base, controlnet = build_full_size(tiny, work / "sdxl-full" / "base", device)
        else:
            base, controlnet = tiny, tiny_cn
            args.gpu_sizes, args.gpu_repeats, args.gpu_steps = [64], 2, 2
        gpu = measure_gpu(args, base, controlnet, device)
        raw["gpu"] = [asdict(r) for r in gpu]
        print(render_gpu(gpu, device, args.gpu_steps) + "\n")
    else:
        print("GPU part skipped: no CUDA device.\n")
    print(versions())
    if args.json:
        args.json.write_text(json.dumps(raw, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    work = (args.work_dir or Path(tempfile.mkdtemp(prefix="bench-inference-"))).absolute()
    try:
        return run(args, work)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
