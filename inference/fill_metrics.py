"""Is the circle where the condition says? IoU of a generated fill image's circle with the condition's disk.

For fill50k-style records (a filled circle of one named colour on another, conditioned on its outline):
the condition's disk is everything the outline encloses (pixels not reachable from the border without
crossing the outline); the generated circle is the image's foreground colour cluster, whatever its
colour. Edge F1 says the image has edges where the outline is; this says the right thing
was drawn inside them.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image, ImageColor

from data.fill import COLOURS

__all__ = [
    "circle_hue_error",
    "circle_iou",
    "clean_circle",
    "condition_disk",
    "fill_colours",
    "generated_circle",
    "two_colours",
]

_KMEANS_ITERATIONS = 10
CLEAN_CIRCULARITY = 0.8
"""4πA/P² of the foreground's outer contour: 1 for a perfect disk, ~0.9 for a digitised one at r ≈ 10 px,
0.785 for a square; blobs and scattered shapes fall well below."""
CLEAN_FLATNESS = 20.0
"""Largest mean RGB distance of the pixels to their own cluster's colour for an image to be two flat
colours (anti-aliased edges alone give ~3-6 at 128²; texture or noise gives 20+)."""
CLEAN_SPECKS = 0.01
"""Foreground outside the largest component, as a share of the image, still counted as one shape."""
_WORDS_TO_RGB = {words: ImageColor.getrgb(key)[:3] for key, words in COLOURS.items()}


def fill_colours(prompt: str) -> tuple[tuple[int, int, int], tuple[int, int, int]] | None:
    """(circle, background) RGB named by a fill prompt "<a> circle with <b> background", else None."""
    head, sep, tail = prompt.partition(" circle with ")
    if not sep or not tail.endswith(" background"):
        return None
    circle, background = _WORDS_TO_RGB.get(head), _WORDS_TO_RGB.get(tail.removesuffix(" background"))
    return (circle, background) if circle and background else None


def condition_disk(condition: Image.Image, size: tuple[int, int] | None = None) -> np.ndarray:
    """Boolean mask of the outline and what it encloses, at `size` (default the condition's)."""
    grey = np.asarray(condition.convert("L"))
    # A one-pixel frame of background lets one flood fill from a corner reach all the outside.
    outside = np.pad((grey > 127).astype(np.uint8), 1)
    cv2.floodFill(outside, None, (0, 0), 2)
    outside = outside[1:-1, 1:-1]
    disk = outside != 2
    if size is not None and size != condition.size:
        disk = cv2.resize(disk.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
    return disk


def generated_circle(image: Image.Image, prompt: str) -> np.ndarray | None:
    """The image's foreground: its pixels split into two colour clusters (2-means, seeded with the
    border's median colour and the pixel farthest from it), the cluster not of the border. None for a
    non-fill prompt.

    Colour-agnostic on purpose: the question is whether a circle was drawn where the outline is, and a
    small base may draw it in other colours than the prompt names (the tiny base does). Noise splits
    into scattered clusters that overlap a disk little, so it still scores low.
    """
    if fill_colours(prompt) is None:
        return None
    return two_colours(image)[0]


def two_colours(image: Image.Image) -> tuple[np.ndarray, float]:
    """The 2-means split of `generated_circle` (foreground mask) and the mean RGB distance of every pixel
    to its own cluster's mean colour (0 for an image of two flat colours)."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    flat = pixels.reshape(-1, 3)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    background = np.median(border, axis=0)
    foreground = flat[np.argmax(np.linalg.norm(flat - background, axis=1))]
    for _ in range(_KMEANS_ITERATIONS):
        is_foreground = np.linalg.norm(flat - foreground, axis=1) < np.linalg.norm(flat - background, axis=1)
        if is_foreground.all() or not is_foreground.any():
            break
        foreground, background = flat[is_foreground].mean(axis=0), flat[~is_foreground].mean(axis=0)
    centres = np.where(is_foreground[:, None], foreground, background)
    spread = float(np.linalg.norm(flat - centres, axis=1).mean())
    return is_foreground.reshape(pixels.shape[:2]), spread


def clean_circle(image: Image.Image) -> bool:
    """One clean closed shape on a flat background: the image is two flat colours (`CLEAN_FLATNESS`),
    its foreground one component (up to `CLEAN_SPECKS` of stray pixels) that does not touch the border,
    and that component round (`CLEAN_CIRCULARITY`). What a fill sample should be, with or without a
    ControlNet; colour-agnostic like `generated_circle`."""
    mask, spread = two_colours(image)
    if spread > CLEAN_FLATNESS or not mask.any():
        return False
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    area = int(stats[largest, cv2.CC_STAT_AREA])
    if mask.sum() - area > CLEAN_SPECKS * mask.size:
        return False
    shape = (labels == largest).astype(np.uint8)
    if shape[0].any() or shape[-1].any() or shape[:, 0].any() or shape[:, -1].any():
        return False
    contours, _ = cv2.findContours(shape, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    contour = max(contours, key=cv2.contourArea)
    perimeter = cv2.arcLength(contour, closed=True)
    return perimeter > 0 and 4 * np.pi * cv2.contourArea(contour) / perimeter**2 >= CLEAN_CIRCULARITY


def circle_iou(image: Image.Image, condition: Image.Image, prompt: str) -> float | None:
    """IoU of the generated circle with the condition's disk; None for a non-fill prompt."""
    circle = generated_circle(image, prompt)
    if circle is None:
        return None
    disk = condition_disk(condition, image.size)
    union = (circle | disk).sum()
    return float((circle & disk).sum() / union) if union else 1.0


MIN_HUE_SATURATION = 0.25
"""Colours less saturated than this (HSV) have no meaningful hue: white, black, greys, pale tints."""


def _hue_saturation(rgb: np.ndarray) -> tuple[float, float]:
    """HSV hue (degrees) and saturation of one RGB colour (0-255 floats)."""
    pixel = np.clip(np.round(rgb), 0, 255).astype(np.uint8).reshape(1, 1, 3)
    h, s, _ = cv2.cvtColor(pixel, cv2.COLOR_RGB2HSV_FULL)[0, 0]
    return float(h) * 360.0 / 256.0, float(s) / 255.0


def circle_hue_error(image: Image.Image, condition: Image.Image, prompt: str) -> float | None:
    """Degrees between the hue the prompt names for the circle and the mean colour drawn inside the
    condition's disk (its edge eroded away); None for a non-fill prompt or a circle colour without a hue
    (`MIN_HUE_SATURATION`). Does the ControlNet's circle take the prompt's colour?"""
    colours = fill_colours(prompt)
    if colours is None:
        return None
    hue, saturation = _hue_saturation(np.asarray(colours[0], dtype=np.float64))
    if saturation < MIN_HUE_SATURATION:
        return None
    disk = cv2.erode(condition_disk(condition, image.size).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    if not disk.any():
        return None
    drawn = np.asarray(image.convert("RGB"), dtype=np.float64)[disk].mean(axis=0)
    difference = abs(_hue_saturation(drawn)[0] - hue) % 360.0
    return min(difference, 360.0 - difference)
