"""Other names for skinforge's settings: the flags of diffusers' `train_controlnet_sdxl.py` and
common spellings from other trainers, mapped to the dotted key that does the same here.

Used only to suggest fixes (`train.learning_rate` -> `train.lr`, `--max_train_steps 10` ->
`train.max_steps=10`); a target with `=` also names the value that gives the same behaviour.
"""

from __future__ import annotations

__all__ = ["ALIASES"]

ALIASES: dict[str, str] = {
    # diffusers examples/controlnet/train_controlnet_sdxl.py flags
    "pretrained_model_name_or_path": "model.base",
    "controlnet_model_name_or_path": "model.controlnet",
    "pretrained_vae_model_name_or_path": "model.vae",
    "revision": "model.revision",
    "variant": "model.variant",
    "output_dir": "train.output_dir",
    "seed": "train.seed",
    "resolution": "data.resolution",
    "train_batch_size": "train.batch_size",
    "max_train_steps": "train.max_steps",
    "num_train_epochs": "train.max_steps",
    "checkpointing_steps": "checkpoint.every_n_steps",
    "checkpoints_total_limit": "checkpoint.total_limit",
    "resume_from_checkpoint": "checkpoint.resume",
    "gradient_accumulation_steps": "train.gradient_accumulation_steps",
    "gradient_checkpointing": "train.gradient_checkpointing",
    "learning_rate": "train.lr",
    "lr_scheduler": "train.lr_scheduler",
    "lr_warmup_steps": "train.lr_warmup_steps",
    "use_8bit_adam": "train.optimizer=adamw_8bit",
    "dataloader_num_workers": "data.num_workers",
    "adam_weight_decay": "train.weight_decay",
    "adam_epsilon": "train.adam_epsilon",
    "max_grad_norm": "train.max_grad_norm",
    "mixed_precision": "train.mixed_precision",
    "enable_xformers_memory_efficient_attention": "train.attention=xformers",
    "set_grads_to_none": "train.zero_grad_set_to_none",
    "train_data_dir": "data.train_jsonl",
    "dataset_name": "data.train_jsonl",
    "proportion_empty_prompts": "data.empty_prompt_prob",
    "max_train_samples": "data.max_records",
    "validation_prompt": "validation.prompts",
    "validation_image": "validation.conditioning_images",
    "validation_steps": "validation.every_n_steps",
    "tracker_project_name": "log.wandb_project",
    "report_to": "log.wandb",
    "logging_steps": "log.every_n_steps",
    "use_ema": "ema.enabled",
    "ema_decay": "ema.decay",
    # other common names
    "steps": "train.max_steps",
    "num_steps": "train.max_steps",
    "total_steps": "train.max_steps",
    "warmup_steps": "train.lr_warmup_steps",
    "batch": "train.batch_size",
    "weight_decay": "train.weight_decay",
    "grad_clip": "train.max_grad_norm",
    "precision": "train.mixed_precision",
    "workers": "data.num_workers",
    "num_workers": "data.num_workers",
    "threads": "train.num_threads",
    "dataset": "data.train_jsonl",
    "base_model": "model.base",
    "pretrained_model": "model.base",
    "image_size": "data.resolution",
    "save_steps": "checkpoint.every_n_steps",
    "resume": "checkpoint.resume",
}
