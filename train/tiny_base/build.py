"""Build the trained tiny SDXL base: corpus -> VAE -> encoded cache -> UNet -> diffusers folder.

Every stage resumes: the corpus builders keep finished files, a VAE trained for the same recipe is
reused from the work folder, the encoded cache is the trainer's. The output is the same folder layout
as the random tiny SDXL (`model_index.json`, `unet`, `vae`, `text_encoder(_2)`, `tokenizer(_2)`,
`scheduler`), loadable by plain `StableDiffusionXLPipeline.from_pretrained`, plus `pretraining.json`
(the recipe and what was measured: reconstruction PSNR/SSIM, losses, sample colour coverage, timings)
and `samples.png`. It is written into a temp folder and renamed into place when complete.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from diffusers import AutoencoderKL, DDPMScheduler, EulerDiscreteScheduler, StableDiffusionXLPipeline

from common.atomic import atomic_save_image, atomic_write_json
from data.records import read_records
from train.config import DataConfig, ModelConfig
from train.encoded_cache import CacheSpec, EncodedCache, Encoders, build_encoded_cache
from train.sdxl_models import load_prompt_encoders, load_vae
from train.tiny_base.corpus import Corpus, CorpusRecipe, build_corpus, load_images
from train.tiny_base.samples import sample_grid
from train.tiny_base.unet_stage import UnetRecipe, train_unet
from train.tiny_base.vae_stage import (
    VaeRecipe,
    center_latents,
    latent_scaling_factor,
    reconstruct,
    reconstruction_scores,
    train_vae,
)
from train.tiny_sdxl import tiny_pipeline, write_atomically

logger = logging.getLogger(__name__)

REPORT_FILE = "pretraining.json"
SAMPLES_FILE = "samples.png"
SAMPLE_PROMPTS = (
    "red circle with navy background",
    "gold circle with dark slate blue background",
    "white circle with fire brick background",
    "a keyboard skin",
)


@dataclass(frozen=True)
class BaseRecipe:
    seed: int = 0
    vae_size: str = "trained"
    prediction_type: str = "v_prediction"
    """SDXL predicts the noise; at 16x16 latents an epsilon UNet trained for minutes turns its small errors
    into large ones at high noise (x0 = (x_t - sqrt(1 - a) eps) / sqrt(a), 14x at t = 999), so samples
    keep noise and a ControlNet's layout signal is tiny there. A v-prediction UNet (SD 2.x-v) predicts
    the clean latent at high noise instead; the trainer and diffusers' schedulers take either."""
    zero_terminal_snr: bool = True
    """Rescale the betas to zero terminal SNR and sample with trailing timesteps (Lin et al. 2023, "Common
    Diffusion Noise Schedules and Sample Steps are Flawed"; needs v-prediction). With SDXL's schedule a
    trace of the image survives at t = 999; a model learns to read the layout from it, and at inference,
    from pure noise, the seed decides the layout instead: a ControlNet then learns the condition (its loss
    drops) but samples still put the circle where the seed's noise does."""
    corpus: CorpusRecipe = field(default_factory=CorpusRecipe)
    vae: VaeRecipe = field(default_factory=VaeRecipe)
    unet: UnetRecipe = field(default_factory=UnetRecipe)


CIRCLES_RECIPE = BaseRecipe(
    vae_size="trained4x",
    corpus=CorpusRecipe(fill=4096, skins=0, heldout_fill=64, heldout_skins=0),
    vae=VaeRecipe(steps=800, decoder_steps=800),
    unet=UnetRecipe(steps=2500),
)
"""The demo's base (`assets/tiny-sdxl-circles`): fill circles only, through a 4x VAE (32² latents at
128²), so a 2 px outline is half a latent pixel wide instead of a quarter and a circle of radius 12-48 px
spans 6-24 latents: the UNet, and a ControlNet on it, draw shapes on a grid fine enough to be circles.
Its UNet trains on one kind of picture."""

RECIPES = {"keyboard": BaseRecipe(), "circles": CIRCLES_RECIPE}
"""`python -m train.tiny_base --recipe NAME`: "keyboard" is `assets/tiny-sdxl-trained` (fills and skins,
8x VAE; the text-loss work's base), "circles" is `assets/tiny-sdxl-circles` (the demo's)."""

QUICK_RECIPE = BaseRecipe(
    corpus=CorpusRecipe(fill=16, skins=4, heldout_fill=4, heldout_skins=2),
    vae=VaeRecipe(steps=3, batch_size=2, decoder_steps=2),
    unet=UnetRecipe(steps=3, batch_size=4, warmup_steps=1),
)
"""A few steps of every stage: what the test runs to show the recipe still builds a loadable base."""


