"""``python -m serve --checkpoint PATH [...]``: serve trained ControlNets over HTTP (and the playground).

A wrong checkpoint path or option ends with exit code 2 and one message before anything loads;
the models load after the server is up, so ``/healthz`` answers "loading" meanwhile.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch
import uvicorn
from diffusers.utils import logging as diffusers_logging
from transformers.utils import logging as transformers_logging

from common.host_memory import keep_freed_memory
from inference.settings import DTYPES, speed_from_args
from serve.config import Limits, ServeConfig

logger = logging.getLogger("serve")

PROG = "python -m serve"
_DTYPE_CHOICES = sorted(DTYPES)


def build_parser() -> argparse.ArgumentParser:
    defaults, limits = ServeConfig(checkpoints=("x",)), Limits()
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Serve trained SDXL ControlNets: POST /generate, GET /checkpoints, /healthz, /metrics "
        "and the playground at /ui.",
    )
    what = parser.add_argument_group("what to serve")
    what.add_argument(
        "--checkpoint", nargs="+", action="extend", required=True, metavar="CKPT",
        help="run, checkpoint-N, best or ControlNet folder; several serve several, and a run brings its "
        "best/ along; the default is a run's best, else its final weights, else the first given (not a "
        "step-0 checkpoint)",
    )  # fmt: skip
    what.add_argument("--base", help="base SDXL folder or hub id (default: model.base from skinforge.yaml)")
    what.add_argument(
        "--report", type=Path, help="a python -m inference output folder: the gallery shows its metrics"
    )
    server = parser.add_argument_group("server")
    server.add_argument("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1)")
    server.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    server.add_argument(
        "--max-queue", type=int, default=defaults.max_queue, help="waiting requests before 429"
    )
    server.add_argument(
        "--max-batch", type=int, default=defaults.max_batch, help="requests per pipeline call"
    )
    server.add_argument(
        "--max-wait-ms", type=float, default=defaults.max_wait_ms,
        help="how long a batch waits for same-shape requests (default 0: only those already waiting)",
    )  # fmt: skip
    server.add_argument(
        "--timeout", type=float, default=defaults.timeout_s, help="seconds per request (504 after)"
    )
    server.add_argument("--ui", action="store_true", help="mount the Gradio playground at /ui")
    server.add_argument(
        "--history", type=Path, default=Path("playground"),
        help="folder of the playground's autosaved images and history.jsonl (default: ./playground)",
    )  # fmt: skip
    server.add_argument(
        "--inject-fault", action="append", default=[], metavar="FAULT", help=argparse.SUPPRESS
    )
    bounds = parser.add_argument_group("request limits")
    bounds.add_argument("--max-steps", type=int, default=limits.max_steps)
    bounds.add_argument("--max-side", type=int, default=limits.max_side, help="largest width/height")
    bounds.add_argument("--min-side", type=int, default=limits.min_side, help="smallest width/height")
    bounds.add_argument(
        "--max-image-bytes", type=int, default=limits.max_image_bytes, help="per uploaded image"
    )
    bounds.add_argument(
        "--max-image-pixels", type=int, default=limits.max_image_pixels, help="per uploaded image"
    )
    bounds.add_argument("--max-prompt-chars", type=int, default=limits.max_prompt_chars)
    speed = parser.add_argument_group("device and speed (as python -m inference)")
    speed.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    speed.add_argument(
        "--dtype", choices=["auto", *_DTYPE_CHOICES], default="auto", help="dtype of all models"
    )
    speed.add_argument("--unet-dtype", choices=_DTYPE_CHOICES, help="UNet and ControlNet dtype")
    speed.add_argument("--vae-dtype", choices=_DTYPE_CHOICES, help="VAE dtype")
    speed.add_argument("--text-encoder-dtype", choices=_DTYPE_CHOICES, help="text encoders' dtype")
    speed.add_argument(
        "--attention", choices=["sdpa", "xformers"], default="sdpa", help="xformers falls back to SDPA"
    )
    speed.add_argument(
        "--compile", action="store_true", help="torch.compile UNet + ControlNet (eager on failure)"
    )
    speed.add_argument("--channels-last", action="store_true", help="channels-last memory format")
    speed.add_argument("--vae-tiling", action="store_true", help="always decode in tiles")
    speed.add_argument("--vae-slicing", action="store_true", help="decode one image of a batch at a time")
    speed.add_argument("--cpu-offload", action="store_true", help="diffusers model CPU offload (GPU only)")
    speed.add_argument("--threads", type=int, help="torch threads on the CPU (default: torch's)")
    return parser


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    speed = speed_from_args(args)
    limits = Limits(
        max_steps=args.max_steps,
        min_side=args.min_side,
        max_side=args.max_side,
        max_image_bytes=args.max_image_bytes,
        max_image_pixels=args.max_image_pixels,
        max_prompt_chars=args.max_prompt_chars,
    )
    return ServeConfig(
        checkpoints=tuple(args.checkpoint),
        base=args.base,
        device=args.device,
        dtype=None if args.dtype == "auto" else args.dtype,
        speed=speed,
        max_queue=args.max_queue,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        timeout_s=args.timeout,
        limits=limits,
        report=args.report,
        history_dir=args.history if args.ui else None,
        faults=tuple(args.inject_fault),
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    if args.device == "cpu":
        keep_freed_memory()  # as python -m inference: no page faults per denoising step
    if args.threads:
        torch.set_num_threads(args.threads)
    from serve.app import create_app  # after logging is set up: importing diffusers logs

    try:
        app = create_app(config_from_args(args))
    except (ValueError, FileNotFoundError) as err:
        sys.stderr.write(f"{PROG}: error: {err}\n")
        return 2
    logger.info("serving on http://%s:%d (playground: %s)", args.host, args.port, "/ui" if args.ui else "off")
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", timeout_graceful_shutdown=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
