"""CLIP score (prompt-image agreement) from local CLIP weights; nothing is downloaded.

Score = 100 * max(cos(image embedding, prompt embedding), 0), the definition torchmetrics and the
papers comparing text-to-image models use. Which CLIP is used changes the numbers, so the folder is
part of the report; compare scores only between runs that used the same one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from transformers import CLIPModel, CLIPProcessor

logger = logging.getLogger(__name__)

__all__ = ["ClipScorer", "check_clip_folder"]


def check_clip_folder(folder: Path) -> None:
    """Fail with what to pass when ``folder`` is not a local transformers CLIP folder."""
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"--clip-model {folder}: not a local CLIP folder (no config.json). CLIP score needs local "
            "weights in transformers format, e.g. a downloaded openai/clip-vit-large-patch14 folder "
            "(config.json, model weights, tokenizer and preprocessor_config.json); nothing is downloaded"
        )


class ClipScorer:
    """Scores (image, prompt) pairs with one CLIP model loaded once."""

    def __init__(self, folder: Path, device: str = "cpu") -> None:
        check_clip_folder(folder)
        self.folder = folder
        self.device = device
        self.model = CLIPModel.from_pretrained(str(folder)).to(device).eval()
        self.processor = CLIPProcessor.from_pretrained(str(folder))
        logger.info("CLIP score with %s", folder)

    @torch.inference_mode()
    def __call__(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[float]:
        """The CLIP score of each ``images[i]`` against ``prompts[i]``."""
        inputs = self.processor(
            text=list(prompts),
            images=[image.convert("RGB") for image in images],
            return_tensors="pt",
            padding=True,
            truncation=True,
        ).to(self.device)
        outputs = self.model(**inputs)
        image = torch.nn.functional.normalize(outputs.image_embeds, dim=-1)
        text = torch.nn.functional.normalize(outputs.text_embeds, dim=-1)
        cosine = (image * text).sum(dim=-1)
        return (100 * cosine.clamp(min=0)).tolist()
