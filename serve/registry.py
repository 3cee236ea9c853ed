"""The checkpoints a service serves, loaded once, and a fresh per-call pipeline view for each batch.

Checkpoints on the same base (and VAE) share one loaded SDXL: ``inference.load_pipeline`` loads the
first, the others add only their ControlNet module. Every batch gets a shallow copy of the diffusers
pipeline with its own scheduler instance and the checkpoint's ControlNet: weights are shared, the
per-call state (scheduler step index, ``_interrupt``, guidance) is not, so no call can trip over
another's (a shared scheduler's step index is the classic crash of diffusers-based servers).
The prompt-embedding cache of the base is shared by all of its checkpoints and requests.

A run folder brings its ``best/`` (``validation.select_best``) along, and the default checkpoint is a
run's best, else its final weights, never the untrained ``checkpoint-0`` a glob lists first. Each
checkpoint's recipe (``serve.recipe``) gives the settings a request leaves out.
"""

from __future__ import annotations

import copy
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import ControlNetModel

from inference.checkpoints import ControlNetSource, checkpoint_label, default_source, with_run_best
from inference.pipeline import ControlNetPipeline, load_pipeline
from inference.schedulers import make_scheduler
from inference.settings import DTYPES, ComponentDtypes, SpeedSettings, dtype_name
from inference.sources import resolve_sources
from inference.speed import prepare_controlnet
from serve.gallery import checkpoint_info, report_metrics
from serve.recipe import Recipe, read_recipe

logger = logging.getLogger(__name__)

__all__ = ["Checkpoint", "Registry"]


@dataclass
class _Base:
    """One loaded SDXL and the state of its optional accelerators."""

    pipe: ControlNetPipeline
    eager_unet: torch.nn.Module | None
    """The UNet before torch.compile; None when nothing is compiled (or compile fell back)."""


@dataclass
class Checkpoint:
    """A servable ControlNet: where it came from and its module (compiled when the base is)."""

    source: ControlNetSource
    base_key: tuple[str, str | None]
    controlnet: torch.nn.Module
    eager_controlnet: torch.nn.Module | None = None
    info: dict[str, Any] = field(default_factory=dict)
    """What the gallery shows: step, loss and eval metrics when the run left them."""


