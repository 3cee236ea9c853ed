"""Load an SDXL ControlNet pipeline and generate reproducible, batched images from it.

Shared by batch inference and by the trainer's validation (which passes its in-memory UNet and
ControlNet so nothing is reloaded from disk). Every image gets its own ``torch.Generator`` seeded
from its own seed, so an image depends only on (prompt, condition, seed, settings), not on which
batch it happened to land in: a resumed or re-batched run reproduces the same pictures.

The pipeline is split in two diffusers pipelines: a text-only SDXL pipeline behind a PromptEncoder
(embeddings once per unique prompt) and the ControlNet pipeline without text encoders. The split is
what lets each part have its own dtype: diffusers casts embeddings to the text encoder's dtype while
it has one, and to the UNet's when it has none. Latents are decoded here, in the VAE's own dtype, for
the same reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    StableDiffusionXLControlNetPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from PIL import Image

from inference.prompts import PromptEncoder
from inference.schedulers import make_scheduler
from inference.settings import SIZE_MULTIPLE, ComponentDtypes, GenerationSettings, SpeedSettings
from inference.speed import (
    EagerModules,
    call_with_compile_fallback,
    compile_denoiser,
    configure,
    place,
    prepare_controlnet,
    usable,
)

logger = logging.getLogger(__name__)

__all__ = [
    "ControlNetPipeline",
    "GenerationSettings",
    "StepHook",
    "decode_latents",
    "denoise_latents",
    "generate",
    "load_pipeline",
    "output_size",
    "swap_controlnet",
]

_TEXT_PARTS = ("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")


@dataclass
class ControlNetPipeline:
    """The denoising pipeline, the prompt encoder feeding it, and what ``generate`` needs to switch."""

    denoiser: StableDiffusionXLControlNetPipeline
    encoder: PromptEncoder
    speed: SpeedSettings = field(default_factory=SpeedSettings)
    attention: str = "sdpa"
    eager: EagerModules = field(default_factory=dict)
    scheduler: str | None = None
    """Name of the sampler in use; None is the base model's own."""

    def __post_init__(self) -> None:
        self._base_scheduler = self.denoiser.scheduler

    @property
    def unet(self) -> torch.nn.Module:
        return self.denoiser.unet

    @property
    def controlnet(self) -> torch.nn.Module:
        return self.denoiser.controlnet

    def use_scheduler(self, name: str | None) -> None:
        """Switch sampler only when it changes, so the trainer's repeated validations stay cheap."""
        if name != self.scheduler:
            self.denoiser.scheduler = make_scheduler(name, self._base_scheduler)
            self.scheduler = name


def _vae_dtype(base: str, wanted: torch.dtype, vae: str | None = None) -> torch.dtype:
    """fp32 instead of fp16 for a VAE whose config says it must upcast (SDXL's overflows into NaNs;
    an fp16-safe VAE such as sdxl-vae-fp16-fix says it need not)."""
    if wanted != torch.float16:
        return wanted
    config = AutoencoderKL.load_config(vae) if vae else AutoencoderKL.load_config(base, subfolder="vae")
    if config.get("force_upcast", False):
        logger.warning("the VAE of %s overflows in float16 (force_upcast); decoding in float32", vae or base)
        return torch.float32
    return wanted


