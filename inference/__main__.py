"""``python -m inference``: batch inference of trained ControlNets into images, metrics and a report.

User mistakes (a wrong folder, a bad jsonl line, a missing file) end with exit code 2 and the
problem in one message, not a traceback: the traceback would bury the one line that matters.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from diffusers.utils import logging as diffusers_logging
from transformers.utils import logging as transformers_logging

from common.host_memory import keep_freed_memory
from common.process_exit import exit_without_teardown
from data.captioner import resolve_device
from data.dataset_path import dataset_jsonl, folder_problem
from data.records import DatasetError
from inference.anytext import AnyTextDictChoice
from inference.batch import run_batch_inference
from inference.checkpoints import training_resolution
from inference.dataset_edges import dataset_edge_settings
from inference.evaluate import MetricSettings
from inference.export import main as export_main
from inference.metrics import EdgeSettings
from inference.pipeline import GenerationSettings
from inference.protocols import NATIVE, PROTOCOLS
from inference.settings import DTYPES, SCHEDULER_NAMES, speed_from_args
from inference.sources import AUTO
from recognizer.ocr import READERS, OcrConfig, reader_name
from recognizer.tesseract_reader import tesseract_problem

logger = logging.getLogger("inference")

PROG = "python -m inference"
EXPORT_COMMAND = "export"
_DTYPE_CHOICES = sorted(DTYPES)
_BASE_SCHEDULER = "base"


def _add_generation_args(parser: argparse.ArgumentParser) -> None:
    """Inputs and sampling; defaults mirror GenerationSettings so the two never disagree."""
    defaults = GenerationSettings()
    group = parser.add_argument_group("what to generate")
    group.add_argument(
        "--checkpoint", nargs="+", required=True, metavar="CKPT",
        help="run folder, checkpoint-N folder or diffusers ControlNet folder (several to compare)",
    )  # fmt: skip
    group.add_argument(
        "--data", required=True, type=Path,
        help="fill50k-format jsonl (text + conditioning_image), or a dataset folder holding train.jsonl",
    )  # fmt: skip
    group.add_argument("--out", required=True, type=Path, help="output folder")
    group.add_argument("--base", help="base SDXL folder or hub id (default: model.base from skinforge.yaml)")
    group.add_argument(
        "--base-controlnet", nargs="?", const=AUTO, metavar="PATH",
        help="also run the ControlNet training started from: PATH, or without PATH the model.controlnet "
        "in the checkpoints' skinforge.yaml (shown as step 0)",
    )  # fmt: skip
    group.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds per record (default: 0)")
    group.add_argument("--limit", type=int, help="use only the first N records")
    group.add_argument("--steps", type=int, default=defaults.num_inference_steps, help="denoising steps")
    group.add_argument("--guidance", type=float, default=defaults.guidance_scale, help="CFG scale")
    group.add_argument(
        "--scheduler", choices=[_BASE_SCHEDULER, *SCHEDULER_NAMES], default=_BASE_SCHEDULER,
        help="sampler (default: the base model's own)",
    )  # fmt: skip
    group.add_argument(
        "--conditioning-scale", type=float, default=defaults.controlnet_conditioning_scale,
        help="ControlNet scale",
    )  # fmt: skip
    group.add_argument(
        "--control-start", type=float, default=defaults.control_guidance_start,
        help="fraction of the steps at which the ControlNet starts acting",
    )  # fmt: skip
    group.add_argument(
        "--control-end", type=float, default=defaults.control_guidance_end,
        help="fraction of the steps at which the ControlNet stops acting",
    )  # fmt: skip
    group.add_argument("--negative-prompt", default=defaults.negative_prompt, help="negative prompt")
    group.add_argument(
        "--resolution", type=int,
        help="square output side (default: the first checkpoint's training data.resolution, else each "
        "condition's size)",
    )  # fmt: skip


def _add_speed_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("speed and memory (not in params.json: a resume may change them)")
    group.add_argument("--batch-size", type=int, default=4, help="images per pipeline call (default: 4)")
    group.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    group.add_argument(
        "--dtype", choices=["auto", *_DTYPE_CHOICES], default="auto",
        help="dtype of all models (auto: fp16 on cuda with an fp32 VAE, fp32 on cpu)",
    )  # fmt: skip
    group.add_argument("--unet-dtype", choices=_DTYPE_CHOICES, help="UNet and ControlNet dtype")
    group.add_argument("--vae-dtype", choices=_DTYPE_CHOICES, help="VAE dtype")
    group.add_argument("--text-encoder-dtype", choices=_DTYPE_CHOICES, help="text encoders' dtype")
    group.add_argument(
        "--attention", choices=["sdpa", "xformers"], default="sdpa",
        help="attention kernels; xformers falls back to SDPA when it cannot load",
    )  # fmt: skip
    group.add_argument(
        "--compile", action="store_true",
        help="torch.compile UNet and ControlNet (slow first batch; falls back to eager on failure)",
    )  # fmt: skip
    group.add_argument("--channels-last", action="store_true", help="channels-last memory format")
    group.add_argument(
        "--vae-tiling", action="store_true", help="decode in tiles (large images, less memory)"
    )
    group.add_argument("--vae-slicing", action="store_true", help="decode one image of a batch at a time")
    group.add_argument("--cpu-offload", action="store_true", help="diffusers model CPU offload (GPU only)")
    group.add_argument(
        "--return-freed-memory", action="store_true",
        help="on cpu, leave glibc's default of returning freed buffers to the OS; otherwise they are kept "
        "for the next denoising step (10x fewer page faults, ~10%% faster on the tiny model)",
    )  # fmt: skip


def _add_metric_args(parser: argparse.ArgumentParser) -> None:
    defaults = EdgeSettings()
    group = parser.add_argument_group("metrics")
    group.add_argument("--no-metrics", action="store_true", help="only generate (no metrics.json/csv)")
    group.add_argument(
        "--protocol", nargs="+", choices=PROTOCOLS, default=[NATIVE], metavar="NAME",
        help="evaluation protocols, one or more of: native (our own; default), controlnet++ (ControlNet++'s "
        "edge F1 x100 and MS-SSIM), anytext (AnyText's sentence accuracy and NED); each metric's column "
        "names its protocol. controlnet++ and anytext reproduce the peers' protocol math exactly (kornia "
        "0.7.0's Canny, their PNG/JPEG round trips, crops, pooling, AnyText's benchmark dictionary), not "
        "their recogniser: ours is PP-OCRv6, AnyText's DuGuang ConvNextTiny. Two inputs their code cannot "
        "take: MS-SSIM of images under 176 px a side is left empty here (F1 still scored), and a box that "
        "crops to nothing reads as '' (a miss)",
    )  # fmt: skip
    group.add_argument(
        "--anytext-dict", metavar="zh|en|PATH",
        help="dictionary of the anytext protocol's NED: zh (ppocr_keys_v1.txt, AnyText's Chinese set), en "
        "(en_dict.txt, its English set) or a file with one character per line (default: en when every "
        "ground-truth character of the data is in en_dict.txt, else zh); recorded in metrics.json",
    )  # fmt: skip
    group.add_argument(
        "--canny-low", type=int,
        help=f"native Canny low threshold (default: the one that made the dataset's conditions, as "
        f"`data canny` recorded it, else {defaults.low})",
    )  # fmt: skip
    group.add_argument(
        "--canny-high", type=int,
        help=f"native Canny high threshold (default: the dataset's recorded one, else {defaults.high})",
    )  # fmt: skip
    group.add_argument(
        "--edge-tolerance", type=int, default=defaults.tolerance,
        help="pixels an edge may be off and still count, for the tolerant edge F1",
    )  # fmt: skip
    group.add_argument(
        "--condition-canny", action="store_true",
        help="run Canny on the conditions too (default: they are edge maps already)",
    )  # fmt: skip
    group.add_argument("--no-ocr", action="store_true", help="skip the OCR text metrics")
    group.add_argument(
        "--reader", action="append", choices=list(READERS), metavar="NAME",
        help="OCR reader of the labels, repeatable: rapidocr (PP-OCRv6, the text loss's family), tesseract "
        "(Tesseract 5, a reader the loss never optimised; apt-get install tesseract-ocr "
        "tesseract-ocr-eng tesseract-ocr-chi-sim), paddle (PaddleOCR, its own venv: make install-paddle). "
        "Each reader's sentence accuracy and 1-NED are columns named after it; the first reader's are "
        "also the plain OCR columns (default: rapidocr, plus tesseract when installed)",
    )  # fmt: skip
    group.add_argument(
        "--ocr-backend", choices=["rapidocr", "paddleocr"],
        help="the first reader: rapidocr (default) or paddleocr (the same as naming it first in --reader)",
    )  # fmt: skip
    group.add_argument(
        "--ocr-rec-model", type=Path,
        help="OCR recognition model of the first reader: an .onnx file for rapidocr, a Paddle inference "
        "model folder for paddleocr (default: the backend's shipped PP-OCR)",
    )  # fmt: skip
    group.add_argument("--clip-model", type=Path, help="local transformers CLIP folder, for the CLIP score")
    group.add_argument("--fid-model", type=Path, help="local TorchScript Inception (inception-2015-12-05.pt)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Generate images from trained SDXL ControlNets for a jsonl dataset, score them (edge "
        "adherence, OCR of the labels) and write report.html. Existing images in --out are kept (resume). "
        f"`{PROG} {EXPORT_COMMAND} --help`: export a checkpoint for ComfyUI / A1111 / Forge and the Hub.",
    )
    _add_generation_args(parser)
    _add_speed_args(parser)
    _add_metric_args(parser)
    return parser


def _trained_resolution(checkpoints: list[str]) -> int | None:
    """The first checkpoint's training resolution: a ControlNet trained at 128² is slow and off its
    training distribution at a 1024² condition's own size."""
    side = training_resolution(checkpoints[0])
    if side is not None:
        logger.info("resolution: %d² (data.resolution of %s; --resolution changes it)", side, checkpoints[0])
    return side


