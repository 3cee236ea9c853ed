"""A fast path for decoding the PNGs the builders themselves write: ISA-L inflate + numpy unfiltering.

Decoding a 1024² PNG costs more than the Canny it feeds (14.5 vs 10 ms per core, bench/RESULTS.md),
and ~75 % of the decode is inflating with the zlib 1.2 that OpenCV's wheel links. ISA-L (``isal``)
inflates ~3x faster. The other part, undoing PNG's per-row filters, is sequential along a row for the
Average and Paeth filters, but OpenCV writes every row with the *Sub* filter (each byte minus the one a
pixel to its left), and undoing Sub is a running sum along the row modulo 256: ``np.cumsum`` with a
uint8 accumulator, all rows at once, written straight into BGR order.

So :func:`decode_png` takes 8-bit, non-interlaced gray or RGB PNGs whose rows all use the None or Sub
filter (what ``cv2.imwrite``/``cv2.imencode`` and so every builder here write), checks every chunk's
CRC as libpng does, and returns exactly the pixels ``cv2.imdecode`` returns. Anything else (palette,
alpha or a transparent colour, 16-bit, interlaced, other filters as PIL and most other writers choose,
a corrupt or truncated file) returns None, and the caller decodes with OpenCV, which also reports the
errors.
"""

from __future__ import annotations

import struct

import numpy as np
from isal import isal_zlib

__all__ = ["PNG_SIGNATURE", "decode_png"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3}  # colour type -> samples per pixel (gray, RGB)
# Chunks that change no pixel OpenCV decodes (it does no colour management); any other one (PLTE, tRNS,
# an unknown critical chunk) sends the file to OpenCV.
_IGNORED = frozenset(
    {b"sRGB", b"gAMA", b"cHRM", b"iCCP", b"pHYs", b"tEXt", b"zTXt", b"iTXt", b"tIME", b"bKGD"}
)
_FILTER_NONE, _FILTER_SUB = 0, 1


def _idat(data: bytes) -> tuple[bytes, bytes] | None:
    """(IHDR payload, concatenated IDAT payloads), every CRC checked; None for anything unusual."""
    header, parts, pos = None, [], len(PNG_SIGNATURE)
    view = memoryview(data)
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        kind = bytes(view[pos + 4 : pos + 8])
        end = pos + 8 + length
        if end + 4 > len(data):
            return None  # truncated
        (crc,) = struct.unpack_from(">I", data, end)
        if isal_zlib.crc32(view[pos + 4 : end]) != crc:
            return None
        if kind == b"IHDR":
            header = bytes(view[pos + 8 : end])
        elif kind == b"IDAT":
            parts.append(view[pos + 8 : end])
        elif kind == b"IEND":
            return None if header is None or not parts else (header, b"".join(parts))
        elif kind not in _IGNORED:
            return None
        pos = end + 4
    return None


def decode_png(data: bytes) -> np.ndarray | None:
    """BGR (or gray) uint8 pixels of a plain 8-bit PNG with None/Sub row filters, else None."""
    if not data.startswith(PNG_SIGNATURE):
        return None
    chunks = _idat(data)
    if chunks is None:
        return None
    header, compressed = chunks
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    channels = _CHANNELS.get(colour)
    if depth != 8 or channels is None or interlace != 0 or width == 0 or height == 0:
        return None
    stride = 1 + width * channels
    try:
        raw = isal_zlib.decompress(compressed)
    except isal_zlib.error:
        return None
    if len(raw) != stride * height:
        return None
    rows = np.frombuffer(raw, np.uint8).reshape(height, stride)
    filters = rows[:, 0]
    if filters.max() > _FILTER_SUB:
        return None
    samples = rows[:, 1:].reshape(height, width, channels)
    if channels == 3:
        samples = samples[:, :, ::-1]  # PNG stores RGB; the sum below writes BGR, no extra copy
    pixels = np.cumsum(samples, axis=1, dtype=np.uint8)  # undoes Sub: x[i] = f[i] + x[i - 1 pixel]
    plain = filters == _FILTER_NONE
    if plain.any():
        pixels[plain] = samples[plain]
    return pixels if channels == 3 else pixels[:, :, 0]
