"""FID of a checkpoint's images against the dataset's target images, from a local Inception file.

The feature extractor is the TorchScript Inception-v3 that StyleGAN2-ADA and clean-fid use
(``inception-2015-12-05.pt``, a port of the TensorFlow FID network), loaded with ``torch.jit.load``
so no torchvision is needed and nothing is downloaded. It takes images as floats in [0, 255] and
returns 2048 pool features with ``return_features=True``. Images are resized to 299x299 with PIL's
bicubic filter first, as clean-fid does.

FID needs thousands of images to be stable; below 2048 per side the covariance is rank-deficient and
the number is biased upwards, useful only to compare checkpoints scored on the same set.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import linalg

logger = logging.getLogger(__name__)

__all__ = ["FidScorer", "check_fid_model", "frechet_distance"]

INCEPTION_SIZE = 299
_BATCH = 32


def check_fid_model(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(
            f"--fid-model {path}: file not found. FID needs a local TorchScript Inception, e.g. "
            "inception-2015-12-05.pt as used by StyleGAN2-ADA and clean-fid; nothing is downloaded"
        )


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature rows ``a`` and ``b`` (N x D each)."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"FID needs at least 2 images per side, got {len(a)} and {len(b)}")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(root).all():  # singular product: nudge both, as pytorch-fid does
        offset = np.eye(len(cov_a)) * 1e-6
        root = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    root = root.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(root))


class FidScorer:
    """Inception features of image files and the FID between two sets of them."""

    def __init__(self, path: Path, device: str = "cpu") -> None:
        check_fid_model(path)
        self.path = path
        self.device = device
        self.model = torch.jit.load(str(path), map_location=device).eval()
        logger.info("FID with %s", path)

    def _batch_features(self, paths: list[Path]) -> np.ndarray:
        arrays = []
        for path in paths:
            with Image.open(path) as image:
                resized = image.convert("RGB").resize((INCEPTION_SIZE,) * 2, Image.Resampling.BICUBIC)
            arrays.append(np.asarray(resized))
        pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().to(self.device)
        with torch.inference_mode():
            return self.model(pixels, return_features=True).double().cpu().numpy()

    def features(self, paths: Iterable[Path]) -> np.ndarray:
        paths = list(paths)
        return np.concatenate(
            [self._batch_features(paths[i : i + _BATCH]) for i in range(0, len(paths), _BATCH)]
        )

    def fid(self, generated: Iterable[Path], reference: np.ndarray) -> float:
        """FID of the ``generated`` images against ``reference`` features (from ``features``)."""
        return frechet_distance(self.features(generated), reference)
