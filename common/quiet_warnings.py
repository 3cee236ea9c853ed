"""Silence library warnings that do not apply to this project, once, before the libraries load.

transformers warns twice on every command that builds an SDXL pipeline: "`CLIPImageProcessor` requires
torchvision (not installed); falling back to `CLIPImageProcessorPil`" (and the same for Siglip). The
project does not install torchvision on purpose (tests check it) and the PIL processors are what it
wants, so the fallback is the intended path, not news. Only that message is dropped; every other
transformers warning still shows.
"""

from __future__ import annotations

import logging

__all__ = ["TORCHVISION_FALLBACK", "silence_known_warnings"]

TORCHVISION_FALLBACK = "requires torchvision (not installed); falling back to"
_TRANSFORMERS_IMPORTS = "transformers.utils.import_utils"


class _DropTorchvisionFallback(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return TORCHVISION_FALLBACK not in record.getMessage()


_FILTER = _DropTorchvisionFallback()


def silence_known_warnings() -> None:
    """Install the filters (idempotent; imports nothing heavy, so packages call it on import)."""
    logger = logging.getLogger(_TRANSFORMERS_IMPORTS)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
