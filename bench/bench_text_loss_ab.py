"""Does the OCR text loss make labels more legible? The same glyph ControlNet run with and without it.

The task: one keyboard key per 256² image, an English label over a Chinese one (72 px, the size at which
the trained tiny base's VAE still returns readable labels), the condition the labels drawn in white on
black (the glyph builder's rendering). Train and held-out records pair the English and Chinese labels
differently, so every held-out condition is one the ControlNet never saw. For each seed, both arms train
`configs/text_loss_ab.yaml` on the same data, seed and steps (so the same batches, noise and timesteps),
`text_loss.enabled` false and true; then `python -m inference` generates every held-out record through
plain diffusers (the base's scheduler, guidance 1) and reads each label box with the project's OCR.

The table gives OCR sentence accuracy and 1 - NED per arm and seed, mean ± std, next to two references
on the same held-out records: the target images themselves, and their VAE round trip (the most any
ControlNet on this base can reach).

    python bench/bench_text_loss_ab.py --out build/text_loss_ab --seeds 0 1 2 --steps 600 --markdown

Runs in parallel with `--jobs` (each one thread); every run keeps its folder, so a rerun resumes.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import logging
import os
import random
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL
from PIL import Image

from common.atomic import atomic_save_image
from data.glyph_render import render_glyphs
from data.records import Record, read_records, resolve_path, write_records
from inference.metrics import TextScores, text_scores
from recognizer.backends import load_ocr
from recognizer.box_reading import read_boxes
from recognizer.synthetic import KEY_LABELS, render_keyboard
from train.tiny_base.vae_stage import reconstruct, reconstruction_scores

logger = logging.getLogger("bench_text_loss_ab")

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "text_loss_ab.yaml"
RESOLUTION, FONT_SIZE = 256, 72
PROMPT = "a keyboard key"
HELD_OUT = 8
TOO_WIDE = {"Delete"}  # overflows a 256-px key at 72 px


@dataclass(frozen=True)
class ArmResult:
    text: TextScores
    psnr: float
    """Mean PSNR (dB) of the generated images against their targets: what legibility costs in fidelity
    (the table's PSNR column)."""


@dataclass
class Arm:
    name: str
    folder: str
    overrides: list[str]
    results: dict[int, ArmResult] = field(default_factory=dict)


def label_pairs(seed: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Every English label with every Chinese one, shuffled; the first `HELD_OUT` pairs are held out."""
    english = [en for en, _ in KEY_LABELS if en not in TOO_WIDE]
    chinese = [zh for _, zh in KEY_LABELS]
    pairs = list(itertools.product(english, chinese))
    random.Random(seed).shuffle(pairs)
    return pairs[HELD_OUT:], pairs[:HELD_OUT]


def build_records(root: Path, pairs: list[tuple[str, str]]) -> Path:
    """One key per image with its two labels' boxes and texts; the condition is the glyph rendering."""
    records = []
    for i, pair in enumerate(pairs):
        key = render_keyboard([pair], size=(RESOLUTION, RESOLUTION), columns=1, font_size=FONT_SIZE)
        black = Image.new("RGB", key.image.size)
        condition = render_glyphs(black, list(zip(key.boxes, key.texts, strict=True)))
        image, conditioning = f"images/{i:04d}.png", f"conditioning_images/{i:04d}.png"
        atomic_save_image(key.image, root / image)
        atomic_save_image(condition, root / conditioning)
        records.append(Record(PROMPT, image, conditioning, key.boxes.round(1).tolist(), key.texts))
    write_records(root / "train.jsonl", records)
    return root / "train.jsonl"


def _uint8_nchw(paths: list[Path]) -> np.ndarray:
    """Images of one size as uint8 (N, 3, H, W), the layout the tiny base's VAE helpers take."""
    arrays = []
    for path in paths:
        with Image.open(path) as image:
            arrays.append(np.asarray(image.convert("RGB")).transpose(2, 0, 1))
    return np.stack(arrays)


@torch.no_grad()
def reference_scores(base: Path, jsonl: Path) -> dict[str, TextScores]:
    """OCR of the held-out targets, and of their round trip through the base's VAE."""
    vae = AutoencoderKL.from_pretrained(base, subfolder="vae").eval()
    ocr = load_ocr()
    records = read_records(jsonl)
    targets = _uint8_nchw([resolve_path(jsonl.parent, r.image) for r in records])
    truth = [text for record in records for text in record.gt_text]
    scores = {}
    for name, images in (
        ("target images", targets),
        ("VAE round trip of the targets", reconstruct(vae, targets)),
    ):
        read = [
            text
            for image, record in zip(images, records, strict=True)
            for text in read_boxes(ocr, image.transpose(1, 2, 0), record.box)
        ]
        scores[name] = text_scores(read, truth)
    return scores


def _run(command: list[str], log: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    with log.open("a") as out:
        subprocess.run(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, check=True)


def train_and_score(arm: Arm, seed: int, args: argparse.Namespace, train: Path, held_out: Path) -> ArmResult:
    """Trains one arm for one seed (resuming a run already there), then reads its held-out images."""
    run = args.out / "runs" / f"{arm.folder}-seed{seed}"
    run.mkdir(parents=True, exist_ok=True)
    launch = [sys.executable, "-m", "train.launch", "--config_file", "launch/accelerate/cpu_1proc.yaml"]
    overrides = [
        f"model.base={args.base}",
        f"data.train_jsonl={train}",
        f"train.output_dir={run}",
        f"train.seed={seed}",
        f"train.max_steps={args.steps}",
        *arm.overrides,
    ]
    _run([*launch, "train/train_controlnet_sdxl.py", "--config", str(CONFIG), *overrides], run / "bench.log")
    report = args.out / "reports" / f"{arm.folder}-seed{seed}"
    infer = [
        sys.executable, "-m", "inference", "--checkpoint", str(run / "controlnet"), "--data", str(held_out),
        "--out", str(report), "--steps", "20", "--guidance", "1", "--seeds", *map(str, args.sample_seeds),
    ]  # fmt: skip
    _run(infer, run / "bench.log")
    metrics = json.loads((report / "metrics.json").read_text())
    row = next(r for r in metrics["summary"] if not r["reference"])
    text = TextScores(row["text_lines"], row["sentence_accuracy"], row["normalized_edit_distance"])
    return ArmResult(text, _psnr(metrics["images"], report, held_out))


def _psnr(images: list[dict], report: Path, held_out: Path) -> float:
    """Mean PSNR of the generated images (metrics.json rows) against their records' targets."""
    records = read_records(held_out)
    rows = [row for row in images if row["checkpoint"] != "target"]
    generated = _uint8_nchw([report / row["path"] for row in rows])
    targets = _uint8_nchw([resolve_path(held_out.parent, records[row["record"]].image) for row in rows])
    return reconstruction_scores(targets, generated)["psnr"]


def _mean_std(values: list[float], digits: int = 3) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {spread:.{digits}f}"


def render(arms: list[Arm], references: dict[str, TextScores], args: argparse.Namespace) -> str:
    seeds = sorted(args.seeds)
    head = " | ".join(f"seed {s}" for s in seeds)
    lines = [
        f"{args.steps} steps, batch 4, {RESOLUTION}², {HELD_OUT} held-out keys × {len(args.sample_seeds)} "
        f"sampling seed(s), 2 labels each; torch {torch.__version__}",
        "",
        f"| arm | sentence accuracy: {head} | mean ± std | 1 − NED: {head} | mean ± std | PSNR (dB) |",
        "|---|" + "---:|" * (2 * len(seeds) + 3),
    ]
    for arm in arms:
        acc = [arm.results[s].text.sentence_accuracy for s in seeds]
        ned = [arm.results[s].text.normalized_edit_distance for s in seeds]
        psnr = _mean_std([arm.results[s].psnr for s in seeds], digits=2)
        cells = [f"{v:.3f}" for v in acc] + [_mean_std(acc)] + [f"{v:.3f}" for v in ned] + [_mean_std(ned)]
        lines.append(f"| {arm.name} | " + " | ".join(cells) + f" | {psnr} |")
    for name, score in references.items():
        blank = [""] * len(seeds)
        cells = [
            *blank,
            f"{score.sentence_accuracy:.3f}",
            *blank,
            f"{score.normalized_edit_distance:.3f}",
            "",
        ]
        lines.append(f"| {name} (reference) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="work folder (data, runs, reports)")
    parser.add_argument("--base", type=Path, default=ROOT / "assets" / "tiny-sdxl-trained")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    parser.add_argument("--sample-seeds", type=int, nargs="+", default=[0], help="per held-out record")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (one thread each)")
    parser.add_argument(
        "--text-loss", nargs="*", default=[], metavar="KEY=VALUE", help="more overrides for the text-loss arm"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.out = args.out.resolve()
    train_pairs, held_out_pairs = label_pairs(seed=0)
    train = build_records(args.out / "data" / "train", train_pairs)
    held_out = build_records(args.out / "data" / "held_out", held_out_pairs)
    variant = hashlib.sha256(" ".join(args.text_loss).encode()).hexdigest()[:8] if args.text_loss else ""
    arms = [
        Arm("diffusion loss only", "plain", []),
        Arm(
            " ".join(["+ text loss", *args.text_loss]),
            f"text_loss-{variant}" if variant else "text_loss",
            ["text_loss.enabled=true", *args.text_loss],
        ),
    ]
    jobs = [(arm, seed) for seed in args.seeds for arm in arms]
    with ThreadPoolExecutor(args.jobs) as pool:
        done = pool.map(lambda job: train_and_score(*job, args, train, held_out), jobs)
        for (arm, seed), result in zip(jobs, done, strict=True):
            arm.results[seed] = result
            logger.info("%s, seed %d: %s", arm.name, seed, result)
    table = render(arms, reference_scores(args.base, held_out), args)
    logger.info("\n%s", table)


if __name__ == "__main__":
    main()
