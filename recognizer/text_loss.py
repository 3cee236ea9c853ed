"""Text losses on generated images: CTC against the target strings, and an OCR-perceptual feature loss.

Both crop every text box of the batch (``crops.crop_lines``) and run the frozen recognizer on the
crops, so their gradients reach the generated pixels. Images are ``(B, 3, H, W)`` RGB in [-1, 1] (the
VAE decoder's range); ``boxes[b]`` are image b's 4-point boxes in its pixel coordinates. Callers that
crop themselves (e.g. from VAE-decoded tiles) or weight lines individually use the per-line forms,
``ctc_per_line`` and ``feature_per_line``. Run them in fp32: a CTC in bf16/fp16 is not reliable.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from recognizer.charset import BLANK
from recognizer.crops import BoxesLike, as_box_array, crop_lines
from recognizer.torch_rec import CROP_HEIGHT, TextRecognizer

__all__ = ["CtcLossResult", "CtcPerLine", "FeatureLossResult", "TextLoss"]

logger = logging.getLogger(__name__)


@dataclass
class CtcPerLine:
    per_line: torch.Tensor
    """``(K,)`` CTC / target length per line; 0 where not ``used``."""
    used: torch.Tensor
    """``(K,)`` bool: the line's text was non-empty and fully inside the charset."""
    unknown_chars: int
    """Characters of the texts that the recognizer has no class for (their lines are not used)."""


@dataclass
class CtcLossResult:
    loss: torch.Tensor
    """Mean over the used boxes of CTC / target length (0 with a graph when no box is usable)."""
    num_boxes: int
    """Boxes that contributed."""
    unknown_chars: int
    """Characters of the target texts that the recognizer has no class for."""
    skipped_boxes: int
    """Boxes left out because their text is empty or has unknown characters (a partial target would
    teach the wrong string)."""

    def logs(self) -> dict[str, float]:
        return {
            "ctc_loss": float(self.loss.detach()),
            "ctc_boxes": float(self.num_boxes),
            "ctc_unknown_chars": float(self.unknown_chars),
            "ctc_skipped_boxes": float(self.skipped_boxes),
        }


@dataclass
class FeatureLossResult:
    loss: torch.Tensor
    """MSE between the recognizer's neck features of generated and reference crops."""
    num_boxes: int

    def logs(self) -> dict[str, float]:
        return {"feature_loss": float(self.loss.detach()), "feature_boxes": float(self.num_boxes)}


class TextLoss(nn.Module):
    """The recognizer plus the crop settings; a module so that ``.to(device)`` moves the recognizer."""

    def __init__(self, recognizer: TextRecognizer, crop_width: int = 320) -> None:
        super().__init__()
        if crop_width % 8:
            raise ValueError(
                f"crop_width must be a multiple of 8 (one CTC column per 8 px), got {crop_width}"
            )
        self.recognizer = recognizer
        self.crop_width = crop_width
        self._reported_unknown: set[str] = set()

    def _crops(self, images: torch.Tensor, boxes: Sequence[BoxesLike]) -> torch.Tensor:
        return crop_lines(images, boxes, height=CROP_HEIGHT, width=self.crop_width).crops

    def ctc_per_line(self, crops: torch.Tensor, texts: Sequence[str]) -> CtcPerLine:
        """Length-normalised CTC of each recognizer-ready crop ``(K, 3, 48, W)`` against its text.

        Lines whose text is empty or has characters outside the charset are not run and get 0, with
        ``used`` False; callers average over ``used`` (e.g. with per-line timestep weights).
        """
        if crops.shape[0] != len(texts):
            raise ValueError(f"{crops.shape[0]} crops but {len(texts)} texts")
        device = crops.device
        targets, keep, unknown = [], [], 0
        for k, text in enumerate(texts):
            encoded = self.recognizer.charset.encode(text)
            unknown += len(encoded.unknown)
            self._report_unknown(encoded.unknown)
            if encoded.ids and not encoded.unknown:
                keep.append(k)
                targets.append(encoded.ids)
        used = torch.zeros(len(texts), dtype=torch.bool, device=device)
        if not keep:
            return CtcPerLine(crops.sum() * torch.zeros(len(texts), device=device), used, unknown)
        keep_t = torch.tensor(keep, device=device)
        used[keep_t] = True

        logits = self.recognizer(crops[keep_t])
        log_probs = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)  # (T, K, classes)
        steps, count = log_probs.shape[0], log_probs.shape[1]
        target_lengths = torch.tensor([len(t) for t in targets], device=device)
        values = F.ctc_loss(
            log_probs,
            torch.tensor([i for t in targets for i in t], device=device),
            torch.full((count,), steps, dtype=torch.long, device=device),
            target_lengths,
            blank=BLANK,
            reduction="none",
            zero_infinity=True,
        ) / target_lengths.to(log_probs)
        per_line = values.new_zeros(len(texts)).index_put((keep_t,), values)
        return CtcPerLine(per_line, used, unknown)

    def feature_per_line(self, crops: torch.Tensor, reference_crops: torch.Tensor) -> torch.Tensor:
        """``(K,)`` MSE between the neck features of each crop and its reference (no gradient) crop."""
        if crops.shape != reference_crops.shape:
            raise ValueError(
                f"crops {tuple(crops.shape)} and reference {tuple(reference_crops.shape)} differ"
            )
        with torch.no_grad():
            target = self.recognizer.features(reference_crops).float()
        return (self.recognizer.features(crops).float() - target).square().mean(dim=(1, 2))

    def ctc_loss(
        self, images: torch.Tensor, boxes: Sequence[BoxesLike], texts: Sequence[Sequence[str]]
    ) -> CtcLossResult:
        """Mean CTC over the usable boxes of a batch; ``texts[b][k]`` belongs to ``boxes[b][k]``."""
        for image_boxes, image_texts in zip(boxes, texts, strict=True):
            if len(as_box_array(image_boxes)) != len(image_texts):
                raise ValueError(
                    f"an image has {len(as_box_array(image_boxes))} boxes but {len(image_texts)} texts"
                )
        flat_texts = [text for image_texts in texts for text in image_texts]
        lines = self.ctc_per_line(self._crops(images, boxes), flat_texts)
        used = int(lines.used.sum())
        # With no usable box the loss is still a graph on the images, so backward() needs no special case.
        loss = lines.per_line.sum() / used if used else images.sum() * 0.0
        return CtcLossResult(loss, used, lines.unknown_chars, len(flat_texts) - used)

    def feature_loss(
        self, generated: torch.Tensor, reference: torch.Tensor, boxes: Sequence[BoxesLike]
    ) -> FeatureLossResult:
        """MSE of neck features on the same boxes of generated and reference (ground-truth) images."""
        if generated.shape != reference.shape:
            raise ValueError(
                f"generated {tuple(generated.shape)} and reference {tuple(reference.shape)} differ"
            )
        crops = self._crops(generated, boxes)
        if crops.shape[0] == 0:
            return FeatureLossResult(generated.sum() * 0.0, 0)
        per_line = self.feature_per_line(crops, self._crops(reference.detach(), boxes))
        return FeatureLossResult(per_line.mean(), crops.shape[0])

    def _report_unknown(self, chars: Sequence[str]) -> None:
        new = set(chars) - self._reported_unknown
        if new:
            self._reported_unknown |= new
            logger.warning("text loss: characters without a recognizer class, boxes skipped: %s", sorted(new))
