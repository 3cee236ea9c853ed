"""Text-loss step benchmark: a plain step vs a `one_step` and an `unroll` text-loss step.

All three run in one invocation, one after the other, in-process, on the same tiny random SDXL and the
same generated labelled dataset (keys with an English and a Chinese label, `recognizer.synthetic`),
with the same seeds: the same batches, noise and timesteps. The text loss runs every step with the
default gating (`max_timestep=400`, so about 40 % of the samples are decoded and read). Each row is the
median wall time of `--steps` optimizer steps after `--warmup` steps.

    python bench/bench_text_loss.py [--steps 12] [--resolution 256] [--unroll-steps 20] [--markdown]

At SDXL size on a GPU (random full-size weights built first, bf16, the recipe's gradient checkpointing):

    python bench/bench_text_loss.py --full-size --resolution 1024 --batch 2 --unroll-steps 20 --markdown
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate.state import AcceleratorState

from common.atomic import atomic_save_image
from data.records import Record, write_records
from recognizer.synthetic import KEY_LABELS, render_keyboard
from train.config import load_config
from train.tiny_sdxl import build_tiny_sdxl
from train.trainer import ControlNetTrainer

logger = logging.getLogger("bench_text_loss")

RECORDS, KEYS_PER_IMAGE = 16, 4


@dataclass
class Row:
    name: str
    overrides: list[str]
    step_s: float = 0.0
    lines_per_step: float = 0.0


def build_dataset(root: Path, resolution: int) -> Path:
    """Records with `KEYS_PER_IMAGE` keys, two labels each, boxes and gt_text from the renderer."""
    records = []
    for i in range(RECORDS):
        labels = [KEY_LABELS[(i + k) % len(KEY_LABELS)] for k in range(KEYS_PER_IMAGE)]
        key = render_keyboard(labels, size=(resolution, resolution), columns=2, font_size=resolution // 12)
        image, condition = f"images/{i:03d}.png", f"conditioning_images/{i:03d}.png"
        atomic_save_image(key.image, root / image)
        atomic_save_image(key.image.convert("L").convert("RGB"), root / condition)
        records.append(Record("a keyboard skin", image, condition, key.boxes.round(1).tolist(), key.texts))
    write_records(root / "train.jsonl", records)
    return root / "train.jsonl"


def time_steps(overrides: list[str], warmup: int, steps: int) -> tuple[float, float]:
    """Median seconds per optimizer step and mean text lines read per step."""
    trainer = ControlNetTrainer(load_config("configs/fill_tiny.yaml", overrides))
    trainer.setup()
    durations, lines = [], []
    batches = iter(trainer.loader)
    for i in range(warmup + steps):
        batch = next(batches, None)
        if batch is None:
            batches = iter(trainer.loader)
            batch = next(batches)
        start = time.perf_counter()
        losses = trainer._micro_step(batch)
        if i >= warmup:
            durations.append(time.perf_counter() - start)
            lines.append(float(losses.get("text_lines", torch.zeros(())).item()))
    AcceleratorState._reset_state(reset_partial_state=True)
    return statistics.median(durations), statistics.mean(lines)


def render(rows: list[Row], title: str, markdown: bool) -> None:
    plain = rows[0].step_s
    lines = [title, "", "| step | s/step | × plain | text lines/step |", "|---|---:|---:|---:|"]
    for row in rows:
        lines.append(
            f"| {row.name} | {row.step_s:.3f} | {row.step_s / plain:.2f} | {row.lines_per_step:.1f} |"
        )
    text = "\n".join(lines)
    if not markdown:
        text = text.replace("|---|---:|---:|---:|\n", "").replace("| ", "").replace(" |", "  ")
    logger.info("\n%s", text)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--unroll-steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--model", type=Path, help="an SDXL diffusers folder instead of the tiny model")
    parser.add_argument(
        "--full-size",
        action="store_true",
        help="build SDXL-architecture random weights (needs CUDA) and train in bf16 with checkpointing",
    )
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    if args.full_size and not torch.cuda.is_available():
        parser.error("--full-size needs a CUDA device")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory(prefix="bench-text-loss-") as work:
        model = args.model or build_tiny_sdxl(Path(work) / "sdxl", seed=0)
        if args.full_size:
            from bench_inference import build_full_size  # this script's folder is on sys.path

            model, _ = build_full_size(model, Path(work) / "full" / "sdxl", "cuda")
        jsonl = build_dataset(Path(work) / "data", args.resolution)
        common = [
            f"model.base={model}",
            f"data.train_jsonl={jsonl}",
            f"data.resolution={args.resolution}",
            f"train.batch_size={args.batch}",
            f"train.num_threads={args.threads}",
            f"cache.dir={Path(work) / 'cache'}",
            "train.max_steps=100000",
            "checkpoint.every_n_steps=100000",
            "log.progress_bar=false",
            "log.tensorboard=false",
        ]
        if args.full_size:
            common += ["train.mixed_precision=bf16", "train.gradient_checkpointing=both"]
        text = ["text_loss.enabled=true", "text_loss.every_n_steps=1"]
        rows = [
            Row("plain (diffusion loss only)", []),
            Row("one_step text loss", [*text, "text_loss.estimate=one_step"]),
            Row(
                "one_step, vae_decode=crops",
                [*text, "text_loss.estimate=one_step", "text_loss.vae_decode=crops"],
            ),
            Row(
                f"unroll K={args.unroll_steps} text loss",
                [*text, "text_loss.estimate=unroll", f"text_loss.unroll_steps={args.unroll_steps}"],
            ),
        ]
        for row in rows:
            run_dir = Path(work) / "runs" / row.name.split()[0]
            row.step_s, row.lines_per_step = time_steps(
                [*common, f"train.output_dir={run_dir}", *row.overrides], args.warmup, args.steps
            )
            logger.info("%s: %.3f s/step", row.name, row.step_s)
    title = (
        f"{args.steps} steps after {args.warmup} warm-up, {args.resolution}px, batch {args.batch}, "
        f"{KEYS_PER_IMAGE * 2} labels/image, {args.threads} threads, torch {torch.__version__}, "
        f"{'SDXL-size random weights on ' + torch.cuda.get_device_name() if args.full_size else 'tiny SDXL'}"
    )
    render(rows, title, args.markdown)


if __name__ == "__main__":
    main()