def load_pipeline(
    base: str,
    controlnet: ControlNetModel | str | Path,
    device: str = "cpu",
    dtype: torch.dtype | ComponentDtypes = torch.float32,
    unet: UNet2DConditionModel | None = None,
    speed: SpeedSettings | None = None,
    vae: str | None = None,
) -> ControlNetPipeline:
    """Build the pipeline from the ``base`` SDXL folder/hub id and a ControlNet (model or folder).

    Components loaded here get ``dtype`` (one for all, or per component); models passed in
    (``controlnet``, ``unet``) are used as they are and only moved to ``device``, never cast, because
    casting would silently change the weights the trainer is still optimising. Without ``speed`` the
    models keep the attention processors they have (the trainer's must not be switched under it).
    ``vae`` is a VAE folder replacing the base's (e.g. an fp16-safe one).
    """
    configured = speed is not None
    speed = usable(speed, device) if speed is not None else SpeedSettings()
    dtypes = dtype if isinstance(dtype, ComponentDtypes) else ComponentDtypes.uniform(dtype)
    vae_dtype = _vae_dtype(str(base), dtypes.vae, vae)
    if not isinstance(controlnet, ControlNetModel):
        controlnet = ControlNetModel.from_pretrained(str(controlnet), dtype=dtypes.unet)
    components: dict[str, object] = {"controlnet": controlnet, **dict.fromkeys(_TEXT_PARTS)}
    if unet is not None:
        components["unet"] = unet
    if vae:
        components["vae"] = AutoencoderKL.from_pretrained(vae, dtype=vae_dtype)
    denoiser = StableDiffusionXLControlNetPipeline.from_pretrained(
        str(base), dtype={"default": dtypes.unet, "vae": vae_dtype}, **components
    )
    text = StableDiffusionXLPipeline.from_pretrained(
        str(base), unet=None, vae=None, dtype=dtypes.text_encoders
    )
    for pipe in (denoiser, text):
        place(pipe, device, speed.cpu_offload)
        pipe.set_progress_bar_config(disable=True)
    attention = configure(denoiser, speed) if configured else "as loaded"
    eager = compile_denoiser(denoiser) if speed.compile else {}
    return ControlNetPipeline(denoiser, PromptEncoder(text), speed, attention, eager)


def _architecture(model: torch.nn.Module) -> dict[str, object]:
    """A model's config without diffusers' bookkeeping keys (``_name_or_path`` and the like)."""
    return {key: value for key, value in model.config.items() if not key.startswith("_")}


def swap_controlnet(pipe: ControlNetPipeline, controlnet: ControlNetModel | str | Path) -> ControlNetPipeline:
    """Put another ControlNet into a loaded pipeline, so comparing checkpoints loads the base once.

    A folder is loaded in the dtype of the pipeline's UNet. When its architecture matches the one in
    use, its weights are copied into it in place: a compiled ControlNet then needs no recompile and
    offload hooks stay attached.
    """
    if not isinstance(controlnet, ControlNetModel):
        controlnet = ControlNetModel.from_pretrained(str(controlnet), dtype=pipe.unet.dtype)
    current = pipe.eager.get("controlnet", pipe.denoiser.controlnet)
    if _architecture(current) == _architecture(controlnet):
        with torch.no_grad():
            current.load_state_dict(controlnet.state_dict())
        return pipe
    logger.info("ControlNet architecture differs; replacing the module (a compiled one is recompiled)")
    prepare_controlnet(controlnet, pipe.speed, pipe.attention)
    if pipe.speed.cpu_offload:
        pipe.denoiser.controlnet = controlnet
        place(pipe.denoiser, str(pipe.denoiser._execution_device), offload=True)  # re-hook all models
    else:
        pipe.denoiser.controlnet = controlnet.to(pipe.unet.device)
    if pipe.eager:
        pipe.eager["controlnet"] = controlnet
        pipe.denoiser.controlnet = torch.compile(controlnet)
    return pipe


def output_size(condition: Image.Image, settings: GenerationSettings) -> tuple[int, int]:
    """(width, height) of the image generated for ``condition``."""
    if settings.resolution is not None:
        side = settings.resolution - settings.resolution % SIZE_MULTIPLE
        return side, side
    width, height = condition.size
    width, height = width - width % SIZE_MULTIPLE, height - height % SIZE_MULTIPLE
    if width == 0 or height == 0:
        raise ValueError(f"condition image of size {condition.size} is smaller than {SIZE_MULTIPLE} px")
    return width, height


def _batches(
    indices: Sequence[int], sizes: Sequence[tuple[int, int]], batch_size: int
) -> Iterator[list[int]]:
    """Consecutive runs of indices with the same output size, at most ``batch_size`` long.

    One pipeline call makes one size, so a size change starts a new batch.
    """
    batch: list[int] = []
    for index in indices:
        if batch and (len(batch) == batch_size or sizes[batch[0]] != sizes[index]):
            yield batch
            batch = []
        batch.append(index)
    if batch:
        yield batch


