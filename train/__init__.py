"""SDXL ControlNet trainer: typed config, models, data pipeline, loop and checkpoints."""