class Registry:
    """Loads every checkpoint once and hands out per-call pipeline views.

    Only the worker thread calls ``view``/``to_eager``; the HTTP side reads ``names`` and ``info``.
    """

    def __init__(
        self,
        checkpoints: list[str],
        base: str | None,
        device: str,
        dtype: str | None,
        speed: SpeedSettings,
        report: Path | None = None,
    ) -> None:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {device} requested but no CUDA device is available")
        self.sources = resolve_sources(with_run_best(checkpoints), base)  # fails fast, before any load
        self.recipes: dict[str, Recipe] = {source.name: read_recipe(source) for source in self.sources}
        self._metrics = report_metrics(report)
        self.device = device
        self.speed = speed
        self.dtypes = ComponentDtypes.resolve(device, speed, DTYPES[dtype] if dtype else None)
        self._bases: dict[tuple[str, str | None], _Base] = {}
        self.checkpoints: dict[str, Checkpoint] = {}
        self._tokenizer_lock = threading.Lock()
        self._counting_tokenizer: Any = None
        """A copy of the first base's tokenizer for request validation on the HTTP threads: a fast
        tokenizer is not safe to call from two threads at once (the worker encodes with the original)."""
        self.degraded: set[str] = set()
        """Sticky fallbacks in effect (attention_sdpa, compile_eager, vae_fp32): every answer lists them."""

    @property
    def names(self) -> list[str]:
        return [source.name for source in self.sources]

    @property
    def default(self) -> str:
        """A run's best, else its final weights, else the first given that is not step 0."""
        return default_source(self.sources).name

    def label(self, name: str) -> str:
        """How people see ``name``: "best (step 300)", "final (step 400)", "checkpoint-100"."""
        source = next(source for source in self.sources if source.name == name)
        return checkpoint_label(name, source.step)

    def load(self) -> None:
        """Load every base and ControlNet (slow; the service is not ready until this returns)."""
        for source in self.sources:
            assert source.base is not None  # resolve_sources settles it
            key = (source.base, source.vae)
            if key not in self._bases:
                self._bases[key] = self._load_base(source)
                pipe = self._bases[key].pipe
                module = pipe.denoiser.controlnet
                eager = pipe.eager.get("controlnet")
            else:
                module, eager = self._load_controlnet(source, self._bases[key])
            info = checkpoint_info(source, self._metrics, self.recipes[source.name])
            self.checkpoints[source.name] = Checkpoint(source, key, module, eager, info)
        first = next(iter(self._bases.values())).pipe.encoder.pipe.tokenizer
        self._counting_tokenizer = copy.deepcopy(first)
        logger.info("Loaded %d checkpoint(s) on %d base(s): %s", len(self.checkpoints), len(self._bases),
                    ", ".join(self.names))  # fmt: skip

    def _load_base(self, source: ControlNetSource) -> _Base:
        assert source.base is not None
        logger.info(
            "Loading %s on base %s (%s, %s)", source.name, source.base, self.device, self.dtypes.as_dict()
        )
        pipe = load_pipeline(source.base, source.controlnet_dir, self.device, self.dtypes, speed=self.speed,
                             vae=source.vae)  # fmt: skip
        if self.speed.attention == "xformers" and pipe.attention != "xformers":
            self.degraded.add("attention_sdpa")
        if self.speed.compile and not pipe.eager:
            self.degraded.add("compile_eager")
        return _Base(pipe, pipe.eager.get("unet"))

    def _load_controlnet(
        self, source: ControlNetSource, base: _Base
    ) -> tuple[torch.nn.Module, torch.nn.Module | None]:
        pipe = base.pipe
        controlnet = ControlNetModel.from_pretrained(str(source.controlnet_dir), dtype=pipe.unet.dtype)
        prepare_controlnet(controlnet, pipe.speed, pipe.attention)
        controlnet.to(self.device)
        if base.eager_unet is not None:
            return torch.compile(controlnet), controlnet
        return controlnet, None

    def base_of(self, name: str) -> ControlNetPipeline:
        return self._bases[self.checkpoints[name].base_key].pipe

    def view(self, name: str, scheduler: str | None) -> ControlNetPipeline:
        """A pipeline for one call: shared weights and prompt cache, own scheduler and call state."""
        checkpoint = self.checkpoints[name]
        base = self._bases[checkpoint.base_key]
        denoiser = copy.copy(base.pipe.denoiser)
        denoiser.controlnet = checkpoint.controlnet
        denoiser.scheduler = make_scheduler(scheduler, base.pipe._base_scheduler)
        if scheduler is None:  # the base's own kind, but a fresh instance all the same
            denoiser.scheduler = type(denoiser.scheduler).from_config(denoiser.scheduler.config)
        eager: dict[str, torch.nn.Module] = {}
        if base.eager_unet is not None and checkpoint.eager_controlnet is not None:
            eager = {"unet": base.eager_unet, "controlnet": checkpoint.eager_controlnet}
        return ControlNetPipeline(
            denoiser, base.pipe.encoder, base.pipe.speed, base.pipe.attention, eager, scheduler
        )

    def to_eager(self, name: str) -> None:
        """After a compile failure in a view: put the eager modules back for every checkpoint of that base."""
        key = self.checkpoints[name].base_key
        base = self._bases[key]
        if base.eager_unet is None:
            return
        base.pipe.denoiser.unet = base.eager_unet
        base.pipe.eager.clear()
        base.eager_unet = None
        for checkpoint in self.checkpoints.values():
            if checkpoint.base_key == key and checkpoint.eager_controlnet is not None:
                checkpoint.controlnet, checkpoint.eager_controlnet = checkpoint.eager_controlnet, None
        base.pipe.denoiser.controlnet = self.checkpoints[name].controlnet
        self.degraded.add("compile_eager")

    def recompile(self, backend: Any) -> None:
        """torch.compile every compiled module again with ``backend`` (tests inject a failing one)."""
        for base in self._bases.values():
            if base.eager_unet is not None:
                base.pipe.denoiser.unet = torch.compile(base.eager_unet, backend=backend)
        for checkpoint in self.checkpoints.values():
            if checkpoint.eager_controlnet is not None:
                checkpoint.controlnet = torch.compile(checkpoint.eager_controlnet, backend=backend)

    def upcast_vae(self, name: str) -> None:
        """Run the VAE of ``name``'s base in float32 from now on (its float16 decode gave NaNs)."""
        vae = self.base_of(name).denoiser.vae
        vae.to(torch.float32)
        self.degraded.add("vae_fp32")

    def dtypes_in_use(self, name: str) -> dict[str, str]:
        """The dtypes ``name`` runs with now (the VAE's may have been upcast by a fallback)."""
        return {**self.dtypes.as_dict(), "vae": dtype_name(self.base_of(name).denoiser.vae.dtype)}

    def compiled(self, name: str) -> bool:
        return self._bases[self.checkpoints[name].base_key].eager_unet is not None

    def max_prompt_tokens(self) -> int:
        """The shortest text-encoder window among the bases (77 for SDXL's CLIP)."""
        return min(base.pipe.encoder.pipe.tokenizer.model_max_length for base in self._bases.values())

    def count_tokens(self, prompt: str) -> int:
        """Tokens of ``prompt`` with BOS/EOS, as the first base's tokenizer counts them."""
        with self._tokenizer_lock:
            return len(self._counting_tokenizer(prompt, truncation=False)["input_ids"])

    def modules(self, name: str) -> dict[str, torch.nn.Module]:
        """The real (eager) modules of a checkpoint's pipeline, for fault injection and the VAE fallback."""
        checkpoint = self.checkpoints[name]
        base = self._bases[checkpoint.base_key]
        return {
            "unet": base.eager_unet or base.pipe.denoiser.unet,
            "controlnet": checkpoint.eager_controlnet or checkpoint.controlnet,
            "vae": base.pipe.denoiser.vae,
        }

    def describe(self) -> dict[str, Any]:
        """What /checkpoints answers."""
        return {
            "default": self.default,
            "device": self.device,
            "dtypes": self.dtypes.as_dict(),
            "degraded": sorted(self.degraded),
            "checkpoints": [
                {**self.checkpoints[name].info, "compiled": self.compiled(name)}
                if name in self.checkpoints
                else {"name": name, "loaded": False}
                for name in self.names
            ],
        }