def decode_latents(
    denoiser: StableDiffusionXLControlNetPipeline, latents: torch.Tensor, output_type: str = "pil"
) -> list[Image.Image] | torch.Tensor:
    """Latents to images in the VAE's dtype (diffusers would feed it the UNet's), as the pipeline does.

    ``output_type`` is the image processor's: "pil" (default), or "pt" for a caller that checks the
    pixels (e.g. for NaNs of an fp16 VAE) before turning them into pictures.
    """
    vae = denoiser.vae
    latents = latents.to(vae.dtype)
    if vae.config.latents_mean is not None and vae.config.latents_std is not None:
        mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1).to(latents)
        std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1).to(latents)
        latents = latents * std / vae.config.scaling_factor + mean
    else:
        latents = latents / vae.config.scaling_factor
    image = vae.decode(latents, return_dict=False)[0]
    if output_type == "pt":
        return image
    return denoiser.image_processor.postprocess(image, output_type=output_type)


StepHook = Callable[[int, torch.Tensor], bool]
"""Called after each denoising step with (step index, latents); True ends the denoising there (the
latents of that step are decoded). A service uses it to cancel a request (by raising) or stop early."""


def denoise_latents(
    pipe: ControlNetPipeline,
    prompts: list[str],
    conditions: list[Image.Image],
    seeds: list[int],
    size: tuple[int, int],
    settings: GenerationSettings,
    on_step: StepHook | None = None,
) -> torch.Tensor:
    """One pipeline call to latents (not decoded); CPU generators make the noise identical on every device.

    Runs with the scheduler the pipeline has now (``generate`` switches it first).
    """
    generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
    embeddings = pipe.encoder(prompts, settings.negative_prompt, guidance=settings.guidance_scale > 1)
    width, height = size

    def step_end(
        denoiser: StableDiffusionXLControlNetPipeline, step: int, timestep: torch.Tensor, tensors: dict
    ) -> dict:
        if on_step is not None and on_step(step, tensors["latents"]):
            denoiser._interrupt = True  # diffusers skips the remaining steps
        return {}

    def denoise() -> torch.Tensor:
        return pipe.denoiser(
            image=[condition.convert("RGB") for condition in conditions],
            height=height,
            width=width,
            num_inference_steps=settings.num_inference_steps,
            guidance_scale=settings.guidance_scale,
            controlnet_conditioning_scale=settings.controlnet_conditioning_scale,
            control_guidance_start=settings.control_guidance_start,
            control_guidance_end=settings.control_guidance_end,
            generator=generators,
            output_type="latent",
            callback_on_step_end=step_end if on_step is not None else None,
            **embeddings,
        ).images

    with torch.inference_mode():
        return call_with_compile_fallback(pipe.denoiser, pipe.eager, denoise)


def _generate_batch(
    pipe: ControlNetPipeline,
    prompts: list[str],
    conditions: list[Image.Image],
    seeds: list[int],
    size: tuple[int, int],
    settings: GenerationSettings,
    on_step: StepHook | None = None,
) -> list[Image.Image]:
    """One pipeline call, decoded."""
    latents = denoise_latents(pipe, prompts, conditions, seeds, size, settings, on_step)
    with torch.inference_mode():
        return decode_latents(pipe.denoiser, latents)  # type: ignore[return-value]


def generate(
    pipe: ControlNetPipeline,
    prompts: list[str],
    conditions: list[Image.Image],
    seeds: list[int],
    settings: GenerationSettings,
    batch_size: int = 4,
    on_step: StepHook | None = None,
) -> list[Image.Image]:
    """One image per (prompt, condition, seed) triple, in order, ``batch_size`` per pipeline call;
    ``on_step(step, latents)`` after every denoising step of every call (True stops that call)."""
    if not len(prompts) == len(conditions) == len(seeds):
        raise ValueError(
            f"prompts, conditions and seeds must have one entry per image, got "
            f"{len(prompts)}, {len(conditions)} and {len(seeds)}"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    pipe.use_scheduler(settings.scheduler)
    sizes = [output_size(condition, settings) for condition in conditions]
    images: list[Image.Image] = []
    for batch in _batches(range(len(prompts)), sizes, batch_size):
        images += _generate_batch(
            pipe,
            [prompts[i] for i in batch],
            [conditions[i] for i in batch],
            [seeds[i] for i in batch],
            sizes[batch[0]],
            settings,
            on_step,
        )
    return images
