"""Training samples: cached latents and prompt embeddings plus the conditioning image read from disk."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from data.records import Record, resolve_path
from train.encoded_cache import EncodedCache
from train.sample_geometry import CropGeometry, to_tensor


class ControlNetTrainDataset(Dataset):
    """One item per record; the VAE and text encoders are never run here."""

    def __init__(self, records: Sequence[Record], root: Path, resolution: int, cache: EncodedCache) -> None:
        self.records = list(records)
        self.root = root
        self.resolution = resolution
        self.cache = cache

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        record = self.records[index]
        with Image.open(resolve_path(self.root, record.conditioning_image)) as image:
            geometry = CropGeometry.centre_crop(image.width, image.height, self.resolution)
            condition = to_tensor(geometry.apply(image.convert("RGB")))
        return {
            **self.cache[index],
            "conditioning_pixel_values": condition,
            "index": torch.tensor(index),
        }
