"""BLIP image captioning: load once, caption batches of PIL images on CPU or GPU.

The model is ``BlipForConditionalGeneration`` + ``BlipProcessor`` from a local folder or a hub id
(``Salesforce/blip-image-captioning-base`` / ``-large`` when there is internet). The image processor
is loaded with the PIL backend, so torchvision is never needed. A conditional prompt ("a keyboard
skin of") is fed to the decoder, as users' scripts do; BLIP's output starts with that prompt.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from transformers import BlipForConditionalGeneration, BlipProcessor

logger = logging.getLogger(__name__)

__all__ = ["DTYPES", "Captioner", "load_captioner", "resolve_device"]

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
_LOADED: dict[tuple[str, str, str], Captioner] = {}


def resolve_device(device: str) -> torch.device:
    """``auto`` is the first GPU if there is one, else the CPU; others are checked to exist."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch sees no CUDA GPU; use --device cpu")
    return resolved


def _model_source(model: str) -> str:
    """An existing folder (``~`` expanded), or a hub id (``org/name``; needs internet or the HF cache).
    Anything else that looks like a path is reported as missing instead of as a hub error."""
    folder = Path(model).expanduser()
    if folder.exists():
        return str(folder)
    if model.count("/") > 1 or model.startswith(("/", ".", "~")):
        raise FileNotFoundError(
            f"BLIP model folder {model} does not exist (nor is it a hub id like org/name)"
        )
    return model


@dataclass
class Captioner:
    """A loaded BLIP model and processor on one device and dtype."""

    model: BlipForConditionalGeneration
    processor: BlipProcessor
    device: torch.device
    dtype: torch.dtype

    @torch.inference_mode()
    def caption(
        self, images: Sequence[Image.Image], prefix: str = "", max_new_tokens: int = 30, num_beams: int = 1
    ) -> list[str]:
        """One caption per image (greedy when ``num_beams`` is 1, so deterministic)."""
        text = [prefix] * len(images) if prefix else None
        inputs = self.processor(images=list(images), text=text, return_tensors="pt").to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        ids = self.model.generate(**inputs, max_new_tokens=max_new_tokens, num_beams=num_beams)
        return [caption.strip() for caption in self.processor.batch_decode(ids, skip_special_tokens=True)]


def load_captioner(model: str, device: str = "auto", dtype: str = "auto") -> Captioner:
    """Load (once per process and settings) BLIP from a folder or hub id onto ``device`` in ``dtype``.

    ``dtype="auto"`` is float16 on a GPU and float32 on the CPU; float16 on the CPU is refused (slow
    and poorly supported there; use bfloat16).
    """
    torch_device = resolve_device(device)
    if dtype == "auto":
        dtype = "float16" if torch_device.type == "cuda" else "float32"
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of auto, {', '.join(DTYPES)}; got {dtype!r}")
    if dtype == "float16" and torch_device.type == "cpu":
        raise ValueError("float16 on the CPU is not supported; use float32 or bfloat16")
    key = (model, str(torch_device), dtype)
    if key not in _LOADED:
        source = _model_source(model)
        logger.info("loading BLIP %s on %s (%s)", source, torch_device, dtype)
        processor = BlipProcessor.from_pretrained(source, backend="pil")
        blip = (
            BlipForConditionalGeneration.from_pretrained(source, dtype=DTYPES[dtype]).to(torch_device).eval()
        )
        _LOADED[key] = Captioner(blip, processor, torch_device, DTYPES[dtype])
    return _LOADED[key]
