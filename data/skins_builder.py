"""``python -m data skins``: write procedural skins as per-skin element folders (the input of ``compose``).

``OUT/skin_00000/{background,keys26,keys9,function,navbar}.png`` plus ``skin.json`` (seed, labels, style).
``skin.json`` is written last, atomically, so its presence marks a complete folder: a re-run skips those
and rebuilds the rest. This is not a record builder (its output is element folders, not a dataset), so
it does not go through :mod:`data.runner`; like ``fill`` it uses threads, since PNG encoding releases
the GIL. ``skins_params.json`` refuses resuming with other settings.
"""

from __future__ import annotations

import argparse
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from common.atomic import atomic_save_image, atomic_write_json
from common.fonts import resolve_font_path
from common.progress import progress_bar
from data.builder_cli import non_negative_int, positive_int
from data.engine_cli import add_engine_args, engine_options
from data.skins import generate_skin

if TYPE_CHECKING:
    from data.ray_engine import RayOptions

logger = logging.getLogger(__name__)

__all__ = ["SKINS_VERSION", "add_cli", "build_skins", "skin_folder_name"]

SKINS_VERSION = (
    2  # bump when the drawings or skin.json change, so folders from an older generator are not mixed in
)
PARAMS_FILE = "skins_params.json"
META_FILE = "skin.json"


def skin_folder_name(index: int) -> str:
    return f"skin_{index:05d}"


def _check_params(out: Path, params: dict[str, object]) -> None:
    """Write the params file, or refuse if ``out`` holds skins made with other settings."""
    path = out / PARAMS_FILE
    if path.exists():
        previous = json.loads(path.read_text(encoding="utf-8"))
        if previous != params:
            raise FileExistsError(f"{out} holds skins made with {previous}, not {params}; use another --out")
    atomic_write_json(path, params)


def _write_skin(out: Path, index: int, seed: int, scale: float, font: Path | None) -> bool:
    """Draw and write skin ``index`` unless its folder is complete; True if it was written."""
    folder = out / skin_folder_name(index)
    if (folder / META_FILE).is_file():
        return False
    skin = generate_skin(index, seed=seed, scale=scale, font=font)
    for name, image in skin.elements.items():
        atomic_save_image(image, folder / f"{name}.png")
    atomic_write_json(folder / META_FILE, skin.metadata(seed, index, scale))
    return True


def _write_skins(out: Path, seed: int, scale: float, font: Path | None, indices: range) -> tuple[int, int]:
    """One Ray shard: (skins in it, skins written)."""
    return len(indices), sum(_write_skin(out, i, seed, scale, font) for i in indices)


def build_skins(
    out: str | Path,
    n: int,
    seed: int = 0,
    scale: float = 1.0,
    font: str | Path | None = None,
    workers: int = 2,
    engine: RayOptions | None = None,
) -> Path:
    """Write (or resume) ``n`` skin folders under ``out``; return ``out``. ``engine``: as Ray tasks over
    shards of indices (a skin's ``skin.json`` is its done marker either way)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    font_path = None if font is None else resolve_font_path(font)
    params = {
        "builder": "skins",
        "version": SKINS_VERSION,
        "seed": seed,
        "scale": scale,
        "font": None if font_path is None else str(font_path),
    }
    _check_params(out, params)
    written = 0
    with progress_bar(n, "skins", "skin") as bar:
        if engine is not None:
            from data.ray_engine import map_unordered

            write = partial(_write_skins, out, seed, scale, font_path)
            shards = (range(i, min(i + engine.shard_size, n)) for i in range(0, n, engine.shard_size))
            for count, wrote in map_unordered(write, shards, engine):
                written += wrote
                bar.update(count)
        else:
            with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
                for wrote in pool.map(lambda i: _write_skin(out, i, seed, scale, font_path), range(n)):
                    written += wrote
                    bar.update()
    logger.info("skins: %d skin folders in %s (%d written, %d kept)", n, out, written, n - written)
    return out


def _cmd(args: argparse.Namespace) -> int:
    build_skins(
        args.out,
        args.n,
        seed=args.seed,
        scale=args.scale,
        font=args.font,
        workers=args.workers,
        engine=engine_options(args),
    )
    return 0


def add_cli(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``skins`` on the ``python -m data`` subcommand parser."""
    parser = sub.add_parser(
        "skins",
        help="generate procedural keyboard skins as element folders (input of compose)",
        description="Write N reproducible keyboard skins, one folder each with background, 26-key board, "
        "9-key board, function keys and navigation bar images (Chinese and English key labels), plus "
        "skin.json with the labels drawn. Re-running with the same settings keeps finished folders.",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (one sub-folder per skin)")
    parser.add_argument("--n", type=positive_int, required=True, help="number of skins")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="element size factor; 1.0 fits the default 1024² layout"
    )
    parser.add_argument("--font", type=Path, default=None, help="TTF/TTC font (default: packaged CJK font)")
    parser.add_argument("--workers", type=positive_int, default=2, help="writer threads (default 2)")
    add_engine_args(parser)
    parser.set_defaults(func=_cmd)
