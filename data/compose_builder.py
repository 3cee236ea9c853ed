"""``python -m data compose``: compose every skin folder under ``--in`` into a dataset, via the runner.

Input is a folder of skin folders (one per skin, holding element images such as ``background.png``,
``keys26.png``; what ``python -m data skins`` writes). Output is a dataset: ``images/<skin>.png`` (the
composed skin), ``conditioning_images/<skin>.png`` (the layout's outline map), ``train.jsonl``, and
``missing_elements.json`` naming the optional elements each skin lacked (also counted in the summary),
and, for generated skins whose ``skin.json`` records where every label was drawn, ``labels.jsonl``: the
true labels on the composed canvas (:mod:`data.known_labels`), which ``glyph`` uses instead of trusting
OCR.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from common.atomic import atomic_write_json
from data.build_types import BadInput, BuildSummary, Built, Item
from data.builder_cli import add_allow_failures, exit_status, positive_int
from data.compose import ElementError, compose_skin, find_element
from data.engine_cli import add_engine_args, engine_options
from data.image_io import write_png
from data.known_labels import LABELS_FILE, skin_labels, write_labels
from data.layout import LayoutSpec, load_layout
from data.records import Record
from data.runner import run_builder

if TYPE_CHECKING:
    from data.ray_engine import RayOptions

__all__ = [
    "COMPOSE_VERSION",
    "ComposeSettings",
    "add_cli",
    "build_compose",
    "compose_builder",
    "items_from_skins",
]

COMPOSE_VERSION = 1  # bump when the composed pictures change, so old builds are not resumed
DEFAULT_TEXT = "a keyboard skin"
MISSING_FILE = "missing_elements.json"
MISSING_NOTE = "missing optional element: "


@dataclass(frozen=True)
class ComposeSettings:
    layout: LayoutSpec
    text: str = DEFAULT_TEXT
    version: int = COMPOSE_VERSION


def _bgr(image: Image.Image) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])


def compose_builder(item: Item, out: Path, settings: ComposeSettings) -> Built:
    """Runner builder: compose the skin folder ``item.source`` and write its image and condition."""
    try:
        composed = compose_skin(Path(item.source), settings.layout)
    except ElementError as exc:
        raise BadInput(exc.reason, exc.path) from None
    image_rel, condition_rel = f"images/{item.key}.png", f"conditioning_images/{item.key}.png"
    write_png(out / image_rel, _bgr(composed.image))
    write_png(out / condition_rel, _bgr(composed.condition))
    record = Record(text=settings.text, image=image_rel, conditioning_image=condition_rel)
    return Built(record, tuple(MISSING_NOTE + name for name in composed.missing))


def items_from_skins(root: str | Path) -> list[Item]:
    """One item per (non-hidden) sub-folder of ``root``, sorted by name, keyed by the folder name."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"skins folder {root} does not exist")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ValueError(f"no skin folders under {root} (expected one folder of element images per skin)")
    return [Item(key=folder.name, source=str(folder)) for folder in folders]


def _write_missing(out: Path, items: list[Item], summary: BuildSummary, layout: LayoutSpec) -> None:
    """``missing_elements.json``: {skin: [optional elements it lacks]} for every skin in the build.

    Recomputed from the folders (stat calls only) so it also covers skins kept from an earlier run.
    """
    failed = {failure.key for failure in summary.failed + summary.skipped}
    report = {}
    for item in items:
        if item.key not in failed:
            missing = [e.name for e in layout.elements if find_element(Path(item.source), e) is None]
            report[item.key] = missing
    atomic_write_json(out / MISSING_FILE, report)


def _write_known_labels(out: Path, items: list[Item], summary: BuildSummary, layout: LayoutSpec) -> None:
    """``labels.jsonl`` for the built skins whose folders record their labels (none: no file)."""
    failed = {failure.key for failure in summary.failed + summary.skipped}
    known = {}
    for item in items:
        labels = None if item.key in failed else skin_labels(item.source, layout)
        if labels is not None:
            known[item.key] = labels
    if known:
        write_labels(out / LABELS_FILE, known)


def build_compose(
    skins: str | Path,
    out: str | Path,
    layout: str | Path | LayoutSpec | None = None,
    text: str = DEFAULT_TEXT,
    *,
    workers: int | None = None,
    strict: bool = False,
    overwrite: bool = False,
    engine: RayOptions | None = None,
) -> BuildSummary:
    """Compose every skin folder under ``skins`` into the dataset ``out`` (resumable, see the runner;
    ``engine``: as Ray tasks)."""
    spec = layout if isinstance(layout, LayoutSpec) else load_layout(layout)
    items = items_from_skins(skins)
    settings = ComposeSettings(layout=spec, text=text)
    summary = run_builder(
        "compose",
        compose_builder,
        items,
        out,
        settings,
        workers=workers,
        strict=strict,
        overwrite=overwrite,
        engine=engine,
    )
    _write_missing(Path(out), items, summary, spec)
    _write_known_labels(Path(out), items, summary, spec)
    return summary


def _cmd(args: argparse.Namespace) -> int:
    if args.out.resolve() == args.input.resolve():
        raise ValueError(f"--out {args.out} is the input folder; write the build to a new folder")
    summary = build_compose(
        args.input,
        args.out,
        layout=args.layout,
        text=args.text,
        workers=args.workers,
        strict=args.strict,
        overwrite=args.overwrite,
        engine=engine_options(args),
    )
    return exit_status(summary, args.allow_failures)


def add_cli(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``compose`` on the ``python -m data`` subcommand parser."""
    parser = sub.add_parser(
        "compose",
        help="compose skins from per-skin element folders by a layout spec",
        description="Place each skin folder's element images (background, 26-key, 9-key, function keys, "
        "navigation bar) on a canvas by a layout spec (YAML), write the composed skin and the layout's "
        "outline map as its condition. A missing optional element is noted; a missing required one is a "
        "failure. Re-running resumes.",
    )
    parser.add_argument(
        "--in", dest="input", type=Path, required=True, help="folder holding one folder per skin"
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="output dataset folder (resumed if it exists)"
    )
    parser.add_argument(
        "--layout", type=Path, default=None, help="layout spec YAML (default: the packaged one)"
    )
    parser.add_argument(
        "--text", default=DEFAULT_TEXT, help=f"record text until captioned (default {DEFAULT_TEXT!r})"
    )
    parser.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1, help="worker processes")
    parser.add_argument("--strict", action="store_true", help="stop at the first bad skin folder")
    parser.add_argument("--overwrite", action="store_true", help="delete a previous build in --out first")
    add_allow_failures(parser)
    add_engine_args(parser)
    parser.set_defaults(func=_cmd)
