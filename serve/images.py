"""Images in and out of the service: decode uploads within limits, Canny on the fly, PNG with metadata.

Uploads are checked by their header before decoding (a small PNG can declare a gigapixel), and
every decode failure names the field. Output PNGs carry the metadata as text chunks, as the
playground's autosaved files do, so a downloaded image still says how it was made.
"""

from __future__ import annotations

import io
import json
import warnings
from typing import Any

import cv2
import numpy as np
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from data.canny import CannySettings, canny_edges
from serve.config import Limits
from serve.errors import RequestError

__all__ = ["METADATA_CHUNK", "canny_condition", "decode_image", "png_bytes", "read_png_metadata"]

METADATA_CHUNK = "skinforge"
"""PNG text chunk holding the metadata as JSON; ``parameters`` holds the prompt line tools show."""


def decode_image(field: str, data: bytes, limits: Limits) -> Image.Image:
    """RGB image from uploaded bytes; 413 when too large (bytes or pixels), 400 when undecodable."""
    if len(data) > limits.max_image_bytes:
        raise RequestError(field, f"image of {len(data)} bytes is larger than {limits.max_image_bytes}", 413)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > limits.max_image_pixels:
                raise RequestError(
                    field, f"image of {width}x{height} pixels is larger than {limits.max_image_pixels}", 413
                )
            image.load()
    except UnidentifiedImageError as err:
        raise RequestError(field, "not a decodable image (unknown or broken format)", 400) from err
    except (OSError, SyntaxError, ValueError) as err:
        raise RequestError(field, f"not a decodable image ({type(err).__name__}: {err})", 400) from err
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise RequestError(field, f"image too large to decode ({err})", 413) from err
    return image.convert("RGB")


def canny_condition(source: Image.Image, low: int, high: int) -> Image.Image:
    """The control image of ``source`` with the dataset builder's own Canny (data.canny)."""
    bgr = cv2.cvtColor(np.asarray(source.convert("RGB")), cv2.COLOR_RGB2BGR)
    edges = canny_edges(bgr, CannySettings(low=low, high=high))
    return Image.fromarray(edges).convert("RGB")


def png_bytes(image: Image.Image, metadata: dict[str, Any]) -> bytes:
    """PNG of ``image`` with ``metadata`` as JSON in a text chunk (plus the prompt as ``parameters``)."""
    info = PngImagePlugin.PngInfo()
    info.add_itxt(METADATA_CHUNK, json.dumps(metadata, sort_keys=True))
    if "prompt" in metadata:
        info.add_itxt("parameters", str(metadata["prompt"]))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def read_png_metadata(data: bytes) -> dict[str, Any]:
    """The metadata ``png_bytes`` wrote (empty when the PNG has none)."""
    with Image.open(io.BytesIO(data)) as image:
        text = image.text.get(METADATA_CHUNK)  # type: ignore[attr-defined]
    return json.loads(text) if text else {}
