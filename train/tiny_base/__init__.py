"""A small SDXL-architecture base that has actually been trained, on the project's own procedural data.

The random tiny SDXL (`train.tiny_sdxl`) proves plumbing but draws noise. This package trains its VAE
(to reconstruct images) and then its UNet (the ordinary diffusion loss on those latents, conditioned
through the frozen random CLIP encoders) on fill circles and generated keyboard skins, so that a
ControlNet trained on it can visibly follow its condition. See `build.py` for the stages.
"""