def _schedule(recipe: BaseRecipe) -> dict[str, object]:
    """The base's noise schedule and parameterisation: scheduler config keys every diffusers scheduler
    (and the trainer's DDPMScheduler) reads."""
    schedule: dict[str, object] = {"prediction_type": recipe.prediction_type}
    if recipe.zero_terminal_snr:
        schedule |= {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing"}
    return schedule


def _trained_vae(
    pipe: StableDiffusionXLPipeline, images: np.ndarray, recipe: BaseRecipe, folder: Path
) -> dict[str, object]:
    """Trains the VAE into `pipe`, or reuses the one an earlier build left in `folder` for the same VAE
    recipe, corpus, seed and thread count (bit-identical then); returns its losses and training time."""
    key = {
        "seed": recipe.seed,
        "vae_size": recipe.vae_size,
        "vae": dataclasses.asdict(recipe.vae),
        "corpus": dataclasses.asdict(recipe.corpus),
        "torch_threads": torch.get_num_threads(),
    }
    marker = folder / "stage.json"
    if marker.is_file() and (done := json.loads(marker.read_text(encoding="utf-8")))["recipe"] == key:
        logger.info("Reusing the VAE trained for this recipe in %s", folder)
        reused = AutoencoderKL.from_pretrained(folder)
        # Rebuilt from its config without `_name_or_path`, so the shipped config names no work folder.
        pipe.vae = AutoencoderKL.from_config({k: v for k, v in reused.config.items() if k != "_name_or_path"})
        pipe.vae.load_state_dict(reused.state_dict())
        pipe.vae.eval()
        return done | {"reused": True}
    start = time.perf_counter()
    losses = train_vae(pipe.vae, images, recipe.vae, recipe.seed)
    done = {"recipe": key, "last_losses": losses, "train_seconds": time.perf_counter() - start}
    pipe.vae.save_pretrained(folder, safe_serialization=True)
    atomic_write_json(marker, done)
    return done


def _heldout_scores(pipe: StableDiffusionXLPipeline, corpus: Corpus) -> dict[str, dict[str, float]]:
    """Reconstruction PSNR/SSIM on held-out fill and skin images, separately (they differ a lot)."""
    images = load_images(corpus.heldout_jsonl)
    is_fill = np.array([r.image.startswith("heldout_fill/") for r in read_records(corpus.heldout_jsonl)])
    scores = {}
    for name, mask in (("fill", is_fill), ("skins", ~is_fill)):
        if mask.any():
            scores[name] = reconstruction_scores(images[mask], reconstruct(pipe.vae, images[mask]))
    logger.info("VAE reconstruction of held-out images: %s", scores)
    return scores


def _encoded_cache(stage_dir: Path, corpus: Corpus, work: Path, resolution: int) -> EncodedCache:
    """Latents and prompt embeddings of the corpus under the stage-1 model, by the trainer's own cache."""
    model = ModelConfig(base=str(stage_dir))
    records = read_records(corpus.train_jsonl)
    spec = CacheSpec.create(
        model, DataConfig(resolution=resolution), corpus.train_jsonl, records, dtype=torch.float32
    )
    folder = build_encoded_cache(
        records,
        corpus.train_jsonl.parent,
        spec,
        lambda: Encoders(load_vae(model), load_prompt_encoders(model)),
        Accelerator(cpu=True),
        work / "cache",
        batch_size=32,
    )
    return EncodedCache(folder)


def train_base(out: Path, recipe: BaseRecipe, work: Path) -> dict[str, object]:
    """Runs every stage and saves the pipeline into `out`; returns the report."""
    timings: dict[str, float] = {}
    start = time.perf_counter()
    pipe = tiny_pipeline(recipe.seed, recipe.vae_size, recipe.corpus.resolution)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, **_schedule(recipe))
    # The UNet learns the empty prompt as the trainer's prompt dropout encodes it (""), so classifier-free
    # guidance must use that, not SDXL's zeroed embeddings (unseen in training: guided samples turn to noise).
    pipe.register_to_config(force_zeros_for_empty_prompt=False)
    corpus = build_corpus(work / "corpus", recipe.corpus, recipe.seed)
    timings["corpus_s"] = time.perf_counter() - start

    images = load_images(corpus.train_jsonl)
    vae_stage = _trained_vae(pipe, images, recipe, work / "vae_stage")
    timings["vae_s"] = vae_stage["train_seconds"]
    latent_mean = center_latents(pipe.vae, images)
    pipe.vae.register_to_config(scaling_factor=latent_scaling_factor(pipe.vae, images))
    reconstruction = _heldout_scores(pipe, corpus)

    stage_dir = work / "stage1"
    pipe.save_pretrained(stage_dir, safe_serialization=True)
    cache = _encoded_cache(stage_dir, corpus, work, recipe.corpus.resolution)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    unet_start = time.perf_counter()
    unet_losses = train_unet(pipe.unet, cache, scheduler, recipe.unet, recipe.seed)
    timings["unet_s"] = time.perf_counter() - unet_start

    pipe.save_pretrained(out, safe_serialization=True)
    prompts = SAMPLE_PROMPTS if recipe.corpus.skins else SAMPLE_PROMPTS[:-1]
    grid, sample_scores = sample_grid(pipe, prompts, seeds=(0, 1, 2, 3))
    atomic_save_image(grid, out / SAMPLES_FILE)
    reused_vae_s = timings["vae_s"] if vae_stage.get("reused") else 0.0
    timings["total_s"] = time.perf_counter() - start + reused_vae_s  # as if the VAE had been trained now
    return {
        "recipe": dataclasses.asdict(recipe),
        "vae_scaling_factor": pipe.vae.config.scaling_factor,
        "vae_latent_mean_removed": latent_mean,
        "vae_last_losses": vae_stage["last_losses"],
        "vae_heldout_reconstruction": reconstruction,
        "unet": unet_losses,
        "samples": sample_scores,
        "timings": timings,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def build_trained_base(
    out_dir: str | Path,
    recipe: BaseRecipe = BaseRecipe(),
    work_dir: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Trains the base into `out_dir` (kept untouched if it is already complete and not `overwrite`).

    `work_dir` keeps the corpus and the encoded cache (default: a sibling `<out_dir>.work` folder), so a
    rebuild with the same recipe skips making the data.
    """
    out_dir = Path(out_dir)
    work = Path(work_dir) if work_dir else out_dir.with_name(out_dir.name + ".work")

    def write(tmp: Path) -> None:
        logger.info("Training the tiny SDXL base (seed %d) into %s", recipe.seed, out_dir)
        report = train_base(tmp, recipe, work)
        atomic_write_json(tmp / REPORT_FILE, report)
        logger.info("Trained base: %s", report)

    return write_atomically(out_dir, "model_index.json", overwrite, write)
