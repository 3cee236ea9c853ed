"""Differentiable text-line crops from 4-point boxes, batched over every box of a batch of images.

Geometry (where to sample) is computed from the boxes, which are data; the sampling itself is one
``grid_sample`` call, so gradients flow from the crops back into the image pixels. This mirrors
PP-OCR's own line cropping (``get_rotate_crop_image`` + ``resize_norm_img``): the line's rectangle is
warped upright, lines much taller than wide are turned 90° counter-clockwise (vertical text reads
left to right afterwards), the result is scaled to height 48 with its aspect ratio kept and padded on
the right with 0 (mid-grey in [-1, 1], PP-OCR's padding value) to a fixed width.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["BoxesLike", "LineCrops", "as_box_array", "crop_lines", "line_frames"]

BoxesLike = torch.Tensor | np.ndarray | Sequence[Sequence[Sequence[float]]]
"""The boxes of one image: ``(K, 4, 2)`` pixel ``(x, y)`` points, clockwise from the text's top-left."""

TALL_RATIO = 1.5
"""A line whose height is at least this times its width is read as vertical text (PP-OCR's rule)."""


@dataclass
class LineCrops:
    crops: torch.Tensor
    """``(K, 3, height, width)`` crops of all boxes of all images, image by image, box by box."""
    image_index: torch.Tensor
    """``(K,)`` which image each crop came from."""
    widths: torch.Tensor
    """``(K,)`` columns holding text; the rest is padding."""


def _min_area_corners(polygon: np.ndarray) -> np.ndarray:
    """Corners of the polygon's minimum-area rectangle, in the polygon's own corner order.

    ``cv2.boxPoints`` starts at an arbitrary corner; of its 8 cyclic orders (4 starts x 2 directions)
    the one closest to the given points keeps which side is the text's top-left.
    """
    corners = cv2.boxPoints(cv2.minAreaRect(polygon.astype(np.float32))).astype(np.float64)
    candidates = [np.roll(order, -shift, axis=0) for order in (corners, corners[::-1]) for shift in range(4)]
    costs = [np.square(candidate - polygon).sum() for candidate in candidates]
    return candidates[int(np.argmin(costs))]


def line_frames(boxes: np.ndarray, height: int, max_width: int) -> tuple[np.ndarray, np.ndarray]:
    """Per box: an affine frame ``(origin, x axis, y axis)`` ``(K, 3, 2)`` and its crop width ``(K,)``.

    A crop pixel at fractions ``(u, v)`` of the line's width and height samples the image at
    ``origin + u * x_axis + v * y_axis``.
    """
    frames = np.zeros((len(boxes), 3, 2))
    widths = np.zeros(len(boxes), dtype=np.int64)
    for k, polygon in enumerate(boxes):
        tl, tr, br, bl = _min_area_corners(polygon)
        if np.linalg.norm(bl - tl) >= TALL_RATIO * np.linalg.norm(tr - tl):
            tl, tr, br, bl = tr, br, bl, tl  # turn vertical text 90° counter-clockwise
        frames[k] = (tl, tr - tl, bl - tl)
        line_w, line_h = max(np.linalg.norm(tr - tl), 1.0), max(np.linalg.norm(bl - tl), 1.0)
        widths[k] = min(max(int(np.ceil(height * line_w / line_h)), 1), max_width)
    return frames, widths


def as_box_array(boxes: BoxesLike) -> np.ndarray:
    """One image's boxes as a ``(K, 4, 2)`` float64 array."""
    if isinstance(boxes, torch.Tensor):
        boxes = boxes.detach().cpu().numpy()
    array = np.asarray(boxes, dtype=np.float64).reshape(-1, 4, 2)
    if not np.isfinite(array).all():
        raise ValueError("boxes contain non-finite coordinates")
    return array


def crop_lines(
    images: torch.Tensor, boxes: Sequence[BoxesLike], height: int = 48, width: int = 320
) -> LineCrops:
    """Crop every box of every image of ``images`` ``(B, C, H, W)``; ``boxes[b]`` are image b's boxes.

    All crops come from a single ``grid_sample`` over the batch: the crops of one image are stacked
    along the grid's height, so no image is copied per box.
    """
    if images.ndim != 4 or len(boxes) != images.shape[0]:
        raise ValueError(
            f"expected (B, C, H, W) images and B box lists, got {tuple(images.shape)}, {len(boxes)}"
        )
    per_image = [as_box_array(b) for b in boxes]
    counts = [len(b) for b in per_image]
    total, most = sum(counts), max(counts, default=0)
    device = images.device
    if total == 0:
        empty = images.new_zeros((0, images.shape[1], height, width), dtype=torch.float32)
        none = torch.zeros(0, dtype=torch.long, device=device)
        return LineCrops(empty, none, none)

    frames, widths = line_frames(np.concatenate(per_image), height, width)
    frame_t = torch.as_tensor(frames, dtype=torch.float32, device=device)
    width_t = torch.as_tensor(widths, device=device)
    u = (torch.arange(width, device=device) + 0.5) / width_t[:, None]  # (K, width)
    v = (torch.arange(height, device=device) + 0.5) / height  # (height,)
    points = (
        frame_t[:, None, None, 0]
        + u[:, None, :, None] * frame_t[:, None, None, 1]
        + v[None, :, None, None] * frame_t[:, None, None, 2]
    )  # (K, height, width, 2) image pixel coordinates, pixel centres at integers
    size = torch.tensor([images.shape[3], images.shape[2]], device=device, dtype=torch.float32)
    grid = (2 * points + 1) / size - 1
    grid = grid.masked_fill((u > 1)[:, None, :, None], -4.0)  # padding columns read zeros

    image_index = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts)).to(device)
    slot = torch.cat([torch.arange(c) for c in counts]).to(device)
    stacked = torch.full((len(counts), most, height, width, 2), -4.0, device=device)
    stacked[image_index, slot] = grid
    # Sampled in fp32 whatever the training precision: a bf16 grid would be off by pixels at 1024 px.
    sampled = F.grid_sample(
        images.float(),
        stacked.view(len(counts), most * height, width, 2),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )  # (B, C, most * height, width)
    sampled = sampled.view(len(counts), images.shape[1], most, height, width).transpose(1, 2)
    return LineCrops(sampled[image_index, slot], image_index, width_t)
