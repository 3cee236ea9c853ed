"""What the ControlNet and the UNet are conditioned on in one micro-step, kept together so that a
subset of the batch (the samples a text loss applies to) can be taken in one call."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class StepConditioning:
    prompt_embeds: torch.Tensor
    pooled_embeds: torch.Tensor
    time_ids: torch.Tensor
    image: torch.Tensor
    """The conditioning image batch, (B, 3, H, W) in [0, 1]."""

    def take(self, index: torch.Tensor) -> StepConditioning:
        """The samples at `index`, in that order."""
        return StepConditioning(
            self.prompt_embeds[index], self.pooled_embeds[index], self.time_ids[index], self.image[index]
        )
