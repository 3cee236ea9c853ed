"""Command line for dataset tools: ``python -m data {fill,validate,stats,resize,canny,...} ...``.

Examples::

    python -m data fill --out datasets/fill --n 1000 --resolution 128
    python -m data validate datasets/fill/train.jsonl --open-images
    python -m data resize --in raw_skins/ --out datasets/skins512 --size 512 --mode pad
    python -m data canny --in datasets/skins512/train.jsonl --out datasets/skins512_canny --low 50 --high 80
    python -m data stats datasets/skins512_canny/train.jsonl
    python -m data skins --out datasets/skin_parts --n 8 --seed 0
    python -m data compose --in datasets/skin_parts --out datasets/skins_composed
    python -m data glyph --in datasets/skins_composed --out datasets/skins_glyph
    python -m data caption --in datasets/skins_glyph --out datasets/skins_captioned --model models/tiny-blip
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from common.process_exit import exit_without_teardown
from data import canny, caption, compose_builder, glyph, resize, skins_builder
from data.builder_cli import non_negative_int as _non_negative_int
from data.builder_cli import positive_int as _positive_int
from data.engine_cli import add_engine_args, engine_options
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
        engine=engine_options(args),
    )
    logger.info("dataset ready: %s", jsonl)
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    """Validate a dataset; exit status 1 if anything is wrong."""
    from data.validate import check_dataset

    if args.fix:
        from data.validate import fix_dataset

        fix_dataset(args.jsonl)
    report = check_dataset(args.jsonl, open_images=args.open_images, workers=args.workers)
    checked = "schema, files and images" if args.open_images else "schema and files"
    count = len(report.problems)
    summary = f"{args.jsonl}: {report.records} valid records, {count} problem{'' if count == 1 else 's'}"
    if report.problems:
        logger.error("%s\n%s", summary, format_problems(report.problems, limit=args.max_problems))
        return 1
    logger.info("%s (%s checked)", summary, checked)
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    """Print dataset statistics to stdout (the command's output, not a log)."""
    from data.stats import dataset_stats, format_stats

    sys.stdout.write(format_stats(dataset_stats(args.jsonl, workers=args.workers)) + "\n")
    return 0


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
    fill.add_argument("--workers", type=_positive_int, default=1, help="worker processes (default 1)")
    add_engine_args(fill)
    fill.set_defaults(func=_cmd_fill)

    validate = sub.add_parser(
        "validate",
        help="check a train.jsonl dataset",
        description="Check every record (schema, referenced files exist, text not blank, no image file "
        "used twice); with --open-images also decode every image and check sizes and boxes. Exit status "
        "1 if there are problems. --fix first applies only fixes that lose nothing.",
    )
    validate.add_argument("jsonl", type=Path, help="path to train.jsonl")
    validate.add_argument(
        "--open-images", action="store_true", help="decode images; check sizes match and boxes fit"
    )
    validate.add_argument("--workers", type=_positive_int, default=8, help="image-decoding threads")
    validate.add_argument(
        "--max-problems", type=_non_negative_int, default=50, help="problems to list (0 = all; default 50)"
    )
    validate.add_argument(
        "--fix",
        action="store_true",
        help="first apply the lossless fixes (drop exact duplicate records, strip whitespace around texts)",
    )
    validate.set_defaults(func=_cmd_validate)

    stats = sub.add_parser(
        "stats",
        help="print counts, sizes, caption lengths and box counts",
        description="Print record counts, image/condition sizes (from headers), a caption length "
        "histogram and text-box counts of a train.jsonl dataset.",
    )
    stats.add_argument("jsonl", type=Path, help="path to train.jsonl")
    stats.add_argument("--workers", type=_positive_int, default=8, help="header-reading threads")
    stats.set_defaults(func=_cmd_stats)

    resize.add_cli(sub)
    canny.add_cli(sub)
    for module in (skins_builder, compose_builder, glyph, caption):
        module.add_cli(sub)
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
    exit_without_teardown(main())
