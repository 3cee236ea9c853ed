"""The named losses of one training micro-batch: noise it, predict with ControlNet + UNet, compare.

Kept apart from the trainer's loop so that what a step computes can be read (and tested) on its own:
the diffusion MSE always, the OCR text loss on the samples with boxes when `text_loss` is on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from accelerate import Accelerator
from diffusers import ControlNetModel, DDPMScheduler, UNet2DConditionModel

from common.diffusion import diffusion_target
from train.clean_estimate import predicted_clean_latents, unrolled_clean_latents
from train.config import SkinforgeConfig
from train.distributed import step_generator
from train.losses import diffusion_loss, drop_prompts, sample_timesteps
from train.step_inputs import StepConditioning

if TYPE_CHECKING:  # imported by the trainer only when the text loss is on (OCR imports are heavy)
    from train.text_supervision import TextSupervision


class ControlNetStepLosses:
    """Holds what a step reads (the prepared ControlNet, the frozen UNet, the scheduler, the text
    supervision) and computes a micro-batch's named losses."""

    def __init__(
        self,
        config: SkinforgeConfig,
        accelerator: Accelerator,
        controlnet: ControlNetModel,
        unet: UNet2DConditionModel,
        noise_scheduler: DDPMScheduler,
        empty_prompt: dict[str, torch.Tensor],
        text_supervision: TextSupervision | None,
    ) -> None:
        self.config = config
        self.accelerator = accelerator
        self.controlnet = controlnet
        self.unet = unet
        self.noise_scheduler = noise_scheduler
        self.empty_prompt = empty_prompt
        self.text_supervision = text_supervision
        self.weight_dtype = unet.dtype

    def __call__(self, batch: dict[str, Any], micro_step: int, step: int) -> dict[str, torch.Tensor]:
        """Losses of micro-step `micro_step` (its noise, timesteps and dropout) during optimizer step
        `step` + 1; `total` is what is back-propagated."""
        latents = batch["latents"].to(self.weight_dtype)
        generator = step_generator(self.config.train.seed, self.accelerator.process_index, micro_step)
        noise = torch.randn(latents.shape, generator=generator).to(latents)
        bsz = latents.shape[0]
        num_train = self.noise_scheduler.config.num_train_timesteps
        timesteps = sample_timesteps(bsz, num_train, self.config.train.timestep_sampling, generator)
        timesteps = timesteps.to(latents.device)
        noisy = self._layout(self.noise_scheduler.add_noise(latents, noise, timesteps))
        prompt_embeds, pooled = drop_prompts(
            batch["prompt_embeds"],
            batch["pooled_embeds"],
            self.empty_prompt,
            self.config.data.empty_prompt_prob,
            generator,
        )
        conditioning = StepConditioning(
            prompt_embeds.to(self.weight_dtype),
            pooled.to(self.weight_dtype),
            batch["time_ids"].to(self.weight_dtype),
            self._layout(batch["conditioning_pixel_values"].to(self.weight_dtype)),
        )
        prediction = self._predict(noisy, timesteps, conditioning)
        target = diffusion_target(self.noise_scheduler, latents, noise, timesteps)
        losses = {"diffusion": diffusion_loss(prediction, target)}
        if self.text_supervision is not None and self.text_supervision.due(step + 1):
            losses |= self._text_losses(batch, noisy, prediction, timesteps, conditioning, generator)
        elif self.text_supervision is not None:
            losses |= self.text_supervision.zero_losses(prediction.device)  # same keys on every step
        losses["total"] = self._total(losses)
        return losses

    def _predict(
        self, noisy: torch.Tensor, timesteps: torch.Tensor, conditioning: StepConditioning
    ) -> torch.Tensor:
        """The UNet's output with the ControlNet's residuals: what both losses are computed from."""
        added = {"text_embeds": conditioning.pooled_embeds, "time_ids": conditioning.time_ids}
        with self.accelerator.autocast():
            down, mid = self.controlnet(
                noisy,
                timesteps,
                encoder_hidden_states=conditioning.prompt_embeds,
                added_cond_kwargs=added,
                controlnet_cond=conditioning.image,
                return_dict=False,
            )
            return self.unet(
                noisy,
                timesteps,
                encoder_hidden_states=conditioning.prompt_embeds,
                added_cond_kwargs=added,
                down_block_additional_residuals=[s.to(self.weight_dtype) for s in down],
                mid_block_additional_residual=mid.to(self.weight_dtype),
                return_dict=False,
            )[0]

    def _text_losses(
        self,
        batch: dict[str, Any],
        noisy: torch.Tensor,
        prediction: torch.Tensor,
        timesteps: torch.Tensor,
        conditioning: StepConditioning,
        generator: torch.Generator,
    ) -> dict[str, torch.Tensor]:
        """`ctc`/`feature` on the boxes of the samples the text loss applies to this step (zeros if none)."""
        assert self.text_supervision is not None
        selection = self.text_supervision.select(timesteps, batch["boxes"], batch["texts"], generator)
        if len(selection.samples) == 0:
            return self.text_supervision.zero_losses(prediction.device)
        index = selection.samples.to(prediction.device)
        clean = self._clean_estimate(
            noisy[index], prediction[index], timesteps[index], conditioning.take(index)
        )
        reference = batch["pixel_values"][index] if "pixel_values" in batch else None
        return self.text_supervision.losses(clean, selection, timesteps[index], reference)

    def _clean_estimate(
        self,
        noisy: torch.Tensor,
        prediction: torch.Tensor,
        timesteps: torch.Tensor,
        conditioning: StepConditioning,
    ) -> torch.Tensor:
        cfg = self.config.text_loss
        if cfg.estimate == "one_step":
            return predicted_clean_latents(self.noise_scheduler, noisy, prediction, timesteps)

        def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self._predict(self._layout(x), t, conditioning)

        return unrolled_clean_latents(
            self.noise_scheduler, denoise, noisy, prediction, timesteps, cfg.unroll_steps
        )

    def _total(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        total = self.config.train.diffusion_loss_weight * losses["diffusion"]
        if "ctc" in losses:
            total = total + self.config.text_loss.ctc_weight * losses["ctc"]
        if "feature" in losses:
            total = total + self.config.text_loss.feature_weight * losses["feature"]
        return total

    def _layout(self, images: torch.Tensor) -> torch.Tensor:
        """Image batches in the models' memory layout, so the first convolution need not convert them."""
        if self.config.train.channels_last:
            return images.contiguous(memory_format=torch.channels_last)
        return images
