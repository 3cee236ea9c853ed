"""EMA of the ControlNet, a separate learning rate for its new layers, and the memory-saver switches."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import ControlNetModel
from training_helpers import read_metrics, reset_accelerator, run_training, set_up_trainer

from train.memory_savers import NEW_LAYER_PREFIXES, SaverUnavailable


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return ControlNetModel.from_pretrained(folder).state_dict()


def test_ema_is_the_decayed_mix_of_the_steps_weights(tiny_overrides: list[str]) -> None:
    run = Path(tiny_overrides[3].split("=", 1)[1])
    run_training(
        [
            *tiny_overrides,
            "train.max_steps=2",
            "ema.enabled=true",
            "ema.warmup=false",
            "checkpoint.every_n_steps=1",
            "checkpoint.total_limit=null",
        ]
    )
    first, second = _weights(run / "checkpoint-1" / "controlnet"), _weights(run / "controlnet")
    ema = _weights(run / "controlnet_ema")
    # diffusers' EMAModel without warmup copies the weights at its first update, then decays by
    # min(decay, (1 + n) / (10 + n)) with n = updates - 1: 2/11 at the second step.
    torch.testing.assert_close(_weights(run / "checkpoint-1" / "controlnet_ema"), first)
    decay = 2 / 11
    assert any(not torch.equal(first[n], second[n]) for n in first)
    for name, value in ema.items():
        torch.testing.assert_close(value, decay * first[name] + (1 - decay) * second[name])


def test_a_resumed_run_continues_the_same_average(tiny_overrides: list[str], tmp_path: Path) -> None:
    ema = ["ema.enabled=true", "checkpoint.every_n_steps=1", "checkpoint.total_limit=null"]
    straight = [o for o in tiny_overrides if not o.startswith("train.output_dir=")]
    run_training([*straight, f"train.output_dir={tmp_path / 'a'}", "train.max_steps=3", *ema])
    run_training([*straight, f"train.output_dir={tmp_path / 'b'}", "train.max_steps=2", *ema])
    run_training(
        [
            *straight,
            f"train.output_dir={tmp_path / 'b'}",
            "train.max_steps=3",
            "checkpoint.resume=latest",
            *ema,
        ]
    )
    a, b = _weights(tmp_path / "a" / "controlnet_ema"), _weights(tmp_path / "b" / "controlnet_ema")
    for name in a:
        torch.testing.assert_close(a[name], b[name])


def test_new_layers_get_their_own_learning_rate(tiny_overrides: list[str]) -> None:
    run = Path(tiny_overrides[3].split("=", 1)[1])
    trainer = set_up_trainer(
        [*tiny_overrides, "train.max_steps=2", "train.lr=1e-5", "train.lr_new_layers=1e-3"]
    )
    groups = {g["name"]: g for g in trainer.optimizer.param_groups}
    controlnet = trainer.accelerator.unwrap_model(trainer.controlnet)
    new = {id(p) for n, p in controlnet.named_parameters() if n.startswith(NEW_LAYER_PREFIXES)}
    assert {id(p) for p in groups["new_layers"]["params"]} == new and new
    assert len(groups["copied_from_unet"]["params"]) + len(new) == len(list(controlnet.parameters()))
    trainer.train()
    trainer.cleanup()
    reset_accelerator()
    last = read_metrics(run)[-1]
    assert last["lr"] == pytest.approx(1e-5) and last["lr/new_layers"] == pytest.approx(1e-3)


def test_gradient_checkpointing_can_be_chosen_per_model(tiny_overrides: list[str]) -> None:
    trainer = set_up_trainer([*tiny_overrides, "train.gradient_checkpointing=unet"])
    reset_accelerator()
    controlnet = trainer.accelerator.unwrap_model(trainer.controlnet)
    assert trainer.unet.is_gradient_checkpointing and not controlnet.is_gradient_checkpointing


@pytest.mark.parametrize(
    ("switch", "message"),
    [
        ("train.optimizer=adamw_8bit", "needs a CUDA device"),
        ("train.attention=xformers", "train.attention=sdpa"),
    ],
)
def test_a_saver_that_cannot_run_here_stops_setup(
    tiny_overrides: list[str], switch: str, message: str
) -> None:
    if switch.endswith("xformers") and torch.cuda.is_available():
        pytest.skip("xformers may work on this GPU machine")
    with pytest.raises(SaverUnavailable, match=message):
        set_up_trainer([*tiny_overrides, switch])
    reset_accelerator()


def test_the_runs_vae_and_ema_reach_inference(
    tiny_overrides: list[str], tiny_sdxl_dir: Path, tmp_path: Path
) -> None:
    """An fp16-safe VAE given as model.vae encodes the cache and decodes inference images; the EMA
    folder of a checkpoint is a checkpoint of its own for `python -m inference`."""
    from diffusers import AutoencoderKL

    from inference.checkpoints import resolve_checkpoint
    from inference.pipeline import load_pipeline

    vae = AutoencoderKL.from_pretrained(tiny_sdxl_dir, subfolder="vae")
    with torch.no_grad():
        for param in vae.parameters():
            param.add_(0.01)
    vae.save_pretrained(tmp_path / "my_vae")
    run = Path(tiny_overrides[3].split("=", 1)[1])
    run_training(
        [*tiny_overrides, "train.max_steps=1", "ema.enabled=true", f"model.vae={tmp_path / 'my_vae'}"]
    )

    source = resolve_checkpoint(run / "checkpoint-1" / "controlnet_ema")
    assert (source.name, source.step, source.vae) == ("checkpoint-1-ema", 1, str(tmp_path / "my_vae"))
    pipe = load_pipeline(source.base, source.controlnet_dir, vae=source.vae)
    loaded = pipe.denoiser.vae.state_dict()
    for name, value in vae.state_dict().items():
        assert torch.equal(loaded[name], value), name


def test_the_average_stays_fp32_when_the_weights_are_bf16(tiny_sdxl_dir: Path) -> None:
    """As under DeepSpeed bf16, late in training: a step of a ~0.999 decay near 1.0 is below bf16's
    resolution (2^-7 there), so an average kept in bf16 would never move."""
    from accelerate import Accelerator
    from diffusers import UNet2DConditionModel

    from train.config import EmaConfig
    from train.ema import ControlNetEma

    unet = UNet2DConditionModel.from_pretrained(tiny_sdxl_dir, subfolder="unet")
    controlnet = ControlNetModel.from_unet(unet).to(torch.bfloat16)
    name = "controlnet_mid_block.weight"
    weight = dict(controlnet.named_parameters())[name]
    with torch.no_grad():
        weight.fill_(1.0)
    ema = ControlNetEma(EmaConfig(enabled=True, warmup=False), controlnet, Accelerator(cpu=True))
    reset_accelerator()
    ema.ema.optimization_step = 10_000  # decay (1 + n) / (10 + n) = 0.9991
    with torch.no_grad():
        weight.fill_(2.0)
    for step in range(10):
        ema.update(step, controlnet)
    averaged = ema.averaged_controlnet(controlnet).state_dict()[name]
    assert averaged.dtype == torch.float32
    assert torch.all(averaged > 1.005) and torch.all(averaged < 1.02), "the average did not follow"
