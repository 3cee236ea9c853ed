"""Command line for dataset tools: ``python -m data {fill,validate} ...``.

Examples::

    python -m data fill --out datasets/fill --n 1000 --resolution 128
    python -m data validate datasets/fill/train.jsonl --open-images
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from data.records import format_problems

logger = logging.getLogger("data")


def _setup_logging(verbose: bool) -> None:
    """Rich logging on a terminal; plain one-line records otherwise, so logs and CI output keep
    each ``file:line`` problem on one greppable line (rich wraps at the console width)."""
    level = logging.DEBUG if verbose else logging.INFO
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(show_path=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)


def _cmd_fill(args: argparse.Namespace) -> int:
    """Build or resume a procedural fill dataset."""
    from data.fill import build_fill

    jsonl = build_fill(
        args.out,
        n=args.n,
        resolution=args.resolution,
        seed=args.seed,
        overwrite=args.overwrite,
        workers=args.workers,
    )
    logger.info("dataset ready: %s", jsonl)
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    """Validate a dataset; exit status 1 if anything is wrong."""
    from data.validate import check_dataset

    report = check_dataset(args.jsonl, open_images=args.open_images, workers=args.workers)
    checked = "schema, files and images" if args.open_images else "schema and files"
    count = len(report.problems)
    summary = f"{args.jsonl}: {report.records} valid records, {count} problem{'' if count == 1 else 's'}"
    if report.problems:
        logger.error("%s\n%s", summary, format_problems(report.problems, limit=args.max_problems))
        return 1
    logger.info("%s (%s checked)", summary, checked)
    return 0


def _positive_int(value: str) -> int:
    """argparse type for counts that must be >= 1."""
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {number}")
    return number


def _non_negative_int(value: str) -> int:
    """argparse type for seeds and limits that must be >= 0."""
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {number}")
    return number


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m data`` argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(prog="python -m data", description="Dataset tools for skinforge.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    fill = sub.add_parser(
        "fill",
        help="build the procedural circle dataset (fill50k style)",
        description="Build, or resume, a reproducible fill dataset: coloured circles conditioned on "
        "their outlines. Re-running with the same arguments keeps existing images.",
    )
    fill.add_argument("--out", type=Path, required=True, help="output folder")
    fill.add_argument("--n", type=_positive_int, required=True, help="number of samples")
    fill.add_argument("--resolution", type=_positive_int, default=128, help="image side in px (default 128)")
    fill.add_argument("--seed", type=_non_negative_int, default=0, help="random seed (default 0)")
    fill.add_argument("--overwrite", action="store_true", help="delete a previous build in --out first")
    fill.add_argument("--workers", type=_positive_int, default=1, help="writer threads (default 1)")
    fill.set_defaults(func=_cmd_fill)

    validate = sub.add_parser(
        "validate",
        help="check a train.jsonl dataset",
        description="Check every record (schema, referenced files exist); with --open-images also "
        "decode every image and check sizes and boxes. Exit status 1 if there are problems.",
    )
    validate.add_argument("jsonl", type=Path, help="path to train.jsonl")
    validate.add_argument(
        "--open-images", action="store_true", help="decode images; check sizes match and boxes fit"
    )
    validate.add_argument("--workers", type=_positive_int, default=8, help="image-decoding threads")
    validate.add_argument(
        "--max-problems", type=_non_negative_int, default=50, help="problems to list (0 = all; default 50)"
    )
    validate.set_defaults(func=_cmd_validate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return args.func(args)
    except (OSError, ValueError) as exc:  # expected user errors: say what, no traceback
        logger.error("%s", exc, exc_info=args.verbose)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
