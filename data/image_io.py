"""Image decode/encode for builders, with one policy for unusual inputs.

Builders work on 8-bit, 3-channel arrays in OpenCV's BGR order (decoding and encoding with OpenCV is
the fast path; the trainer converts everything to RGB on load). Inputs that are not plain 8-bit RGB
are handled by one rule: **a conversion that loses nothing is done and noted; one that loses
something is a failure unless the user passed ``--convert``** (then it is done and noted).

=====================================  =========  =============================================
input                                  lossless?  conversion
=====================================  =========  =============================================
grayscale / bilevel                    yes        gray replicated to 3 channels
palette without transparency           yes        palette expanded
alpha channel, every pixel opaque      yes        alpha dropped
alpha with transparent pixels          no         composited onto white
16-bit                                 no         rounded to 8-bit
CMYK                                   no         PIL's naive CMYK→RGB (no ICC colour management)
=====================================  =========  =============================================

Unreadable, zero-byte, non-image, truncated and other-depth (float) files are always failures
(:class:`data.build_types.BadInput`). Notes end up in the build summary, so nothing changes silently.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from common.atomic import atomic_write
from data.build_types import BadInput
from data.png_fast import PNG_SIGNATURE, decode_png

__all__ = [
    "DEFAULT_PNG_COMPRESSION",
    "Decoded",
    "encode_png",
    "link_or_copy",
    "place_image",
    "read_image",
    "write_png",
]

# Level 1 is ~3x faster to encode than OpenCV's default 3, and only slightly larger on edge maps and
# skins (measured in bench/bench_canny.py).
DEFAULT_PNG_COMPRESSION = 1
# Every row with PNG's Sub filter, as cv2.imwrite does without parameters, instead of libpng's adaptive
# choice per row: ~1.6x faster to encode a 1024² skin, ~5 % larger, and decodable by the fast path of
# data.png_fast (bench/bench_builders.py).
_SUB_FILTER = (cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB)
_WHITE = 255


@dataclass(frozen=True)
class Decoded:
    """An 8-bit BGR image; ``notes`` says what was converted to get there (empty: nothing)."""

    pixels: np.ndarray
    notes: tuple[str, ...] = ()

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), PIL order, as records and messages use it."""
        return self.pixels.shape[1], self.pixels.shape[0]


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BadInput("file does not exist", path) from None
    except OSError as exc:
        raise BadInput(f"cannot read file: {exc.strerror or exc}", path) from None
    if not data:
        raise BadInput("zero-byte file", path)
    return data


