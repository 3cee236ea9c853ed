"""The frozen, differentiable text recognizer that the training text losses run through.

Weights come from the PP-OCR rec ONNX that the rapidocr wheel ships (converted once, then cached), so
the loss judges legibility with the same model the OCR backend reads with.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from recognizer.charset import Charset
from recognizer.rec_cache import load_or_convert
from recognizer.rec_net import RecNet, RecNetSpec
from recognizer.shipped_models import require_model_file, shipped_model_path

__all__ = ["CROP_HEIGHT", "RecognizerConfig", "TextRecognizer", "load_text_recognizer"]

logger = logging.getLogger(__name__)

CROP_HEIGHT = 48
"""Input height the PP-OCR rec network was trained at (its pooling assumes it)."""


@dataclass
class RecognizerConfig:
    onnx_path: Path | None = None
    """PP-OCRv6 small rec ONNX with ``character`` metadata; ``None`` = the one shipped with rapidocr."""
    cache_dir: Path | None = None
    """Where converted weights are kept; ``None`` = ``$XDG_CACHE_HOME/skinforge/recognizer``."""


class TextRecognizer(nn.Module):
    """RGB crops ``(N, 3, 48, W)`` in [-1, 1] -> per-column logits ``(N, W // 8, classes)``.

    Frozen: no parameter requires grad and it stays in eval mode even when a parent module calls
    ``.train()`` (its neck has BatchNorms whose running statistics must not move). Gradients still
    flow to the *input*, which is the point.
    """

    def __init__(self, net: RecNet, charset: Charset) -> None:
        super().__init__()
        if net.head.out_features != len(charset):
            raise ValueError(f"network has {net.head.out_features} classes, charset {len(charset)}")
        self.net = net
        self.charset = charset
        self.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> TextRecognizer:
        return super().train(False)

    @staticmethod
    def _to_bgr(crops: torch.Tensor) -> torch.Tensor:
        """PP-OCR was trained on cv2's BGR images; same [-1, 1] normalisation ((x / 255 - 0.5) / 0.5)."""
        if crops.ndim != 4 or crops.shape[1] != 3 or crops.shape[2] != CROP_HEIGHT:
            raise ValueError(f"expected (N, 3, {CROP_HEIGHT}, W) crops, got {tuple(crops.shape)}")
        return crops.flip(1)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.net(self._to_bgr(crops))

    def features(self, crops: torch.Tensor) -> torch.Tensor:
        """Neck features ``(N, W // 8, 120)`` (what the CTC head reads), for the perceptual text loss."""
        return self.net.features(self._to_bgr(crops))

    def read(self, crops: torch.Tensor) -> list[str]:
        """Greedy-decoded strings, for checks and logging."""
        with torch.no_grad():
            return self.charset.decode(self(crops))


def load_text_recognizer(config: RecognizerConfig | None = None) -> TextRecognizer:
    """Build the recognizer on CPU in fp32 (move it with ``.to()``); converts the ONNX on first use."""
    config = config or RecognizerConfig()
    onnx_path = (
        shipped_model_path("rec")
        if config.onnx_path is None
        else require_model_file(Path(config.onnx_path), "rec", "RecognizerConfig.onnx_path")
    )
    weights = load_or_convert(onnx_path, config.cache_dir)
    net = RecNet(RecNetSpec(num_classes=weights.state_dict["head.weight"].shape[0]))
    net.load_state_dict(weights.state_dict)
    logger.info("text recognizer from %s (%s)", onnx_path, "converted" if weights.converted else "cached")
    return TextRecognizer(net, Charset(weights.characters))
