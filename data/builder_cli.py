"""Command-line plumbing shared by every builder subcommand of ``python -m data``.

A builder module adds its subcommand with::

    def add_cli(sub) -> None:
        parser = sub.add_parser("grey", help="...", description="...")
        add_builder_args(parser)
        parser.add_argument("--level", type=int, default=1)
        parser.set_defaults(func=lambda args: run_cli(args, "grey", grey, GreySettings(args.level)))

and :func:`run_cli` loads ``--in``, runs :func:`data.runner.run_builder` with the common flags and
turns the summary into an exit status: non-zero when any record failed (a script must be able to
notice a partial dataset) unless ``--allow-failures``. A builder that keeps the pictures' geometry also
carries the input's ``labels.jsonl`` (:mod:`data.known_labels`) into its output, so ``glyph`` further
down the chain finds the true labels.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from data.build_types import BuildSummary, Built, Item
from data.engine_cli import add_engine_args, engine_options
from data.inputs import input_root, load_items
from data.known_labels import LABELS_FILE
from data.runner import run_builder

logger = logging.getLogger(__name__)

__all__ = [
    "add_allow_failures",
    "add_builder_args",
    "build_from_args",
    "carry_labels",
    "exit_status",
    "non_negative_int",
    "positive_int",
    "run_cli",
]

S = TypeVar("S")


def positive_int(value: str) -> int:
    """argparse type for counts that must be >= 1."""
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {number}")
    return number


def non_negative_int(value: str) -> int:
    """argparse type for seeds and limits that must be >= 0."""
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {number}")
    return number


def add_builder_args(parser: argparse.ArgumentParser, folder_input: bool = True) -> None:
    """``--in --out --workers --strict --overwrite --convert``, the flags every builder shares."""
    source = "a train.jsonl (or a dataset folder holding one)"
    if folder_input:
        source += ", or a folder of images with optional same-name .txt captions"
    parser.add_argument("--in", dest="input", type=Path, required=True, help=f"input: {source}")
    parser.add_argument(
        "--out", type=Path, required=True, help="output dataset folder (resumed if it exists)"
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=os.cpu_count() or 1,
        help="worker processes (default: all cores)",
    )
    parser.add_argument("--strict", action="store_true", help="stop at the first bad input")
    parser.add_argument("--overwrite", action="store_true", help="delete a previous build in --out first")
    parser.add_argument(
        "--convert",
        action="store_true",
        help="accept lossy conversions of CMYK, 16-bit and transparent images (else they are failures)",
    )
    add_allow_failures(parser)
    add_engine_args(parser)


def add_allow_failures(parser: argparse.ArgumentParser) -> None:
    """``--allow-failures``: exit 0 even though some records failed (they are in failed.jsonl)."""
    parser.add_argument(
        "--allow-failures",
        action="store_true",
        help="exit 0 when some records failed (default: exit 1, so scripts notice a partial dataset)",
    )


def exit_status(summary: BuildSummary, allow_failures: bool) -> int:
    """1 if nothing was written, or if records failed and that is not allowed; else 0."""
    if not summary.written:
        return 1
    if summary.failed and not allow_failures:
        failed = summary.jsonl.parent / "failed.jsonl"
        logger.error(
            "%s: %d record%s failed (listed in %s); the dataset holds the other %d. Fix or remove them "
            "and re-run (finished records are kept), or pass --allow-failures to accept a partial dataset",
            summary.name,
            len(summary.failed),
            "" if len(summary.failed) == 1 else "s",
            failed,
            summary.written,
        )
        return 1
    return 0


def carry_labels(source: Path, out: Path) -> None:
    """Copy the input's ``labels.jsonl`` (true labels, image pixels) into ``out`` if it has one."""
    labels = input_root(source) / LABELS_FILE
    if labels.is_file() and out.is_dir():
        shutil.copyfile(labels, out / LABELS_FILE)
        logger.info("known labels carried along: %s", out / LABELS_FILE)


def run_cli(
    args: argparse.Namespace,
    name: str,
    builder: Callable[[Item, Path, S], Built],
    settings: S,
    keeps_geometry: bool = True,
) -> int:
    """Run ``builder`` as the subcommand's args say; the exit status of :func:`exit_status`."""
    return exit_status(build_from_args(args, name, builder, settings, keeps_geometry), args.allow_failures)


def build_from_args(
    args: argparse.Namespace,
    name: str,
    builder: Callable[[Item, Path, S], Built],
    settings: S,
    keeps_geometry: bool = True,
) -> BuildSummary:
    """Run ``builder`` over ``--in`` into ``--out`` with the common flags; the run's summary."""
    out, root = args.out.resolve(), input_root(args.input)
    if out == root or (args.input.is_dir() and out.is_relative_to(root)):
        raise ValueError(f"--out {args.out} is inside the input {args.input}; write to a new folder")
    items = load_items(args.input)
    summary = run_builder(
        name,
        builder,
        items,
        args.out,
        settings,
        workers=args.workers,
        strict=args.strict,
        overwrite=args.overwrite,
        engine=engine_options(args),
    )
    if keeps_geometry:
        carry_labels(args.input, args.out)
    elif (root / LABELS_FILE).is_file():
        logger.warning(
            "%s not carried: %s moves pixels, so its rectangles no longer apply", LABELS_FILE, name
        )
    return summary
