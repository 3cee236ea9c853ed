"""``data.canny.canny_edges`` computes colour Canny as vector passes: it must equal ``cv2.Canny`` of the
RGB image bit for bit, on real skins and on the small, flat and tie-heavy images where a per-pixel
channel choice or a border could differ."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from data import canny
from data.canny import CannySettings, canny_edges, strongest_channel_gradients

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from bench_canny import opencv_canny, skin  # the reference (cv2.Canny as users call it), 1024² skins


def _random_images(count: int, seed: int = 0) -> list[np.ndarray]:
    """Random sizes from 1x1 up; few grey levels (many equal gradients across channels); blocky ones."""
    rng = np.random.default_rng(seed)
    images = []
    for index in range(count):
        big = index % 2 == 0
        height, width = (int(v) for v in rng.integers(100, 260, 2)) if big else rng.integers(1, 40, 2)
        levels = int(rng.choice([2, 3, 16, 256]))
        image = rng.integers(0, levels, (int(height), int(width), 3), dtype=np.uint8) * (
            255 // max(1, levels - 1)
        )
        if index % 3 == 0:  # blocks: long straight edges and flat areas
            block = image[: max(1, height // 5), : max(1, width // 5)]
            image = np.repeat(np.repeat(block, 5, 0), 5, 1)[:height, :width]
        images.append(np.ascontiguousarray(image))
    return images


@pytest.mark.parametrize("low,high", [(50, 80), (100, 200), (0, 0), (1, 1), (300, 600)])
def test_colour_canny_equals_opencv_on_random_images(low: int, high: int) -> None:
    settings = CannySettings(low=low, high=high)
    for image in _random_images(60, seed=low):
        assert np.array_equal(canny_edges(image, settings), opencv_canny(image, settings)), image.shape


@pytest.mark.parametrize("stripe_pixels", [1, 64, 500])
def test_stripes_join_seamlessly(monkeypatch: pytest.MonkeyPatch, stripe_pixels: int) -> None:
    """Stripes of 1, a few and many rows (the default gives 1024² images 128-row stripes)."""
    monkeypatch.setattr(canny, "STRIPE_PIXELS", stripe_pixels)
    settings = CannySettings()
    for image in _random_images(20, seed=stripe_pixels):
        assert np.array_equal(canny_edges(image, settings), opencv_canny(image, settings)), image.shape


@pytest.mark.parametrize(
    "settings", [CannySettings(), CannySettings(blur=5), CannySettings(gray=True, blur=3)]
)
def test_equals_opencv_on_skins(settings: CannySettings) -> None:
    for index in range(3):
        image = skin(index, size=512)
        edges = canny_edges(image, settings)
        assert edges.any(), "a skin has edges"
        assert np.array_equal(edges, opencv_canny(image, settings))


def test_channel_order_matters_on_these_images() -> None:
    """Equal |dx| + |dy| in two channels with different directions is common in the random images, and
    the channel picked then moves edges: equality above could not hold with B, G, R order."""
    images = _random_images(60)
    differ = [
        not np.array_equal(cv2.Canny(image, 50, 80), opencv_canny(image, CannySettings())) for image in images
    ]
    assert sum(differ) >= 20, "the random images must tell the channel orders apart"


def test_refuses_other_channel_counts() -> None:
    with pytest.raises(ValueError, match="3-channel"):
        strongest_channel_gradients(np.zeros((4, 4, 4), np.uint8))
