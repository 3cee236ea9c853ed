"""Atomic file writers.

Dataset builds are long and get interrupted (Ctrl-C, preemption, full disks). Writing every file
through a temp file + ``os.replace`` means a reader, or a resumed build, only ever sees either the
old complete file or the new complete file, never a truncated one. That is what lets the builders
resume by simply skipping files that already exist.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from PIL import Image

logger = logging.getLogger(__name__)

__all__ = [
    "atomic_save_image",
    "atomic_write",
    "atomic_write_json",
    "atomic_write_text",
    "remove_stale_temp_files",
]


def _read_umask() -> int:
    """Return the process umask. There is no read-only API, so it is set and restored; that is only
    safe before other threads create files, hence it runs once, at import."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _fsync_dir(directory: Path) -> None:
    """Persist the rename itself; best effort because not every OS/filesystem allows it."""
    if os.name != "posix":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a temp file next to ``path`` and move it over ``path`` only if the block succeeds.

    The temp file lives in the same directory so ``os.replace`` is a same-filesystem rename (atomic on
    POSIX and Windows). On any exception the temp file is removed and ``path`` is left untouched.
    Parent directories are created. ``encoding`` is ignored for binary modes.
    """
    if mode not in ("w", "wt", "wb"):
        raise ValueError(f"atomic_write only supports the modes 'w', 'wt' and 'wb', got {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    binary = "b" in mode
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lifetime spans the yield below
        mode=mode,
        encoding=None if binary else encoding,
        delete=False,
        dir=target.parent,
        prefix=f".{target.name}.",
        suffix=".tmp",
    )
    tmp_path = Path(handle.name)
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        # NamedTemporaryFile creates 0600 files; give the result normal permissions so shared
        # datasets stay readable by other users/containers.
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise
    _fsync_dir(target.parent)


def _image_format(path: Path) -> str:
    """Map the file suffix to a PIL format name, because PIL cannot infer it from a file object."""
    suffix = path.suffix.lower()
    fmt = Image.registered_extensions().get(suffix)
    if fmt is None:
        raise ValueError(f"cannot infer an image format from suffix {suffix!r} of {path}")
    return fmt


def atomic_save_image(image: Image.Image, path: str | Path, **save_kwargs: Any) -> None:
    """Save ``image`` atomically; the format comes from the suffix (``.png``, ``.jpg``, ...)."""
    target = Path(path)
    fmt = save_kwargs.pop("format", None) or _image_format(target)
    with atomic_write(target, "wb", encoding=None) as handle:
        image.save(handle, format=fmt, **save_kwargs)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 text atomically."""
    with atomic_write(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 2) -> None:
    """Write ``obj`` as UTF-8 JSON (non-ASCII kept readable) with a trailing newline, atomically."""
    text = json.dumps(obj, indent=indent, ensure_ascii=False, allow_nan=False)
    atomic_write_text(path, text + "\n")


def remove_stale_temp_files(folder: Path) -> int:
    """Removes the temp files that atomic writes killed midway left under `folder` (`.NAME.*.tmp`);
    call it only while no other process writes there. Returns how many were removed."""
    stale = [p for p in folder.rglob(".*.tmp") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        logger.info("Removed %d temp files left by interrupted writes under %s", len(stale), folder)
    return len(stale)
