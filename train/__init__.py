"""SDXL ControlNet trainer: typed config, models, data pipeline, loop and checkpoints."""

from common.quiet_warnings import silence_known_warnings

silence_known_warnings()
