"""Does the OCR text loss make labels more legible? The same glyph ControlNet run with and without it.

The task: one keyboard key per 256² image, an English label over a Chinese one (72 px, the size at which
the trained tiny base's VAE still returns readable labels), the condition the labels drawn in white on
black (the glyph builder's rendering). Two held-out sets, scored apart: keys pairing trained English and
Chinese labels in new ways ("known labels"), and keys whose labels, and every character of them, never
occur in training ("unseen labels": F-keys and capitals absent from the trained words, Chinese
characters absent from the trained ones), which is what a glyph ControlNet must generalise to. For each
seed, both arms train `configs/text_loss_ab.yaml` on the same data, seed and steps (so the same batches,
noise and timesteps), `text_loss.enabled` false and true; then `python -m inference` generates every
held-out record through plain diffusers (the base's scheduler, guidance 1) and reads each label box with
each reader: rapidocr (PP-OCRv6, the family the text loss optimises for) and, where it is installed,
Tesseract 5, a reader the loss never saw.

The table gives, per held-out set and reader, OCR sentence accuracy and 1 - NED per arm and seed, mean ±
std, next to two references on the same held-out records: the target images themselves, and their VAE
round trip (the most any ControlNet on this base can reach).

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
from recognizer.ocr import READERS, OcrConfig
from recognizer.synthetic import KEY_LABELS, render_keyboard
from recognizer.tesseract_reader import tesseract_problem
from train.tiny_base.vae_stage import reconstruct, reconstruction_scores

logger = logging.getLogger("bench_text_loss_ab")

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "text_loss_ab.yaml"
RESOLUTION, FONT_SIZE = 256, 72
PROMPT = "a keyboard key"
HELD_OUT = 8
TOO_WIDE = {"Delete"}  # overflows a 256-px key at 72 px
UNSEEN_LABELS: tuple[tuple[str, str], ...] = (
    ("NUM", "数字"),
    ("FN", "功能"),
    ("PGUP", "前进"),
    ("PGDN", "锁定"),
    ("F5", "刷新"),
    ("F9", "搜索"),
    ("F10", "音量"),
    ("F12", "打印"),
)
"""Held-out keys whose labels and characters are in no training label (paired arbitrarily)."""
KNOWN, UNSEEN = "known labels, new pairings", "unseen labels"
SETS = (KNOWN, UNSEEN)


@dataclass(frozen=True)
class ArmResult:
    text: dict[str, TextScores]
    """Each reader's scores, by reader name."""
    psnr: float
    """Mean PSNR (dB) of the generated images against their targets: what legibility costs in fidelity
    (the table's PSNR column)."""


@dataclass
class Arm:
    name: str
    folder: str
    overrides: list[str]
    results: dict[tuple[str, int], ArmResult] = field(default_factory=dict)
    """By (held-out set, training seed)."""


