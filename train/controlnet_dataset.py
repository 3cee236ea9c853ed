"""Training samples: cached latents and prompt embeddings plus the conditioning image read from disk.

With text supervision on, a sample also carries its text boxes mapped onto the training canvas, their
strings, and (for the feature loss) the ground-truth image in [-1, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, default_collate

from common.diffusion import to_tensor
from data.records import Record, resolve_path
from train.encoded_cache import EncodedCache
from train.sample_geometry import CropGeometry

LIST_KEYS = ("boxes", "texts")
"""Per-sample values of varying length, collated into lists instead of stacked."""


def boxes_on_canvas(record: Record, geometry: CropGeometry) -> tuple[np.ndarray, list[str]]:
    """The record's boxes (K, 4, 2) in training-canvas pixels and their strings; boxes that the crop
    cuts are left out, because a partly visible label cannot be read as its full string."""
    if not record.box or not record.gt_text:
        return np.zeros((0, 4, 2), dtype=np.float32), []
    return map_boxes(np.asarray(record.box, dtype=np.float32), list(record.gt_text), geometry)


def map_boxes(boxes: np.ndarray, texts: list[str], geometry: CropGeometry) -> tuple[np.ndarray, list[str]]:
    """Boxes (K, 4, 2) in original pixels -> canvas pixels, without those the crop cuts."""
    (orig_h, orig_w), (new_h, new_w) = geometry.original_size, geometry.resized_size
    top, left = geometry.crop_top_left
    height, width = geometry.target_size
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4, 2)
    boxes = boxes * np.array([new_w / orig_w, new_h / orig_h], dtype=np.float32)
    boxes -= np.array([left, top], dtype=np.float32)
    inside = (
        (boxes[..., 0] >= 0) & (boxes[..., 0] <= width) & (boxes[..., 1] >= 0) & (boxes[..., 1] <= height)
    ).all(axis=1)
    return boxes[inside], [text for text, keep in zip(texts, inside, strict=True) if keep]


class ControlNetTrainDataset(Dataset):
    """One item per record, fitted into the bucket its latents were cached at; the VAE and text encoders
    are never run here."""

    def __init__(
        self,
        records: Sequence[Record],
        root: Path,
        cache: EncodedCache,
        text_targets: bool = False,
        reference_images: bool = False,
    ) -> None:
        self.records = list(records)
        self.root = root
        self.cache = cache
        self.text_targets = text_targets
        self.reference_images = reference_images

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        with Image.open(resolve_path(self.root, record.conditioning_image)) as image:
            geometry = CropGeometry.cover(image.width, image.height, self.cache.bucket(index))
            condition = to_tensor(geometry.apply(image.convert("RGB")))
        sample: dict[str, Any] = {
            **self.cache[index],
            "conditioning_pixel_values": condition,
            "index": torch.tensor(index),
        }
        if self.text_targets:
            boxes, texts = boxes_on_canvas(record, geometry)
            sample["boxes"], sample["texts"] = torch.from_numpy(boxes), texts
        if self.reference_images:
            with Image.open(resolve_path(self.root, record.image)) as image:
                sample["pixel_values"] = to_tensor(geometry.apply(image.convert("RGB"))) * 2 - 1
        return sample


def collate_samples(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stacks tensors; keeps the per-sample box and text lists as lists."""
    stacked = default_collate([{k: v for k, v in s.items() if k not in LIST_KEYS} for s in samples])
    for key in LIST_KEYS:
        if key in samples[0]:
            stacked[key] = [s[key] for s in samples]
    return stacked
