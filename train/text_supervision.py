"""The text loss of a training step: decode the clean-image estimate, crop the boxes, run the recognizer.

Only samples that have boxes and a timestep at most `text_loss.max_timestep` are decoded; a step whose
batch has none costs nothing and returns zero losses (without a graph), so the step is unchanged.
The VAE decode keeps gradients; the recognizer and the losses run in fp32 outside autocast (a CTC in
bf16/fp16 turns into NaN).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import AutoencoderKL, DDPMScheduler

from recognizer.crops import crop_lines, line_frames
from recognizer.text_loss import TextLoss
from recognizer.torch_rec import CROP_HEIGHT
from train.config import TextLossConfig

LATENT_FACTOR = 8
"""Pixels per latent cell of the SDXL VAE."""
COLUMN_PX = 8
"""Input pixels per recognizer output column."""
TILE_MARGIN = 4
"""Latent cells of context decoded around a box in `vae_decode: crops` mode."""


@dataclass
class TextSelection:
    """Which samples of the micro-batch the text loss applies to, and their boxes."""

    samples: torch.Tensor
    """(S,) indices into the micro-batch."""
    boxes: list[torch.Tensor]
    """Per selected sample, (K, 4, 2) boxes in training-canvas pixels."""
    texts: list[list[str]]


class TextSupervision:
    """Holds the frozen VAE and recognizer; turns clean-latent estimates into named text losses."""

    def __init__(
        self, cfg: TextLossConfig, vae: AutoencoderKL, text_loss: TextLoss, scheduler: DDPMScheduler
    ) -> None:
        self.cfg = cfg
        self.vae = vae
        self.text_loss = text_loss
        self.scheduler = scheduler
        if cfg.vae_gradient_checkpointing:
            vae.enable_gradient_checkpointing()

    def due(self, step: int) -> bool:
        return step % self.cfg.every_n_steps == 0

    def select(
        self,
        timesteps: torch.Tensor,
        boxes: Sequence[torch.Tensor],
        texts: Sequence[list[str]],
        generator: torch.Generator,
    ) -> TextSelection:
        """Samples with boxes at low enough noise; at most `max_boxes_per_image` boxes each, drawn with
        the step's generator so a resumed run draws the same ones."""
        chosen, chosen_boxes, chosen_texts = [], [], []
        for i, (image_boxes, image_texts) in enumerate(zip(boxes, texts, strict=True)):
            if not image_texts or int(timesteps[i]) > self.cfg.max_timestep:
                continue
            keep = torch.randperm(len(image_texts), generator=generator)[: self.cfg.max_boxes_per_image]
            keep = keep.sort().values
            chosen.append(i)
            chosen_boxes.append(image_boxes[keep])
            chosen_texts.append([image_texts[k] for k in keep.tolist()])
        return TextSelection(torch.tensor(chosen, dtype=torch.long), chosen_boxes, chosen_texts)

    def weights(self, timesteps: torch.Tensor) -> torch.Tensor:
        """Per-sample weight of the text loss: ᾱ_t (AnyText) or 1."""
        if self.cfg.timestep_weight == "alphas_cumprod":
            return self.scheduler.alphas_cumprod.to(timesteps.device)[timesteps.long()].float()
        return torch.ones(len(timesteps), device=timesteps.device)

    def losses(
        self,
        clean_latents: torch.Tensor,
        selection: TextSelection,
        timesteps: torch.Tensor,
        reference: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        """`ctc`, `feature` (weighted means over the boxes) and `text_lines` for the selected samples.

        `clean_latents`, `timesteps` and `reference` hold the selected samples only, in selection order.
        """
        width = self.crop_width(selection.boxes)
        crops, line_image = self._generated_crops(clean_latents, selection.boxes, width)
        line_weight = self.weights(timesteps)[line_image.to(timesteps.device)]
        texts = [text for image_texts in selection.texts for text in image_texts]
        out = self.zero_losses(crops.device)
        out["text_lines"] = torch.tensor(float(len(texts)), device=crops.device)
        with torch.autocast(crops.device.type, enabled=False):
            crops = crops.float()
            if self.cfg.kind in ("ctc", "both"):
                ctc = self.text_loss.ctc_per_line(crops, texts)
                out["ctc"] = _weighted_mean(ctc.per_line, line_weight, ctc.used)
                out["text_unknown_chars"] = torch.tensor(float(ctc.unknown_chars), device=crops.device)
            if self.cfg.kind in ("feature", "both"):
                if reference is None:
                    raise ValueError("the feature text loss needs the ground-truth images in the batch")
                target = crop_lines(reference.float(), selection.boxes, CROP_HEIGHT, width)
                per_line = self.text_loss.feature_per_line(crops, target.crops)
                out["feature"] = _weighted_mean(per_line, line_weight, None)
        return out

    @staticmethod
    def zero_losses(device: torch.device) -> dict[str, torch.Tensor]:
        """The same keys on every rank and every step (logging reduces them across ranks), all zero."""
        zero = torch.zeros((), device=device)
        return {"ctc": zero, "feature": zero, "text_lines": zero, "text_unknown_chars": zero}

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        config = self.vae.config
        latents = latents / config.scaling_factor
        if config.get("shift_factor") is not None:
            latents = latents + config.shift_factor
        return self.vae.decode(latents.to(self.vae.dtype)).sample

    def crop_width(self, boxes: list[torch.Tensor]) -> int:
        """The widest line of this step at height 48, rounded up to the recognizer's 8-px column, capped at
        `text_loss.crop_width`: short key labels then cost a fraction of a full-width crop, as in PP-OCR's
        own batching (pad to the batch's widest line)."""
        all_boxes = torch.cat(boxes).detach().cpu().numpy().astype(np.float64)
        _, widths = line_frames(all_boxes, CROP_HEIGHT, self.cfg.crop_width)
        return min(-(-int(widths.max()) // COLUMN_PX) * COLUMN_PX, self.cfg.crop_width)

    def _generated_crops(
        self, clean_latents: torch.Tensor, boxes: list[torch.Tensor], width: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Recognizer-ready crops of every box, decoded whole or tile by tile, with their sample index."""
        if self.cfg.vae_decode == "full":
            lines = crop_lines(self._decode(clean_latents), boxes, CROP_HEIGHT, width)
            return lines.crops, lines.image_index
        crops, owners = [], []
        for i, image_boxes in enumerate(boxes):
            for box in image_boxes:
                tile, origin = self._decode_tile(clean_latents[i : i + 1], box)
                crops.append(crop_lines(tile, [box[None] - origin], CROP_HEIGHT, width).crops)
                owners.append(i)
        return torch.cat(crops), torch.tensor(owners, dtype=torch.long)

    def _decode_tile(self, latents: torch.Tensor, box: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decodes the latent cells under `box` plus a margin; returns the pixels and their (x, y) origin."""
        height, width = latents.shape[-2:]
        x0, y0 = (box.min(dim=0).values / LATENT_FACTOR).tolist()
        x1, y1 = (box.max(dim=0).values / LATENT_FACTOR).tolist()
        left, top = max(math.floor(x0) - TILE_MARGIN, 0), max(math.floor(y0) - TILE_MARGIN, 0)
        right, bottom = min(math.ceil(x1) + TILE_MARGIN, width), min(math.ceil(y1) + TILE_MARGIN, height)
        tile = self._decode(latents[..., top:bottom, left:right])
        return tile, torch.tensor([left, top], dtype=box.dtype) * LATENT_FACTOR


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor, used: torch.Tensor | None) -> torch.Tensor:
    """Σ w·v / count over the used lines (0 with a graph when none is used)."""
    weights = weights.to(values)
    if used is not None:
        weights = weights * used.to(values)
    count = weights.new_tensor(float(len(values) if used is None else int(used.sum())))
    return (weights * values).sum() / count.clamp_min(1.0)
