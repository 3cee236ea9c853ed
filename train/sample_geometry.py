"""Resize-and-crop of a sample to the training size, remembering what SDXL's micro-conditioning needs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image


@dataclass(frozen=True)
class CropGeometry:
    """How one image was mapped to its training canvas (a square, or an aspect-ratio bucket)."""

    original_size: tuple[int, int]
    """(height, width) of the file on disk."""
    crop_top_left: tuple[int, int]
    """(top, left) of the crop in the resized image."""
    resized_size: tuple[int, int]
    target_size: tuple[int, int]

    @classmethod
    def cover(cls, width: int, height: int, target: tuple[int, int]) -> CropGeometry:
        """Scaled without distortion until it covers `target` (height, width), then centre-cropped."""
        target_h, target_w = target
        scale = max(target_w / width, target_h / height)
        new_w, new_h = max(target_w, round(width * scale)), max(target_h, round(height * scale))
        top, left = (new_h - target_h) // 2, (new_w - target_w) // 2
        return cls((height, width), (top, left), (new_h, new_w), (target_h, target_w))

    @classmethod
    def centre_crop(cls, width: int, height: int, resolution: int) -> CropGeometry:
        """Shorter side to `resolution`, then a centred square crop."""
        return cls.cover(width, height, (resolution, resolution))

    def apply(self, image: Image.Image) -> Image.Image:
        resized = image.resize(self.resized_size[::-1], Image.Resampling.BICUBIC)
        top, left = self.crop_top_left
        height, width = self.target_size
        return resized.crop((left, top, left + width, top + height))

    def time_ids(self) -> torch.Tensor:
        """SDXL's add_time_ids: original size, crop top-left, target size."""
        return torch.tensor(
            [*self.original_size, *self.crop_top_left, *self.target_size], dtype=torch.float32
        )
