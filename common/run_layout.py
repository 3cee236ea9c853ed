"""File names of a run folder, shared by the trainer that writes them and inference that reads them.

Kept free of heavy imports so `python -m inference` can check paths before loading torch.
"""

CONFIG_FILE = "skinforge.yaml"
"""The resolved config, in the run folder, in each checkpoint and in each saved controlnet/."""
CONTROLNET_DIR = "controlnet"
"""The diffusers-format ControlNet inside a checkpoint or a run folder."""
EMA_DIR = "controlnet_ema"
"""The EMA of the ControlNet's weights (with `ema.enabled`), next to each `controlnet/`."""
STATE_FILE = "trainer_state.json"
"""Where a checkpoint's run stands (step, data position); written last, so its presence marks a whole one."""
BEST_DIR = "best"
"""With `validation.select_best`: the best validated ControlNet of the run (diffusers format), in the run
folder, outside checkpoint rotation."""
SELECTION_FILE = "selection.json"
"""In `best/`: the metric, step and score it was selected by."""