def _settings(args: argparse.Namespace) -> GenerationSettings:
    return GenerationSettings(
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        controlnet_conditioning_scale=args.conditioning_scale,
        negative_prompt=args.negative_prompt,
        resolution=args.resolution if args.resolution is not None else _trained_resolution(args.checkpoint),
        scheduler=None if args.scheduler == _BASE_SCHEDULER else args.scheduler,
        control_guidance_start=args.control_start,
        control_guidance_end=args.control_end,
    )


def _readers(args: argparse.Namespace) -> list[OcrConfig]:
    """The OCR readers in order: --reader's (default rapidocr, plus tesseract where it is installed),
    --ocr-backend's moved first; --ocr-rec-model is the first reader's model."""
    names = list(dict.fromkeys(args.reader or ["rapidocr"]))
    if not args.reader and not args.no_ocr:
        if (problem := tesseract_problem()) is None:
            names.append("tesseract")
        else:
            logger.info("OCR read by rapidocr only; a second reader, tesseract, is not usable: %s", problem)
    if args.ocr_backend is not None:
        first = reader_name(OcrConfig(backend=args.ocr_backend))
        names = [first, *(name for name in names if name != first)]
    if args.ocr_rec_model is not None and READERS[names[0]] == "tesseract":
        raise ValueError(
            "--ocr-rec-model is a PP-OCR model; the first --reader is tesseract, which takes none"
        )
    return [
        OcrConfig(
            backend=READERS[name],
            rec_model=args.ocr_rec_model if index == 0 else None,
            use_angle_cls=False,
        )
        for index, name in enumerate(names)
    ]


