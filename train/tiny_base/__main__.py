"""`python -m train.tiny_base OUT_DIR`: train the tiny SDXL base from its recipe (≤ 20 min on 2 cores)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

import torch

from common.process_exit import exit_without_teardown
from train.tiny_base.build import QUICK_RECIPE, RECIPES, build_trained_base

logger = logging.getLogger("train.tiny_base")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m train.tiny_base",
        description="Train the tiny SDXL-architecture base (VAE, then UNet) on fill circles and keyboard "
        "skins. Deterministic for a seed, torch version and thread count.",
    )
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="folder for the pipeline (diffusers)")
    parser.add_argument(
        "--recipe",
        choices=sorted(RECIPES),
        default="keyboard",
        help="keyboard: fills and skins, 8x VAE (assets/tiny-sdxl-trained); circles: fills only, 4x VAE "
        "(assets/tiny-sdxl-circles, the demo's base). Default keyboard",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, data and training (default 0)")
    parser.add_argument("--work-dir", type=Path, help="corpus and cache folder (default OUT_DIR.work)")
    parser.add_argument("--overwrite", action="store_true", help="retrain even if OUT_DIR is complete")
    parser.add_argument("--quick", action="store_true", help="a few steps per stage (a smoke test)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    # Late in training, AdamW's second moments and the gradients of a converged UNet fall into the
    # denormal range, where x86 float math is ~10-100x slower: the UNet stage slowed from 0.6 s to 5 s a
    # step after ~1,300 steps. Flushing them to zero costs nothing measurable in what is learned.
    torch.set_flush_denormal(True)
    recipe = RECIPES[args.recipe]
    if args.quick:
        recipe = dataclasses.replace(QUICK_RECIPE, vae_size=recipe.vae_size)
    recipe = dataclasses.replace(recipe, seed=args.seed)
    out = build_trained_base(args.out_dir, recipe, args.work_dir, overwrite=args.overwrite)
    logger.info("Trained tiny SDXL base at %s (see pretraining.json and samples.png there)", out)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    exit_without_teardown(main())