def label_pairs(seed: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Every English label with every Chinese one, shuffled; the first `HELD_OUT` pairs are held out."""
    english = [en for en, _ in KEY_LABELS if en not in TOO_WIDE]
    chinese = [zh for _, zh in KEY_LABELS]
    pairs = list(itertools.product(english, chinese))
    random.Random(seed).shuffle(pairs)
    return pairs[HELD_OUT:], pairs[:HELD_OUT]


def default_readers() -> list[str]:
    """rapidocr, and Tesseract where it is installed."""
    if (problem := tesseract_problem()) is not None:
        logger.warning("scoring with rapidocr only: %s", problem)
        return ["rapidocr"]
    return ["rapidocr", "tesseract"]


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
def reference_scores(base: Path, jsonl: Path, readers: list[str]) -> dict[str, dict[str, TextScores]]:
    """Each reader's OCR of the held-out targets, and of their round trip through the base's VAE."""
    vae = AutoencoderKL.from_pretrained(base, subfolder="vae").eval()
    records = read_records(jsonl)
    targets = _uint8_nchw([resolve_path(jsonl.parent, r.image) for r in records])
    truth = [text for record in records for text in record.gt_text]
    images = {"target images": targets, "VAE round trip of the targets": reconstruct(vae, targets)}
    scores: dict[str, dict[str, TextScores]] = {name: {} for name in images}
    for reader in readers:
        ocr = load_ocr(OcrConfig(backend=READERS[reader], use_angle_cls=False))
        for name, batch in images.items():
            read = [
                text
                for image, record in zip(batch, records, strict=True)
                for text in read_boxes(ocr, image.transpose(1, 2, 0), record.box, record.gt_text)
            ]
            scores[name][reader] = text_scores(read, truth)
    return scores


def _run(command: list[str], log: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    with log.open("a") as out:
        subprocess.run(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, check=True)


def train_and_score(
    arm: Arm, seed: int, args: argparse.Namespace, train: Path, held_out: dict[str, Path]
) -> dict[str, ArmResult]:
    """Trains one arm for one seed (resuming a run already there), then reads each held-out set's images."""
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
    return {
        name: _score(run, args.out / "reports" / _folder(name) / f"{arm.folder}-seed{seed}", jsonl, args)
        for name, jsonl in held_out.items()
    }


def _folder(held_out_set: str) -> str:
    return "unseen" if held_out_set == UNSEEN else "known"


def _score(run: Path, report: Path, held_out: Path, args: argparse.Namespace) -> ArmResult:
    """Generates one held-out set with the run's ControlNet and reads it with every reader."""
    infer = [
        sys.executable, "-m", "inference", "--checkpoint", str(run / "controlnet"), "--data", str(held_out),
        "--out", str(report), "--steps", "20", "--guidance", "1", "--seeds", *map(str, args.sample_seeds),
    ]  # fmt: skip
    _run([*infer, *(arg for reader in args.reader for arg in ("--reader", reader))], run / "bench.log")
    metrics = json.loads((report / "metrics.json").read_text())
    row = next(r for r in metrics["summary"] if not r["reference"])
    text = {
        reader: TextScores(
            row[f"{reader}/lines"],
            row[f"{reader}/sentence_accuracy"],
            row[f"{reader}/normalized_edit_distance"],
        )
        for reader in args.reader
    }
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


def render(
    arms: list[Arm], references: dict[str, dict[str, dict[str, TextScores]]], args: argparse.Namespace
) -> str:
    """The table: per held-out set and reader, each arm's scores per seed and the references'."""
    seeds = sorted(args.seeds)
    head = " | ".join(f"seed {s}" for s in seeds)
    lines = [
        f"{args.steps} steps, batch 4, {RESOLUTION}², {HELD_OUT} + {len(UNSEEN_LABELS)} held-out keys × "
        f"{len(args.sample_seeds)} sampling seed(s), 2 labels each; torch {torch.__version__}",
        "",
        f"| held-out keys | reader | arm | sentence accuracy: {head} | mean ± std | 1 − NED: {head} | "
        "mean ± std | PSNR (dB) |",
        "|---|---|---|" + "---:|" * (2 * len(seeds) + 3),
    ]
    for held_out in SETS:
        for reader in args.reader:
            for arm in arms:
                results = [arm.results[held_out, s] for s in seeds]
                acc = [r.text[reader].sentence_accuracy for r in results]
                ned = [r.text[reader].normalized_edit_distance for r in results]
                psnr = _mean_std([r.psnr for r in results], digits=2)
                cells = [
                    *(f"{v:.3f}" for v in acc),
                    _mean_std(acc),
                    *(f"{v:.3f}" for v in ned),
                    _mean_std(ned),
                ]
                lines.append(f"| {held_out} | {reader} | {arm.name} | " + " | ".join(cells) + f" | {psnr} |")
            for name, scores in references[held_out].items():
                score, blank = scores[reader], [""] * len(seeds)
                cells = [
                    *blank,
                    f"{score.sentence_accuracy:.3f}",
                    *blank,
                    f"{score.normalized_edit_distance:.3f}",
                ]
                lines.append(f"| {held_out} | {reader} | {name} (reference) | " + " | ".join(cells) + " | |")
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
    parser.add_argument(
        "--reader", action="append", choices=list(READERS),
        help="OCR readers, repeatable (default: rapidocr, plus tesseract where installed)",
    )  # fmt: skip
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.out = args.out.resolve()
    args.reader = list(dict.fromkeys(args.reader or default_readers()))
    train_pairs, held_out_pairs = label_pairs(seed=0)
    train = build_records(args.out / "data" / "train", train_pairs)
    held_out = {
        KNOWN: build_records(args.out / "data" / "held_out", held_out_pairs),
        UNSEEN: build_records(args.out / "data" / "unseen", list(UNSEEN_LABELS)),
    }
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
        for (arm, seed), results in zip(jobs, done, strict=True):
            for held_out_set, result in results.items():
                arm.results[held_out_set, seed] = result
                logger.info("%s, seed %d, %s: %s", arm.name, seed, held_out_set, result)
    references = {name: reference_scores(args.base, jsonl, args.reader) for name, jsonl in held_out.items()}
    table = render(arms, references, args)
    logger.info("\n%s", table)


if __name__ == "__main__":
    main()