def _probe_mode(data: bytes, path: Path) -> str:
    """PIL's mode from the header only (cheap); OpenCV cannot tell CMYK or palette apart."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.mode
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise BadInput(f"not a readable image ({type(exc).__name__})", path) from None
    except (OSError, SyntaxError, ValueError) as exc:  # corrupt headers raise any of these
        raise BadInput(f"corrupt image header ({type(exc).__name__}: {exc})", path) from None


def _lossy(what: str, how: str, convert: bool, path: Path) -> str:
    """The note for a lossy conversion, or the failure if the user did not allow it."""
    if not convert:
        raise BadInput(f"{what}: converting {how}; pass --convert to accept that", path)
    return f"{what} converted ({how}, --convert)"


def _to_8bit(pixels: np.ndarray, convert: bool, path: Path, notes: list[str]) -> np.ndarray:
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype != np.uint16:
        raise BadInput(f"unsupported sample type {pixels.dtype} (only 8- and 16-bit images)", path)
    notes.append(_lossy("16-bit image", "to 8-bit loses precision", convert, path))
    return ((pixels.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _to_three_channels(pixels: np.ndarray, convert: bool, path: Path, notes: list[str]) -> np.ndarray:
    if pixels.ndim == 2:
        notes.append("grayscale image converted to RGB (lossless)")
        return cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR)
    if pixels.shape[2] == 3:
        return pixels
    alpha = pixels[:, :, 3]
    if alpha.min() == _WHITE:
        notes.append("opaque alpha channel dropped (lossless)")
        return np.ascontiguousarray(pixels[:, :, :3])
    notes.append(_lossy("image with transparent pixels", "onto white drops the alpha channel", convert, path))
    weight = alpha[:, :, None].astype(np.float32) / 255.0
    blended = pixels[:, :, :3].astype(np.float32) * weight + _WHITE * (1.0 - weight)
    return np.rint(blended).astype(np.uint8)


def read_image(path: str | Path, convert: bool = False) -> Decoded:
    """Decode ``path`` to 8-bit BGR under the module's conversion policy; raise BadInput if unusable.

    EXIF orientation is ignored, as the trainer's PIL loader ignores it. Plain 8-bit RGB and gray PNGs
    as OpenCV writes them take :func:`data.png_fast.decode_png` (the same pixels, ~2x faster).
    """
    path = Path(path)
    data = _read_bytes(path)
    notes: list[str] = []
    fast = decode_png(data)
    if fast is not None:
        return Decoded(_to_three_channels(fast, convert, path, notes), tuple(notes))
    mode = _probe_mode(data, path)
    if mode == "CMYK":
        notes.append(_lossy("CMYK image", "to RGB without colour management shifts colours", convert, path))
        with Image.open(io.BytesIO(data)) as image:
            rgb = np.asarray(image.convert("RGB"))
        return Decoded(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), tuple(notes))
    flags = cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if pixels is None:
        raise BadInput("cannot decode image (truncated or corrupt)", path)
    pixels = _to_8bit(pixels, convert, path, notes)
    pixels = _to_three_channels(pixels, convert, path, notes)
    if mode == "P" and pixels.ndim == 3 and not notes:
        notes.append("palette image converted to RGB (lossless)")
    return Decoded(pixels, tuple(notes))


def encode_png(
    pixels: np.ndarray, compression: int = DEFAULT_PNG_COMPRESSION, bilevel: bool = False
) -> bytes:
    """PNG bytes of a BGR (or single-channel) uint8 array. ``bilevel`` writes a 1-bit PNG of
    ``pixels > 0``: lossless for a 0/255 map (edges), ~8x less to compress; read back as 0/255."""
    if bilevel:
        return _encode_bilevel(pixels, compression)
    ok, buffer = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, compression, *_SUB_FILTER])
    if not ok:
        raise ValueError(f"OpenCV could not encode a {pixels.shape} {pixels.dtype} array as PNG")
    return buffer.tobytes()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _encode_bilevel(mask: np.ndarray, compression: int) -> bytes:
    """1-bit grayscale PNG by hand: numpy bit-packing + zlib is ~3x faster than OpenCV's bilevel
    writer (which packs per pixel), and the files are identical in size."""
    if mask.ndim != 2:
        raise ValueError(f"a bilevel PNG needs a single-channel mask, got shape {mask.shape}")
    height, width = mask.shape
    packed = np.packbits(mask > 0, axis=1)
    rows = np.zeros((height, packed.shape[1] + 1), np.uint8)  # column 0: filter type 0 (none)
    rows[:, 1:] = packed
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, grayscale, no interlace
    return b"".join(
        (
            PNG_SIGNATURE,
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), compression)),
            _png_chunk(b"IEND", b""),
        )
    )


def write_png(
    path: str | Path, pixels: np.ndarray, compression: int = DEFAULT_PNG_COMPRESSION, bilevel: bool = False
) -> None:
    """Encode (see :func:`encode_png`) and write atomically (temp file + rename)."""
    data = encode_png(pixels, compression, bilevel)
    with atomic_write(path, "wb", encoding=None) as handle:
        handle.write(data)


def link_or_copy(source: str | Path, target: str | Path) -> None:
    """Put ``source``'s bytes at ``target`` atomically: a hard link when the filesystem allows it
    (instant, no extra space; safe because every writer here replaces files, never edits them in
    place), else a copy."""
    target = Path(target)
    if target.exists() and os.path.samefile(source, target):
        return  # renaming a link over another link to the same file would be a silent no-op
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.link")
    try:
        os.link(source, tmp)
    except OSError:  # cross-device, or a filesystem without hard links
        with open(source, "rb") as src, atomic_write(target, "wb", encoding=None) as dst:
            shutil.copyfileobj(src, dst)
        return
    os.replace(tmp, target)


def place_image(source: Path, image: Decoded, stem: Path, compression: int = DEFAULT_PNG_COMPRESSION) -> Path:
    """Put a decoded input image at ``stem`` + suffix; return the path written. Unconverted images
    keep their bytes (:func:`link_or_copy`, no re-encode); converted ones are written as PNG."""
    if image.notes:
        target = stem.with_name(stem.name + ".png")
        write_png(target, image.pixels, compression)
    else:
        target = stem.with_name(stem.name + source.suffix.lower())
        link_or_copy(source, target)
    return target
