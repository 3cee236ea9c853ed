"""One batch through the pipeline, with the degradations that keep a request alive.

Built on ``inference.pipeline`` (``denoise_latents`` and ``decode_latents``); what this module adds is
what a long-running service needs around them, each reported by name so the caller can count it:

* ``compile_eager``: torch.compile failed at the first call; inference's own fallback ran the eager
  modules, and the registry keeps them for every later call;
* ``oom_smaller_batch``: out of device memory while denoising: free the cache and run the batch in
  halves (down to one image; every image has its own generator, so the pictures do not change);
* ``oom_vae_tiling``: out of memory while decoding: free the cache and decode in tiles;
* ``vae_fp32``: a float16 VAE decoded NaNs: the VAE runs in float32 from now on.

Out of memory with nothing left to try is ``DeviceOutOfMemory`` (503).
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass, field

import torch
from PIL import Image

from inference.pipeline import GenerationSettings, decode_latents, denoise_latents
from serve.adaptive import StepWatcher
from serve.errors import DeviceOutOfMemory
from serve.jobs import Job
from serve.registry import Registry

logger = logging.getLogger(__name__)

__all__ = ["BatchOutput", "run_batch", "settings_of"]


@dataclass
class BatchOutput:
    images: list[Image.Image]
    steps_run: int
    fallbacks: list[str] = field(default_factory=list)
    scheduler: str = ""
    """Class name of the scheduler the batch ran with."""


def settings_of(job: Job) -> GenerationSettings:
    return GenerationSettings(
        num_inference_steps=job.steps,
        guidance_scale=job.guidance,
        controlnet_conditioning_scale=job.conditioning_scale,
        negative_prompt=job.negative_prompt,
        scheduler=job.scheduler,
        control_guidance_start=job.control_start,
        control_guidance_end=job.control_end,
    )


def _free_device_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _denoise(registry: Registry, jobs: list[Job], watcher: StepWatcher, out: BatchOutput) -> torch.Tensor:
    """Latents of ``jobs``; on OOM the batch is split in halves, each with a fresh pipeline view.

    The retry happens after the ``except`` block: while the exception lives, its traceback keeps the
    failed call's activations alive and emptying the cache could not give their memory back.
    """
    first = jobs[0]
    view = registry.view(first.checkpoint, first.scheduler)
    out.scheduler = type(view.denoiser.scheduler).__name__
    compiled = bool(view.eager)
    watcher.reset()
    if watcher.threshold is not None:
        watcher.watch(view.denoiser.scheduler)
    out_of_memory = ""
    try:
        latents = denoise_latents(
            view, [j.prompt for j in jobs], [j.condition for j in jobs], [j.seed for j in jobs],
            first.size, settings_of(first), on_step=watcher,
        )  # fmt: skip
    except torch.OutOfMemoryError as err:
        out_of_memory = str(err) or "out of memory"
    finally:
        if compiled and not view.eager:  # inference's compile fallback ran eager modules
            registry.to_eager(first.checkpoint)
            out.fallbacks.append("compile_eager")
    if out_of_memory:
        _free_device_memory()
        if len(jobs) == 1:
            raise DeviceOutOfMemory(f"out of device memory while denoising one image: {out_of_memory}")
        logger.warning("out of memory denoising %d images; retrying in halves (%s)", len(jobs), out_of_memory)
        out.fallbacks.append("oom_smaller_batch")
        half = len(jobs) // 2
        return torch.cat([_denoise(registry, part, watcher, out) for part in (jobs[:half], jobs[half:])])
    if watcher.stopped_early and watcher.estimate is not None:
        return watcher.estimate  # the sampler's clean prediction, not the half-denoised latents
    return latents


def _try_decode(denoiser: object, latents: torch.Tensor) -> torch.Tensor | str:
    """Decoded pixels (-1..1), or the out-of-memory message (so the caller frees memory outside
    the exception's lifetime)."""
    try:
        with torch.inference_mode():
            return decode_latents(denoiser, latents, output_type="pt")  # type: ignore[arg-type,return-value]
    except torch.OutOfMemoryError as err:
        return str(err) or "out of memory"


def _decode_pixels(
    registry: Registry, checkpoint: str, latents: torch.Tensor, out: BatchOutput
) -> torch.Tensor:
    """Decoded pixels (-1..1); on OOM once more with VAE tiling."""
    denoiser = registry.base_of(checkpoint).denoiser
    pixels = _try_decode(denoiser, latents)
    if not isinstance(pixels, str):
        return pixels
    _free_device_memory()
    vae = denoiser.vae
    if vae.use_tiling:
        raise DeviceOutOfMemory(f"out of device memory while decoding with VAE tiling: {pixels}")
    logger.warning("out of memory decoding %d images; decoding in tiles (%s)", len(latents), pixels)
    out.fallbacks.append("oom_vae_tiling")
    vae.enable_tiling()
    try:
        pixels = _try_decode(denoiser, latents)
    finally:
        if not registry.speed.vae_tiling:
            vae.disable_tiling()
    if isinstance(pixels, str):
        _free_device_memory()
        raise DeviceOutOfMemory(f"out of device memory while decoding, even in tiles: {pixels}")
    return pixels


def _decode(
    registry: Registry, checkpoint: str, latents: torch.Tensor, out: BatchOutput
) -> list[Image.Image]:
    denoiser = registry.base_of(checkpoint).denoiser
    pixels = _decode_pixels(registry, checkpoint, latents, out)
    if not torch.isfinite(pixels).all() and denoiser.vae.dtype == torch.float16:
        logger.warning("the float16 VAE decoded NaN/inf; decoding in float32 from now on")
        registry.upcast_vae(checkpoint)
        out.fallbacks.append("vae_fp32")
        pixels = _decode_pixels(registry, checkpoint, latents, out)
    if not torch.isfinite(pixels).all():
        logger.error("decoded images hold NaN/inf even with a float32 VAE; they will be black in places")
        pixels = torch.nan_to_num(pixels, nan=0.0, posinf=1.0, neginf=-1.0)
    return denoiser.image_processor.postprocess(pixels, output_type="pil")


def run_batch(registry: Registry, jobs: list[Job]) -> BatchOutput:
    """Images for ``jobs`` (same BatchKey), in order."""
    first = jobs[0]
    watcher = StepWatcher(jobs, first.steps, first.adaptive_threshold)
    out = BatchOutput([], 0)
    latents = _denoise(registry, jobs, watcher, out)
    out.steps_run = watcher.steps_run
    out.images = _decode(registry, first.checkpoint, latents, out)
    return out
