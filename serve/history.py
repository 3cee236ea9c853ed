"""The playground's autosave: every output as a PNG with its metadata, and a line in history.jsonl.

Layout of the history folder::

    images/<n:06d>_<checkpoint>_s<seed>.png   the output; metadata in PNG text chunks (serve.images)
    conditions/<sha1>.png                     the control image, stored once however often it is used
    history.jsonl                             one JSON object per output: the metadata + both paths

The jsonl is what the history gallery lists and what a re-run reads back; the PNG alone is enough to
know how an image was made, even when it travels without the jsonl.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import threading
from pathlib import Path
from typing import Any

from PIL import Image

from common.atomic import atomic_write
from serve.images import png_bytes

logger = logging.getLogger(__name__)

__all__ = ["HISTORY_FILE", "History"]

HISTORY_FILE = "history.jsonl"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def _write(path: Path, data: bytes) -> None:
    with atomic_write(path, "wb", encoding=None) as file:
        file.write(data)


class History:
    """Append-only store of playground outputs; thread-safe (Gradio runs handlers in threads)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    @property
    def jsonl(self) -> Path:
        return self.folder / HISTORY_FILE

    def _save_condition(self, condition: Image.Image) -> str:
        buffer = io.BytesIO()
        condition.save(buffer, format="PNG")
        data = buffer.getvalue()
        relative = f"conditions/{hashlib.sha1(data).hexdigest()}.png"
        if not (self.folder / relative).exists():
            _write(self.folder / relative, data)
        return relative

    def save(self, image: Image.Image, condition: Image.Image, metadata: dict[str, Any]) -> dict[str, Any]:
        """Write the image and its history line; returns the entry (metadata + paths + index)."""
        with self._lock:
            index = len(self.entries())
            checkpoint = _UNSAFE.sub("-", str(metadata.get("checkpoint", "image")))
            name = f"{index:06d}_{checkpoint}_s{metadata.get('seed')}"
            entry = {**metadata, "index": index, "image_path": f"images/{name}.png"}
            entry["condition_path"] = self._save_condition(condition)
            _write(self.folder / entry["image_path"], png_bytes(image, metadata))
            with self.jsonl.open("a", encoding="utf-8") as lines:
                lines.write(json.dumps(entry, sort_keys=True) + "\n")
        logger.info("saved %s", entry["image_path"])
        return entry

    def entries(self) -> list[dict[str, Any]]:
        """Every saved entry, oldest first (a line cut by a crash is skipped)."""
        if not self.jsonl.is_file():
            return []
        entries = []
        for line in self.jsonl.read_text(encoding="utf-8").splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                logger.warning("skipping a broken line of %s", self.jsonl)
        return entries

    def path(self, entry: dict[str, Any], key: str) -> Path:
        return self.folder / entry[key]
