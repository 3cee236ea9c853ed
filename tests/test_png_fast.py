"""data.png_fast: the same pixels as OpenCV for the PNGs it takes, None (OpenCV's turn) for the rest."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from data.image_io import encode_png, read_image
from data.png_fast import decode_png


def _opencv(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


@pytest.mark.parametrize("shape", [(17, 23, 3), (9, 5), (64, 48, 3), (1, 1, 3)])
@pytest.mark.parametrize("level", [0, 1, 9])
def test_builder_pngs_decode_to_opencvs_pixels(shape: tuple[int, ...], level: int) -> None:
    pixels = np.random.default_rng(level).integers(0, 256, shape, dtype=np.uint8)
    data = encode_png(pixels, level)
    fast = decode_png(data)
    assert fast is not None, "what the builders write takes the fast path"
    assert fast.dtype == np.uint8 and np.array_equal(fast, pixels) and np.array_equal(fast, _opencv(data))


def test_default_opencv_writes_and_none_filter_rows() -> None:
    pixels = np.random.default_rng(1).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    pixels[::3] = 7  # flat rows, to tempt a writer into the None filter
    for params in ([], [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE]):
        ok, buffer = cv2.imencode(".png", pixels, params)
        fast = decode_png(buffer.tobytes())
        assert ok and fast is not None and np.array_equal(fast, pixels)


def _pil_png(image: Image.Image, **save: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **save)
    return buffer.getvalue()


def test_everything_else_is_left_to_opencv() -> None:
    rgb = np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    adaptive = cv2.imencode(".png", rgb, [cv2.IMWRITE_PNG_COMPRESSION, 3])[1].tobytes()
    paeth = cv2.imencode(".png", rgb, [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_PAETH])[1].tobytes()
    good = encode_png(rgb)
    others = {
        "adaptive filters": adaptive,
        "paeth filter": paeth,
        "palette": _pil_png(Image.fromarray(rgb).convert("P")),
        "alpha": _pil_png(Image.fromarray(rgb).convert("RGBA")),
        "transparent colour": _pil_png(Image.fromarray(rgb), transparency=(0, 0, 0)),
        "16-bit": cv2.imencode(".png", rgb.astype(np.uint16) * 257)[1].tobytes(),
        "truncated": good[: len(good) // 2],
        "bad CRC": good[:40] + bytes([good[40] ^ 1]) + good[41:],
        "not a PNG": b"GIF89a" + good[6:],
    }
    for name, data in others.items():
        if name == "adaptive filters" and decode_png(data) is not None:  # a writer may pick Sub anyway
            continue
        assert decode_png(data) is None, name


def test_read_image_is_the_same_either_way(tmp_path: Path) -> None:
    rgb = np.random.default_rng(3).integers(0, 256, (24, 20, 3), dtype=np.uint8)
    fast_file, pil_file, gray_file = tmp_path / "fast.png", tmp_path / "pil.png", tmp_path / "gray.png"
    fast_file.write_bytes(encode_png(rgb[:, :, ::-1]))
    Image.fromarray(rgb).save(pil_file)
    gray_file.write_bytes(encode_png(rgb[:, :, 0]))
    via_fast, via_opencv = read_image(fast_file), read_image(pil_file)
    assert np.array_equal(via_fast.pixels, via_opencv.pixels) and via_fast.notes == via_opencv.notes == ()
    gray = read_image(gray_file)
    assert gray.pixels.shape == (24, 20, 3) and gray.notes == ("grayscale image converted to RGB (lossless)",)
