"""Process-wide plumbing that every package may import, and that imports none of them.

The packages form layers, each importing only those below it: ``common`` at the bottom, then
``recognizer`` and ``data`` (which may use the recognizer), ``inference``, ``train`` (which validates
through inference), ``serve`` (over inference) and ``bench`` on top; ``tests/test_layering.py`` holds
them to it. What several layers need lives here, one job per module:

* ``atomic``: atomic file writes and the clean-up of temporary files a killed writer left;
* ``run_lock``, ``run_layout``: the lock a run folder is written under, and the file names inside it;
* ``process_exit``: ending a process whose threads would otherwise keep it alive;
* ``host_memory``: handing freed memory back to the system;
* ``quiet_warnings``, ``progress``: the known-harmless warnings silenced, and progress bars or lines;
* ``fonts``: the packaged font that key labels and synthetic text are drawn in;
* ``base_model``: whether an SDXL base can be loaded, checked before anything heavy starts;
* ``diffusion``: what training and inference must agree on about the models (the diffusion target,
  pixels as tensors, a ControlNet built from a UNet and its VAE's scale).
"""
