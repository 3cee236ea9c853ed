"""Text embeddings computed once per unique prompt, with the text encoders kept apart from the denoiser.

An evaluation renders every prompt once per seed and per checkpoint, so encoding it each time repeats
the same two CLIP passes. The encoders live in their own text-only SDXL pipeline (diffusers'
``encode_prompt`` does the work) so they can have their own dtype: the denoising pipeline gets the
embeddings and casts them to its UNet's dtype.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import torch
from diffusers import StableDiffusionXLPipeline

logger = logging.getLogger(__name__)

__all__ = ["PromptEncoder"]

_Key = tuple[str, str, bool]
_FIELDS = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")


class PromptEncoder:
    """Encodes prompts with a text-only SDXL pipeline and remembers the last ``max_cached`` of them.

    Embeddings are kept on the CPU (a 1000-prompt set is ~0.6 GB in fp16, better not on the GPU);
    the denoising pipeline moves each batch to its device.
    """

    def __init__(self, pipe: StableDiffusionXLPipeline, max_cached: int = 4096) -> None:
        self.pipe = pipe
        self.max_cached = max_cached
        self.encoded = 0
        """How many prompts went through the text encoders (cache misses), for logs and tests."""
        self._cache: OrderedDict[_Key, dict[str, torch.Tensor | None]] = OrderedDict()

    def __call__(self, prompts: list[str], negative_prompt: str, guidance: bool) -> dict[str, torch.Tensor]:
        """Pipeline keyword arguments (prompt and, with ``guidance``, negative embeddings) for ``prompts``.

        ``negative_prompt`` "" gives SDXL's zeroed negative embeddings, as the pipeline itself would.
        """
        keys = [(prompt, negative_prompt, guidance) for prompt in prompts]
        missing = list(dict.fromkeys(key for key in keys if key not in self._cache))
        if missing:
            self._encode(missing)
        rows = [self._cache[key] for key in keys]
        for key in keys:
            self._cache.move_to_end(key)
        while len(self._cache) > max(self.max_cached, len(keys)):
            self._cache.popitem(last=False)
        return {
            field: torch.cat([row[field] for row in rows])  # type: ignore[misc]
            for field in _FIELDS
            if rows[0][field] is not None
        }

    @torch.inference_mode()
    def _encode(self, keys: list[_Key]) -> None:
        prompts = [key[0] for key in keys]
        negative, guidance = keys[0][1], keys[0][2]  # one call's keys share them
        outputs = self.pipe.encode_prompt(
            prompt=prompts,
            device=self.pipe._execution_device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=guidance,
            negative_prompt=[negative] * len(prompts) if negative else None,
        )
        for index, key in enumerate(keys):
            self._cache[key] = {
                field: None if output is None else output[index : index + 1].cpu()
                for field, output in zip(_FIELDS, outputs, strict=True)
            }
        self.encoded += len(keys)
        logger.debug("encoded %d prompts (%d so far)", len(keys), self.encoded)
