"""``python -m inference``: batch inference of trained ControlNets into images, grid.png and report.json.

User mistakes (a wrong folder, a bad jsonl line, a missing file) end with exit code 2 and the
problem in one message, not a traceback: the traceback would bury the one line that matters.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch
from diffusers.utils import logging as diffusers_logging
from transformers.utils import logging as transformers_logging

from data.records import DatasetError
from inference.batch import run_batch_inference
from inference.pipeline import GenerationSettings

logger = logging.getLogger("inference")

PROG = "python -m inference"
_DTYPES = {"auto": None, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def build_parser() -> argparse.ArgumentParser:
    """The CLI; defaults mirror GenerationSettings so the two never disagree."""
    defaults = GenerationSettings()
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Generate images from trained SDXL ControlNets for a jsonl dataset, "
        "with a comparison grid and a report. Existing images in --out are kept (resume).",
    )
    parser.add_argument(
        "--checkpoint",
        nargs="+",
        required=True,
        metavar="CKPT",
        help="run folder, checkpoint-N folder or diffusers ControlNet folder (several to compare)",
    )
    parser.add_argument(
        "--data", required=True, type=Path, help="fill50k-format jsonl (text + conditioning_image)"
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--base", help="base SDXL folder or hub id (default: model.base from skinforge.yaml)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds per record (default: 0)")
    parser.add_argument("--steps", type=int, default=defaults.num_inference_steps, help="denoising steps")
    parser.add_argument("--guidance", type=float, default=defaults.guidance_scale, help="CFG scale")
    parser.add_argument(
        "--conditioning-scale",
        type=float,
        default=defaults.controlnet_conditioning_scale,
        help="ControlNet scale",
    )
    parser.add_argument("--negative-prompt", default=defaults.negative_prompt, help="negative prompt")
    parser.add_argument("--resolution", type=int, help="square output side (default: each condition's size)")
    parser.add_argument("--limit", type=int, help="use only the first N records")
    parser.add_argument("--batch-size", type=int, default=4, help="images per pipeline call (default: 4)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument(
        "--dtype",
        choices=sorted(_DTYPES),
        default="auto",
        help="weights dtype (auto: fp16 on cuda, fp32 on cpu)",
    )
    return parser


def _quiet_loading_bars() -> None:
    """diffusers/transformers draw a bar per model load; in a log they bury our own progress bar."""
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 bad input)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _quiet_loading_bars()
    try:
        settings = GenerationSettings(
            num_inference_steps=args.steps,
            guidance_scale=args.guidance,
            controlnet_conditioning_scale=args.conditioning_scale,
            negative_prompt=args.negative_prompt,
            resolution=args.resolution,
        )
        report = run_batch_inference(
            args.checkpoint,
            args.data,
            args.out,
            settings,
            seeds=args.seeds,
            base=args.base,
            limit=args.limit,
            batch_size=args.batch_size,
            device=args.device,
            dtype=_DTYPES[args.dtype],
        )
    except (ValueError, DatasetError, FileNotFoundError) as err:
        sys.stderr.write(f"{PROG}: error: {err}\n")
        return 2
    logger.info("Done: %s", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
