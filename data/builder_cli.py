"""Command-line plumbing shared by every builder subcommand of ``python -m data``.

A builder module adds its subcommand with::

    def add_cli(sub) -> None:
        parser = sub.add_parser("grey", help="...", description="...")
        add_builder_args(parser)
        parser.add_argument("--level", type=int, default=1)
        parser.set_defaults(func=lambda args: run_cli(args, "grey", grey, GreySettings(args.level)))

and :func:`run_cli` loads ``--in``, runs :func:`data.runner.run_builder` with the common flags and
turns the summary into an exit status.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from data.inputs import input_root, load_items
from data.runner import Built, Item, run_builder

__all__ = ["add_builder_args", "non_negative_int", "positive_int", "run_cli"]

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


def run_cli(
    args: argparse.Namespace, name: str, builder: Callable[[Item, Path, S], Built], settings: S
) -> int:
    """Run ``builder`` as the subcommand's args say; exit status 1 if nothing could be built."""
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
    )
    return 0 if summary.written else 1
