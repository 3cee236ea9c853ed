"""Caption builder: BLIP captions with a conditional prompt and a trigger word, in batches.

``text = <BLIP caption, which starts with the prefix> + <suffix>``, e.g. "a keyboard skin of a blue
cartoon cat,iflyskin". The model is loaded once in the main process and fed batches
(:mod:`data.batch_runner`), on CPU or GPU; images and conditions are carried into the output (hard
links where possible), boxes and gt_text are kept. Device, dtype and batch size are run options, not
build settings: resuming a CPU build on a GPU is allowed.
"""

from __future__ import annotations

import argparse
import functools
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from data.batch_runner import run_batched
from data.build_types import BadInput, BuildSummary, Built, Failure, Item
from data.builder_cli import add_builder_args, carry_labels, exit_status, positive_int
from data.engine_cli import engine_options
from data.image_io import DEFAULT_PNG_COMPRESSION, Decoded, link_or_copy, place_image, read_image
from data.inputs import input_record, input_root, load_items
from data.records import Record

if TYPE_CHECKING:
    from data.ray_engine import RayOptions

logger = logging.getLogger(__name__)

__all__ = ["CaptionSettings", "add_cli", "build_captions", "caption_batch"]

DEFAULT_PREFIX = "a keyboard skin of"
DEFAULT_SUFFIX = ",iflyskin"
DTYPE_NAMES = (
    "auto",
    "float32",
    "float16",
    "bfloat16",
)  # data.captioner.DTYPES, without importing torch here


@dataclass(frozen=True)
class CaptionSettings:
    """What decides the captions; saved as ``caption_params.json``."""

    model: str
    prefix: str = DEFAULT_PREFIX
    suffix: str = DEFAULT_SUFFIX
    max_new_tokens: int = 30
    num_beams: int = 1
    convert: bool = False
    version: int = 1


def _carry_files(item: Item, record: Record, image: Decoded, out: Path) -> Record:
    """Put the image (and the condition, if it is a separate file) into ``out``; paths relative."""
    placed = place_image(Path(record.image), image, out / f"images/{item.key}", DEFAULT_PNG_COMPRESSION)
    image_rel = condition_rel = placed.relative_to(out).as_posix()
    if record.conditioning_image != record.image:
        condition = Path(record.conditioning_image)
        condition_rel = f"conditioning_images/{item.key}{condition.suffix.lower()}"
        link_or_copy(condition, out / condition_rel)
    return replace(record, image=image_rel, conditioning_image=condition_rel)


def _decode(item: Item, settings: CaptionSettings) -> tuple[Record, Decoded] | Failure:
    """The item's record and decoded image, or its Failure (found before any model time is spent)."""
    try:
        record = input_record(item)
        if not Path(record.conditioning_image).is_file():
            raise BadInput("conditioning image does not exist", record.conditioning_image)
        return record, read_image(record.image, convert=settings.convert)
    except BadInput as exc:
        return Failure(item.key, exc.path or item.source, exc.reason)


def caption_batch(
    items: list[Item], out: Path, settings: CaptionSettings, device: str = "auto", dtype: str = "auto"
) -> list[Built | Failure]:
    """Batch builder: decode every item (bad ones become Failures), caption the rest in one batch."""
    decoded = [_decode(item, settings) for item in items]
    good = [(item, d) for item, d in zip(items, decoded, strict=True) if not isinstance(d, Failure)]
    captions: dict[str, str] = {}
    if good:
        pictures = [Image.fromarray(image.pixels[:, :, ::-1]) for _, (_, image) in good]
        from data.captioner import load_captioner  # torch + transformers: only when captioning

        captioner = load_captioner(settings.model, device, dtype)
        texts = captioner.caption(pictures, settings.prefix, settings.max_new_tokens, settings.num_beams)
        captions = {item.key: text + settings.suffix for (item, _), text in zip(good, texts, strict=True)}
    results: list[Built | Failure] = []
    for item, result in zip(items, decoded, strict=True):
        if isinstance(result, Failure):
            results.append(result)
        else:
            record, image = result
            carried = _carry_files(item, record, image, out)
            results.append(Built(replace(carried, text=captions[item.key]), image.notes))
    return results


def build_captions(
    source: str | Path,
    out: str | Path,
    settings: CaptionSettings,
    *,
    device: str = "auto",
    dtype: str = "auto",
    batch_size: int = 8,
    strict: bool = False,
    overwrite: bool = False,
    engine: RayOptions | None = None,
) -> BuildSummary:
    """Caption a dataset (jsonl or folder) into ``out``, resumably; with ``engine``, on a Ray actor pool
    (each actor loads the model once; the driver, maybe without the workers' GPUs, never loads it)."""
    if Path(out).resolve() == input_root(source):
        raise ValueError(f"--out {out} is the input's own folder; write the build to a new folder")
    if engine is None:
        from data.captioner import load_captioner

        load_captioner(settings.model, device, dtype)  # a bad model/device: one error up front, not N
    builder = functools.partial(caption_batch, device=device, dtype=dtype)
    items = load_items(source)
    return run_batched(
        "caption",
        builder,
        items,
        out,
        settings,
        batch_size=batch_size,
        strict=strict,
        overwrite=overwrite,
        engine=None if engine is None else replace(engine, gpu_model=device != "cpu"),
    )


def _cmd_caption(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.workers)
    model = args.model
    if Path(model).expanduser().exists():
        model = str(Path(model).expanduser().resolve())  # params compare the same folder however named
    settings = CaptionSettings(
        model, args.prefix, args.suffix, args.max_new_tokens, args.num_beams, args.convert
    )
    summary = build_captions(
        args.input,
        args.out,
        settings,
        device=args.device,
        dtype=args.dtype,
        batch_size=args.batch_size,
        strict=args.strict,
        overwrite=args.overwrite,
        engine=engine_options(args),
    )
    carry_labels(args.input, args.out)
    return exit_status(summary, args.allow_failures)


def add_cli(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``python -m data caption``."""
    parser = sub.add_parser(
        "caption",
        help="caption images with BLIP (prompt prefix + trigger-word suffix)",
        description="Caption every image with BLIP (a local folder or a hub id), prompted with --prefix, "
        "and append --suffix (a trigger word). Batched in one process on CPU or GPU; resumable.",
    )
    add_builder_args(parser)  # the model runs in this process; --workers sets torch's CPU threads
    parser.add_argument(
        "--model", required=True, help="BLIP folder or hub id (e.g. Salesforce/blip-image-captioning-base)"
    )
    parser.add_argument(
        "--prefix", default=DEFAULT_PREFIX, help=f"conditional prompt (default {DEFAULT_PREFIX!r})"
    )
    parser.add_argument(
        "--suffix", default=DEFAULT_SUFFIX, help=f"appended to every caption (default {DEFAULT_SUFFIX!r})"
    )
    parser.add_argument("--batch-size", type=positive_int, default=8, help="images per forward pass (8)")
    parser.add_argument("--device", default="auto", help="auto (GPU if any), cpu, cuda, cuda:1 ...")
    parser.add_argument(
        "--dtype", default="auto", choices=DTYPE_NAMES, help="auto: float16 on GPU, else float32"
    )
    parser.add_argument("--max-new-tokens", type=positive_int, default=30, help="caption length limit (30)")
    parser.add_argument("--num-beams", type=positive_int, default=1, help="beam search width (1 = greedy)")
    parser.set_defaults(func=_cmd_caption)