def _metrics(args: argparse.Namespace) -> MetricSettings | None:
    if args.no_metrics:
        return None
    if args.ocr_rec_model is not None and not args.ocr_rec_model.exists():
        raise FileNotFoundError(
            f"--ocr-rec-model {args.ocr_rec_model}: file not found (leave the option out to use the PP-OCR "
            "recognition model shipped with the backend, or pass --no-ocr)"
        )
    base = EdgeSettings(tolerance=args.edge_tolerance, condition_is_edges=not args.condition_canny)
    edges = dataset_edge_settings(args.data, base, args.canny_low, args.canny_high)
    ocr, *other_readers = _readers(args)
    anytext_dict = AnyTextDictChoice(args.anytext_dict) if args.anytext_dict else None
    return MetricSettings(
        edges,
        not args.no_ocr,
        ocr,
        args.clip_model,
        args.fid_model,
        tuple(args.protocol),
        anytext_dict,
        tuple(other_readers),
    )


def _quiet_loading_bars() -> None:
    """diffusers/transformers draw a bar per model load; in a log they bury our own progress bar."""
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 bad input). ``export`` first runs the exporter."""
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if argv[:1] == [EXPORT_COMMAND]:
        return export_main(argv[1:])
    args = build_parser().parse_args(argv)
    _quiet_loading_bars()
    try:
        args.device = str(resolve_device(args.device))
    except ValueError as err:
        sys.stderr.write(f"{PROG}: error: {err}\n")
        return 2
    logger.info("device: %s", args.device)
    if problem := folder_problem(args.data):
        sys.stderr.write(f"{PROG}: error: --data: {problem}\n")
        return 2
    args.data = dataset_jsonl(args.data)  # a dataset folder means its train.jsonl, as for the builders
    if args.device == "cpu" and not args.return_freed_memory:
        keep_freed_memory()
    try:
        report = run_batch_inference(
            args.checkpoint,
            args.data,
            args.out,
            _settings(args),
            seeds=args.seeds,
            base=args.base,
            limit=args.limit,
            batch_size=args.batch_size,
            device=args.device,
            dtype=None if args.dtype == "auto" else DTYPES[args.dtype],
            speed=speed_from_args(args),
            metrics=_metrics(args),
            base_controlnet=args.base_controlnet,
        )
    except (ValueError, DatasetError, FileNotFoundError) as err:
        sys.stderr.write(f"{PROG}: error: {err}\n")
        return 2
    logger.info("Done: %s (open %s)", report, report.parent / "report.html")
    return 0


if __name__ == "__main__":
    exit_without_teardown(main())
