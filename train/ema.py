"""Exponential moving average of the ControlNet weights (diffusers' EMAModel), saved as `controlnet_ema/`.

The EMA state (shadow weights, step count) is registered with accelerate, so it is part of every
checkpoint and a resumed run continues the same average.
"""

from __future__ import annotations

import torch
from accelerate import Accelerator
from diffusers import ControlNetModel
from diffusers.training_utils import EMAModel

from train.config import EmaConfig
from train.run_layout import EMA_DIR

__all__ = ["EMA_DIR", "ControlNetEma"]


class ControlNetEma:
    """Tracks the trainable ControlNet parameters; updated after every `update_every_n_steps` steps."""

    def __init__(self, cfg: EmaConfig, controlnet: ControlNetModel, accelerator: Accelerator) -> None:
        self.cfg = cfg
        self.device = torch.device("cpu") if cfg.offload_to_cpu else accelerator.device
        self.ema = EMAModel(
            self._tracked(controlnet),
            decay=cfg.decay,
            use_ema_warmup=cfg.warmup,
            power=cfg.power,
            foreach=True,
            model_cls=ControlNetModel,
            model_config=controlnet.config,
        )
        accelerator.register_for_checkpointing(self.ema)

    def _tracked(self, controlnet: ControlNetModel) -> list[torch.nn.Parameter]:
        """The parameters, or their CPU copies with offloading (EMAModel averages only parameters that
        require grad, so the copies keep that flag)."""
        params = [p for p in controlnet.parameters() if p.requires_grad]
        if self.device.type == params[0].device.type:
            return params
        return [torch.nn.Parameter(p.detach().to(self.device)) for p in params]

    @property
    def decay(self) -> float:
        return float(self.ema.cur_decay_value or 0.0)

    @torch.no_grad()
    def update(self, step: int, controlnet: ControlNetModel) -> None:
        if step % self.cfg.update_every_n_steps == 0:
            self.ema.step(self._tracked(controlnet))

    def averaged_controlnet(self, like: ControlNetModel) -> ControlNetModel:
        """A plain ControlNet (on CPU) holding the averaged weights, for `save_pretrained`."""
        model = ControlNetModel.from_config(like.config)
        self.ema.copy_to(model.parameters())
        return model
