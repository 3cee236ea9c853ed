"""Builder inputs: a fill50k-style ``train.jsonl`` or a plain folder of images with sidecar captions.

Both become :class:`data.build_types.Item` lists. A jsonl gives one item per record, keyed by its image's
file stem (``skin_00000``), so every builder's outputs keep the input's names and stay traceable
through a chain; stems that repeat get ``_<line index>`` appended. Paths are made absolute. A folder
gives one item per image file, found recursively in sorted order, keyed by its relative path without
suffix (``red/skin01``), so outputs keep the user's names. Its caption comes from a ``.txt`` file of
the same stem, read in the worker by :func:`input_record` so that a non-UTF-8 caption is that item's
reported failure, not a crash.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import replace
from pathlib import Path

from data.build_types import BadInput, Item
from data.records import Record, read_records, resolve_path

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGE_SUFFIXES",
    "input_record",
    "input_root",
    "items_from_folder",
    "items_from_jsonl",
    "load_items",
]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})
CAPTION_SUFFIX = ".txt"


def items_from_jsonl(jsonl: str | Path) -> list[Item]:
    """One item per record. Schema errors are fatal (DatasetError, fix with ``validate``); missing or
    broken image files are not checked here: they become per-item failures in the builder."""
    jsonl = Path(jsonl)
    root = jsonl.parent
    records = [
        replace(
            record,
            image=str(resolve_path(root, record.image)),
            conditioning_image=str(resolve_path(root, record.conditioning_image)),
        )
        for record in read_records(jsonl, check_files=False)
    ]
    stems = Counter(Path(record.image).stem for record in records)
    items = []
    for index, record in enumerate(records):
        stem = Path(record.image).stem
        key = stem if stems[stem] == 1 and stem else f"{stem}_{index:06d}"
        items.append(Item(key=key, source=record.image, record=record))
    return items


def items_from_folder(folder: str | Path) -> list[Item]:
    """One item per image file under ``folder`` (hidden files and folders skipped), sorted by path."""
    folder = Path(folder)
    paths = sorted(
        path
        for path in folder.rglob("*")
        if path.suffix.lower() in IMAGE_SUFFIXES
        and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )
    stems = Counter(path.relative_to(folder).with_suffix("").as_posix() for path in paths)
    items = []
    for path in paths:
        rel = path.relative_to(folder)
        stem = rel.with_suffix("").as_posix()
        # ``a.png`` and ``a.jpg`` side by side would collide; keep the suffix in their keys.
        key = stem if stems[stem] == 1 else rel.as_posix().replace(".", "_")
        items.append(Item(key=key, source=str(path)))
    if not items:
        raise ValueError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found under {folder}")
    return items


def load_items(path: str | Path) -> list[Item]:
    """Items from a ``.jsonl`` file, a dataset folder holding ``train.jsonl``, or a folder of images."""
    path = Path(path)
    if path.is_file():
        return items_from_jsonl(path)
    if (path / "train.jsonl").is_file():
        logger.info("%s is a dataset folder; reading %s", path, path / "train.jsonl")
        return items_from_jsonl(path / "train.jsonl")
    if path.is_dir():
        return items_from_folder(path)
    raise FileNotFoundError(f"input {path} does not exist")


def input_root(path: str | Path) -> Path:
    """The folder an input's files live in (to refuse writing a build over its own input)."""
    path = Path(path)
    return (path.parent if path.is_file() else path).resolve()


def _read_caption(image: Path) -> str:
    """The sidecar caption of ``image`` (stripped), '' if there is none; BadInput if not UTF-8."""
    caption = image.with_suffix(CAPTION_SUFFIX)
    try:
        raw = caption.read_bytes()
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise BadInput(f"cannot read caption file: {exc.strerror or exc}", caption) from None
    try:
        return raw.decode("utf-8").removeprefix("\ufeff").strip()
    except UnicodeDecodeError as exc:
        raise BadInput(f"caption file is not UTF-8 ({exc.reason} at byte {exc.start})", caption) from None


def input_record(item: Item) -> Record:
    """The item's input record. A raw image has no condition yet, so it stands in as its own
    condition until a builder (canny, glyph) makes one; that keeps every record valid."""
    if item.record is not None:
        return item.record
    image = Path(item.source)
    return Record(text=_read_caption(image), image=str(image), conditioning_image=str(image))
