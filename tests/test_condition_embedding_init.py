"""`model.condition_embedding_init: matched`: the condition is as loud in the trunk as the latents from step
0, the base does not change at step 0, and the output convolutions' first gradient depends on the
condition (with diffusers' zero init it does not)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import ControlNetModel, UNet2DConditionModel

from train.config import ModelConfig
from train.sdxl_models import build_controlnet, match_condition_scale

BASE = Path(__file__).parent.parent / "assets" / "tiny-sdxl-trained"


@pytest.fixture(scope="module")
def unet() -> UNet2DConditionModel:
    return UNet2DConditionModel.from_pretrained(BASE, subfolder="unet")


def _conditions() -> tuple[torch.Tensor, torch.Tensor]:
    """Two outlines that differ: a bright square on the left half, and on the right half."""
    left, right = torch.zeros(3, 128, 128), torch.zeros(3, 128, 128)
    left[:, 40:80, 10:50] = 1.0
    right[:, 40:80, 78:118] = 1.0
    return left, right


def _samples() -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [
        {"conditioning_pixel_values": c, "latents": torch.randn(4, 16, 16, generator=generator)}
        for c in _conditions()
    ]


def _controlnet(unet: UNet2DConditionModel, matched: bool, seed: int = 0) -> ControlNetModel:
    torch.manual_seed(0)  # the embedder's other layers: drawn by diffusers, seeded by the trainer
    controlnet = build_controlnet(ModelConfig(base=str(BASE)), unet)
    if matched:
        match_condition_scale(controlnet, _samples(), seed)
    return controlnet


def _inputs(unet: UNet2DConditionModel, condition: torch.Tensor) -> dict[str, object]:
    generator = torch.Generator().manual_seed(0)
    pooled = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
    return {
        "sample": torch.randn(1, 4, 16, 16, generator=generator),
        "timestep": torch.full((1,), 900),
        "encoder_hidden_states": torch.randn(1, 77, unet.config.cross_attention_dim, generator=generator),
        "added_cond_kwargs": {
            "text_embeds": torch.randn(1, pooled, generator=generator),
            "time_ids": torch.tensor([[128.0, 128, 0, 0, 128, 128]]),
        },
        "controlnet_cond": condition[None],
        "return_dict": False,
    }


def _output_conv_gradient(
    controlnet: ControlNetModel, unet: UNet2DConditionModel, condition: torch.Tensor
) -> torch.Tensor:
    """The mid block output convolution's gradient under a fixed linear probe of the residuals: it is
    the trunk's features there, so it depends on the condition only if the condition reached them."""
    controlnet.zero_grad()
    down, mid = controlnet(**_inputs(unet, condition))
    probe = sum((r * torch.linspace(-1, 1, r.numel()).view_as(r)).sum() for r in (*down, mid))
    probe.backward()
    return controlnet.controlnet_mid_block.weight.grad.clone()


def test_matched_init_is_seeded_scaled_and_leaves_the_output_zero(unet: UNet2DConditionModel) -> None:
    first, again, other = _controlnet(unet, True), _controlnet(unet, True), _controlnet(unet, True, seed=1)
    weight = "controlnet_cond_embedding.conv_out.weight"
    assert not _controlnet(unet, False).state_dict()[weight].any(), "diffusers' zero init by default"
    assert torch.equal(first.state_dict()[weight], again.state_dict()[weight])
    assert not torch.equal(first.state_dict()[weight], other.state_dict()[weight])
    with torch.no_grad():
        samples = _samples()
        embedded = [
            first.controlnet_cond_embedding(s["conditioning_pixel_values"][None]).std() for s in samples
        ]
        trunk = [first.conv_in(s["latents"][None]).std() for s in samples]
        assert torch.stack(embedded).mean() == pytest.approx(torch.stack(trunk).mean().item(), rel=1e-4)
        down, mid = first(**_inputs(unet, _conditions()[0]))
    assert all(not r.any() for r in down) and not mid.any(), "step 0 must still be exactly the base"


def test_only_matched_init_lets_the_condition_steer_the_first_gradient(unet: UNet2DConditionModel) -> None:
    left, right = _conditions()
    for matched in (False, True):
        controlnet = _controlnet(unet, matched)
        grads = [_output_conv_gradient(controlnet, unet, cond) for cond in (left, right)]
        assert (not torch.allclose(grads[0], grads[1])) is matched
