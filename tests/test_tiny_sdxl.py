"""The tiny SDXL must load through the exact code paths used for real SDXL, offline and fast."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    DDPMScheduler,
    StableDiffusionXLControlNetPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from PIL import Image
from safetensors.torch import load_file
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from train.tiny_sdxl import build_tiny_controlnet, build_tiny_sdxl, main

UNET_WEIGHTS = "unet/diffusion_pytorch_model.safetensors"
PROMPT = "pale golden rod circle with old lace background"


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _generator() -> torch.Generator:
    return torch.Generator("cpu").manual_seed(0)


def test_layout_matches_sdxl(tiny_sdxl_dir: Path) -> None:
    index = json.loads((tiny_sdxl_dir / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionXLPipeline"
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert index["text_encoder_2"] == ["transformers", "CLIPTextModelWithProjection"]
    for sub in ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler"):
        assert (tiny_sdxl_dir / sub).is_dir(), sub
    assert (tiny_sdxl_dir / UNET_WEIGHTS).is_file()
    assert (tiny_sdxl_dir / "text_encoder" / "model.safetensors").is_file()
    assert not list(tiny_sdxl_dir.parent.glob(".*tmp-*")), "temp build dirs left behind"


def test_trainer_loading_code_and_shape_contract(tiny_sdxl_dir: Path) -> None:
    base = str(tiny_sdxl_dir)
    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
    vae = AutoencoderKL.from_pretrained(base, subfolder="vae")
    te1 = CLIPTextModel.from_pretrained(base, subfolder="text_encoder")
    te2 = CLIPTextModelWithProjection.from_pretrained(base, subfolder="text_encoder_2")
    scheduler = DDPMScheduler.from_pretrained(base, subfolder="scheduler")

    assert te1.config.hidden_size + te2.config.hidden_size == unet.config.cross_attention_dim
    assert (
        6 * unet.config.addition_time_embed_dim + te2.config.projection_dim
        == unet.config.projection_class_embeddings_input_dim
    )
    assert sum(p.numel() for p in unet.parameters()) < 5_000_000
    assert vae.config.scaling_factor == pytest.approx(0.13025)
    with torch.no_grad():
        latents = vae.encode(torch.zeros(1, 3, 128, 128)).latent_dist.mode()
    assert latents.shape == (1, 4, 16, 16)
    assert scheduler.config.num_train_timesteps == 1000
    assert scheduler.config.prediction_type == "epsilon"
    assert scheduler.config.beta_schedule == "scaled_linear"


@pytest.mark.parametrize("subfolder", ["tokenizer", "tokenizer_2"])
def test_tokenizer_round_trip(tiny_sdxl_dir: Path, subfolder: str) -> None:
    tokenizer = CLIPTokenizer.from_pretrained(str(tiny_sdxl_dir), subfolder=subfolder)
    encoder_dir = tiny_sdxl_dir / subfolder.replace("tokenizer", "text_encoder")
    encoder_cfg = json.loads((encoder_dir / "config.json").read_text())

    assert len(tokenizer) == encoder_cfg["vocab_size"] == 1000
    assert tokenizer.model_max_length == 77
    assert tokenizer.bos_token_id == encoder_cfg["bos_token_id"]
    assert tokenizer.eos_token_id == encoder_cfg["eos_token_id"]
    assert tokenizer.pad_token_id == encoder_cfg["pad_token_id"]
    assert tokenizer.pad_token == ("!" if subfolder == "tokenizer_2" else "<|endoftext|>")

    ids = tokenizer(PROMPT).input_ids
    assert max(ids) < 1000
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert len(ids) <= 2 + 2 * len(PROMPT.split()), "common words should take few tokens"
    assert tokenizer.decode(ids, skip_special_tokens=True) == PROMPT

    padded = tokenizer(PROMPT, padding="max_length", max_length=77, truncation=True).input_ids
    assert len(padded) == 77 and max(padded) < 1000


def test_sdxl_pipeline_generates(tiny_sdxl_dir: Path) -> None:
    pipe = StableDiffusionXLPipeline.from_pretrained(str(tiny_sdxl_dir))
    pipe.set_progress_bar_config(disable=True)
    image = pipe(
        PROMPT, num_inference_steps=2, height=128, width=128, output_type="np", generator=_generator()
    ).images
    assert image.shape == (1, 128, 128, 3)
    assert np.isfinite(image).all()


def test_controlnet_pipeline_generates_and_condition_matters(
    tiny_sdxl_dir: Path, tiny_controlnet_dir: Path
) -> None:
    controlnet = ControlNetModel.from_pretrained(str(tiny_controlnet_dir))
    pipe = StableDiffusionXLControlNetPipeline.from_pretrained(str(tiny_sdxl_dir), controlnet=controlnet)
    pipe.set_progress_bar_config(disable=True)
    edges = np.zeros((128, 128, 3), dtype=np.uint8)
    edges[32:96, 62:66] = 255
    common = {"num_inference_steps": 2, "height": 128, "width": 128, "output_type": "np"}

    image = pipe(PROMPT, image=Image.fromarray(edges), generator=_generator(), **common).images
    unconditioned = pipe(
        PROMPT,
        image=Image.fromarray(edges),
        generator=_generator(),
        controlnet_conditioning_scale=0.0,
        **common,
    ).images
    assert image.shape == (1, 128, 128, 3)
    assert np.isfinite(image).all()
    assert not np.allclose(image, unconditioned), "perturbed zero-convs should let the condition act"


def test_controlnet_zero_convs_are_perturbed(tiny_controlnet_dir: Path) -> None:
    weights = load_file(tiny_controlnet_dir / "diffusion_pytorch_model.safetensors")
    for name in ("controlnet_mid_block.weight", "controlnet_down_blocks.0.weight"):
        assert weights[name].abs().max() > 0, name
    assert _dir_size(tiny_controlnet_dir) < 30 * 2**20


def test_same_seed_same_weights_and_rng_untouched(tiny_sdxl_dir: Path, tmp_path: Path) -> None:
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    again = build_tiny_sdxl(tmp_path / "again", seed=0)
    assert torch.equal(torch.rand(3), expected_draw), "building must not consume the caller's RNG"

    for rel in (UNET_WEIGHTS, "text_encoder_2/model.safetensors", "vae/diffusion_pytorch_model.safetensors"):
        first, second = load_file(tiny_sdxl_dir / rel), load_file(again / rel)
        assert first.keys() == second.keys()
        assert all(torch.equal(first[k], second[k]) for k in first), rel

    other = build_tiny_sdxl(tmp_path / "other", seed=1)
    key = "conv_in.weight"
    assert not torch.equal(load_file(other / UNET_WEIGHTS)[key], load_file(again / UNET_WEIGHTS)[key])


def test_existing_build_is_not_rebuilt(tiny_sdxl_dir: Path) -> None:
    weights = tiny_sdxl_dir / UNET_WEIGHTS
    before = (weights.stat().st_mtime_ns, (tiny_sdxl_dir / "model_index.json").stat().st_mtime_ns)
    assert build_tiny_sdxl(tiny_sdxl_dir, seed=5) == tiny_sdxl_dir
    assert (weights.stat().st_mtime_ns, (tiny_sdxl_dir / "model_index.json").stat().st_mtime_ns) == before


def test_overwrite_rebuilds_and_foreign_dir_is_refused(tmp_path: Path) -> None:
    out = build_tiny_sdxl(tmp_path / "sdxl", seed=0)
    old = load_file(out / UNET_WEIGHTS)["conv_in.weight"]
    build_tiny_sdxl(out, seed=1, overwrite=True)
    assert not torch.equal(load_file(out / UNET_WEIGHTS)["conv_in.weight"], old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sdxl"], "no temp or old dirs left"

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not a model")
    with pytest.raises(FileExistsError):
        build_tiny_sdxl(foreign)
    assert (foreign / "notes.txt").read_text() == "not a model"


def test_folder_is_small(tiny_sdxl_dir: Path) -> None:
    assert _dir_size(tiny_sdxl_dir) < 30 * 2**20


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "--controlnet" in capsys.readouterr().out

    main([str(tmp_path / "sdxl"), "--seed", "3", "--controlnet", str(tmp_path / "cn")])
    assert (tmp_path / "sdxl" / "model_index.json").is_file()
    assert (tmp_path / "cn" / "config.json").is_file()
    assert build_tiny_controlnet(tmp_path / "sdxl", tmp_path / "cn") == (tmp_path / "cn").absolute()


def test_test_size_vae_is_the_issues_13_mb_fixture_and_encodes_8x(tmp_path: Path) -> None:
    """`--vae-size test`: the tiny SDXL of the reference's quoted numbers (~13 MB, diffusers' test VAE widths
    over 4 blocks); the rest of the folder is the default build's."""
    main([str(tmp_path / "sdxl"), "--vae-size", "test"])
    assert 12.5 * 2**20 < _dir_size(tmp_path / "sdxl") < 14 * 2**20
    vae = AutoencoderKL.from_pretrained(tmp_path / "sdxl", subfolder="vae")
    assert tuple(vae.config.block_out_channels) == (32, 64, 64, 64)
    with torch.no_grad():
        latents = vae.encode(torch.zeros(1, 3, 64, 96)).latent_dist.mode()
    assert latents.shape == (1, 4, 8, 12)
    default = build_tiny_sdxl(tmp_path / "small")
    assert load_file(tmp_path / "sdxl" / UNET_WEIGHTS).keys() == load_file(default / UNET_WEIGHTS).keys()
    with pytest.raises(ValueError, match="vae_size='huge'"):
        build_tiny_sdxl(tmp_path / "other", vae_size="huge")
