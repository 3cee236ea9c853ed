"""Exponential moving average of the ControlNet weights (diffusers' EMAModel), saved as `controlnet_ema/`.

The EMA state (shadow weights, step count) is registered with accelerate, so it is part of every
checkpoint and a resumed run continues the same average.
"""

from __future__ import annotations

import torch
from accelerate import Accelerator
from diffusers import ControlNetModel
from diffusers.training_utils import EMAModel

from common.run_layout import EMA_DIR
from train.config import EmaConfig

__all__ = ["EMA_DIR", "ControlNetEma"]


class ControlNetEma:
    """Tracks the trainable ControlNet parameters; updated after every `update_every_n_steps` steps."""

    def __init__(self, cfg: EmaConfig, controlnet: ControlNetModel, accelerator: Accelerator) -> None:
        self.cfg = cfg
        self.device = torch.device("cpu") if cfg.offload_to_cpu else accelerator.device
        # The average is kept in fp32 whatever the training weights are (bf16 under DeepSpeed): a
        # 1e-4 step of a 0.9999 decay is below bf16's resolution, so a bf16 average would never move.
        start = [
            torch.nn.Parameter(p.detach().to(self.device, torch.float32, copy=True))
            for p in controlnet.parameters()
        ]
        self.ema = EMAModel(
            start,
            decay=cfg.decay,
            use_ema_warmup=cfg.warmup,
            power=cfg.power,
            foreach=True,
            model_cls=ControlNetModel,
            model_config=controlnet.config,
        )
        accelerator.register_for_checkpointing(self.ema)

    def _tracked(self, controlnet: ControlNetModel) -> list[torch.nn.Parameter]:
        """The parameters (any dtype: the update promotes to the fp32 average), or their CPU copies with
        offloading (EMAModel averages only parameters that require grad, so the copies keep that flag)."""
        params = list(controlnet.parameters())
        if self.device.type == params[0].device.type:
            return params
        return [torch.nn.Parameter(p.detach().to(self.device)) for p in params]

    @torch.no_grad()
    def update(self, step: int, controlnet: ControlNetModel) -> None:
        if step % self.cfg.update_every_n_steps == 0:
            self.ema.step(self._tracked(controlnet))

    def averaged_controlnet(self, like: ControlNetModel) -> ControlNetModel:
        """A plain ControlNet (on CPU) holding the averaged weights, for `save_pretrained`."""
        model = ControlNetModel.from_config(like.config)
        self.ema.copy_to(model.parameters())
        return model
