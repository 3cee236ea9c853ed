"""Known labels: the true text of each label and where it is, per image, as ``labels.jsonl``.

The glyph builder's OCR is the text loss's ground truth, and OCR misreads single letters ("O" as
"0"), cuts strings ("@/." as "@") and merges neighbours ("Shift" and "符号" as one line). When the
true labels are known, the builder uses them instead (see :mod:`data.label_matching`). They come
from generated skins (``compose`` writes ``labels.jsonl`` from every ``skin.json``) or from a
user's own file in the same format, one line per image::

    {"image": "skin_00000", "labels": [{"text": "Q", "rect": [x0, y0, x1, y1], "box": [x0, y0, x1, y1]}]}

``image`` is the image's file stem (builders keep it), ``rect`` the key (or any region) the label
belongs to, in image pixels: OCR lines are matched to it and never merged across two of them.
``box`` (optional) is the text's own bounding box, where the glyph is drawn when OCR misses it.
A label without ``rect`` is matched by its string alone.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from common.atomic import atomic_write
from data.compose import find_element, placement
from data.layout import LayoutSpec

logger = logging.getLogger(__name__)

__all__ = ["LABELS_FILE", "KnownLabel", "read_labels", "skin_labels", "write_labels"]

LABELS_FILE = "labels.jsonl"
SKIN_META = "skin.json"

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class KnownLabel:
    """A label's true text, the region it belongs to and (optionally) its text box, image pixels."""

    text: str
    rect: Box | None = None
    box: Box | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"text": self.text}
        for name, value in (("rect", self.rect), ("box", self.box)):
            if value is not None:
                out[name] = [round(v, 1) for v in value]
        return out


def _box(value: object, where: str) -> Box | None:
    if value is None:
        return None
    ok = isinstance(value, list) and len(value) == 4 and all(type(v) in (int, float) for v in value)
    if not ok or not (value[0] < value[2] and value[1] < value[3]):  # type: ignore[index]
        raise ValueError(f"{where}: must be [x0, y0, x1, y1] with x0 < x1 and y0 < y1, got {value!r}")
    return tuple(float(v) for v in value)  # type: ignore[return-value, union-attr]


def read_labels(path: str | Path) -> dict[str, list[KnownLabel]]:
    """``{image stem: labels}`` from a labels file; ValueError naming ``file:line`` on a bad line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"labels file {path} does not exist")
    labels: dict[str, list[KnownLabel]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: not JSON ({exc.msg})") from None
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
            raise ValueError(f'{where}: expected {{"image": "<file stem>", "labels": [...]}}')
        items = entry.get("labels")
        if not isinstance(items, list):
            raise ValueError(f"{where}: labels: must be an array")
        parsed = []
        for i, item in enumerate(items):
            if (
                not isinstance(item, dict)
                or not isinstance(item.get("text"), str)
                or not item["text"].strip()
            ):
                raise ValueError(f"{where}: labels[{i}]: needs a non-empty 'text' string")
            rect, box = (
                _box(item.get("rect"), f"{where}: labels[{i}].rect"),
                _box(item.get("box"), f"{where}: labels[{i}].box"),
            )
            parsed.append(KnownLabel(item["text"].strip(), rect, box))
        if entry["image"] in labels:
            raise ValueError(f"{where}: image {entry['image']!r} is listed twice")
        labels[entry["image"]] = parsed
    return labels


def write_labels(path: str | Path, labels: Mapping[str, Iterable[KnownLabel]]) -> None:
    """Write ``labels.jsonl`` atomically, one line per image in the mapping's order."""
    with atomic_write(Path(path)) as handle:
        for image, items in labels.items():
            entry = {"image": image, "labels": [label.to_json() for label in items]}
            handle.write(json.dumps(entry, ensure_ascii=False) + "\n")


def skin_labels(skin_dir: str | Path, layout: LayoutSpec) -> list[KnownLabel] | None:
    """The labels of a generated skin folder on the composed canvas (``skin.json``'s ``keys`` mapped
    through the layout), or None if the folder has no such record (a real skin package)."""
    skin_dir = Path(skin_dir)
    meta_path = skin_dir / SKIN_META
    if not meta_path.is_file():
        return None
    keys = json.loads(meta_path.read_text(encoding="utf-8")).get("keys")
    if not isinstance(keys, dict):
        return None
    labels = []
    for spec in layout.elements:
        path = find_element(skin_dir, spec)
        if path is None or spec.name not in keys:
            continue
        with Image.open(path) as image:
            where = placement(image.size, spec)
        for key in keys[spec.name]:
            rect, box = where.map_box(key["rect"]), where.map_box(key["box"])
            if rect is not None and box is not None:  # cropped away by a cover fit: not in the picture
                labels.append(KnownLabel(key["label"], rect, box))
    return labels
