"""Convert the rec ONNX once and keep the result as safetensors + a charset file.

The cache folder is keyed by the SHA-256 of the ONNX file, so a different model (or a re-exported one)
never reuses stale weights, and by a format version, so a change to the conversion invalidates old
entries. Files are written atomically (temp file + rename): concurrent ranks converting at the same
time, or an interrupted conversion, can never leave a half-written file that a later load trusts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save

from common.atomic import atomic_write, atomic_write_text
from recognizer.onnx_import import import_rec_onnx

__all__ = ["FORMAT", "ConvertedWeights", "default_cache_dir", "load_or_convert"]

logger = logging.getLogger(__name__)

FORMAT = "skinforge-recnet-1"
"""Stored in the safetensors metadata; bump when RecNet or the conversion changes."""
WEIGHTS_FILE = "weights.safetensors"
CHARSET_FILE = "charset.json"


@dataclass
class ConvertedWeights:
    state_dict: dict[str, torch.Tensor]
    characters: list[str]
    folder: Path
    converted: bool
    """True when this call ran the conversion, False when it was read from the cache."""


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/skinforge/recognizer`` (``~/.cache/skinforge/recognizer`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "skinforge" / "recognizer"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _is_complete(folder: Path) -> bool:
    weights = folder / WEIGHTS_FILE
    if not (weights.is_file() and (folder / CHARSET_FILE).is_file()):
        return False
    with safe_open(str(weights), framework="pt") as handle:
        return (handle.metadata() or {}).get("format") == FORMAT


def load_or_convert(onnx_path: Path, cache_dir: Path | None = None) -> ConvertedWeights:
    """RecNet state dict and characters for ``onnx_path``, converting it on the first call only."""
    sha = _sha256(onnx_path)
    folder = (cache_dir or default_cache_dir()) / sha[:16]
    converted = not _is_complete(folder)
    if converted:
        logger.info("converting %s into %s", onnx_path, folder)
        state, characters = import_rec_onnx(onnx_path)
        # The charset goes first: the weights file is what marks an entry complete.
        atomic_write_text(folder / CHARSET_FILE, json.dumps(characters, ensure_ascii=False) + "\n")
        metadata = {"format": FORMAT, "source": onnx_path.name, "sha256": sha}
        with atomic_write(folder / WEIGHTS_FILE, "wb", encoding=None) as handle:
            handle.write(save(state, metadata=metadata))
    else:
        logger.debug("using cached recognizer weights in %s", folder)
    characters = json.loads((folder / CHARSET_FILE).read_text(encoding="utf-8"))
    return ConvertedWeights(load_file(str(folder / WEIGHTS_FILE)), characters, folder, converted)
