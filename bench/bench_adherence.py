"""Does a trained ControlNet follow its condition? Edge F1 and circle IoU on held-out records, through plain
diffusers, next to the two ControlNets that cannot follow one: `no_control` (step 0: zero output
convolutions) and `random_control` (those layers drawn at the trained net's own scale). The last column
is the denoising advantage (inference.denoising_advantage): how much lower the denoising error is with
each record's own condition than with another's, the first sign that a ControlNet reads its condition.

    python bench/bench_adherence.py --base assets/tiny-sdxl-trained \\
        --data datasets/fill_demo_val/train.jsonl --controlnet runs/fill_demo/controlnet --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
from diffusers import ControlNetModel

from data.records import read_records
from inference.adherence import Adherence, measure_adherence, no_control, random_control
from inference.denoising_advantage import TIMESTEPS, DenoisingAdvantage, measure_denoising_advantage

logger = logging.getLogger(__name__)


def _row(name: str, result: Adherence, advantage: list[DenoisingAdvantage], baseline: Adherence) -> str:
    ratio = result.edge_f1_tolerant / baseline.edge_f1_tolerant if baseline.edge_f1_tolerant else float("inf")
    iou = "" if result.circle_iou is None else f"{result.circle_iou:.3f}"
    reads = " / ".join(f"{a.relative:+.1%}" for a in advantage) or "n/a (one record)"
    return f"| {name} | {result.edge_f1_tolerant:.3f} | {ratio:.1f}× | {iou} | {reads} |"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", required=True, help="diffusers SDXL folder the ControlNet was trained on")
    parser.add_argument("--data", type=Path, required=True, help="held-out fill50k-format train.jsonl")
    parser.add_argument("--controlnet", nargs="+", required=True, help="trained ControlNet folder(s)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=20, help="sampling steps of the base's own scheduler")
    parser.add_argument("--guidance", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)

    exchangeable = len(read_records(args.data)) >= 2  # the advantage swaps conditions between records

    def measure(controlnet: ControlNetModel) -> tuple[Adherence, list[DenoisingAdvantage]]:
        sampled = measure_adherence(args.base, controlnet, args.data, args.seeds, args.steps, args.guidance)
        advantage = measure_denoising_advantage(args.base, controlnet, args.data) if exchangeable else []
        return sampled, advantage

    baseline, unread = measure(no_control(args.base))
    rows = [_row("no control (step 0)", baseline, unread, baseline)]
    for folder in args.controlnet:
        trained = ControlNetModel.from_pretrained(folder)
        random = random_control(args.base, trained)
        rows.append(_row(f"random control at {folder}'s scale", *measure(random), baseline))
        rows.append(_row(folder, *measure(trained), baseline))
    steps = "/".join(str(t) for t in TIMESTEPS)
    header = (
        f"| ControlNet | edge F1 ±2 px | × no control | circle IoU | denoising advantage, t = {steps} |\n"
        "|---|---|---|---|---|"
    )
    logger.info("%s\n%s", header, "\n".join(rows))


if __name__ == "__main__":
    main()
