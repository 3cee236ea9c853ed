"""The trainer's typed configuration: one dataclass per section, one validation pass for all of it."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from common.base_model import base_problem
from data.dataset_path import dataset_jsonl, folder_problem
from train.config_aliases import ALIASES
from train.config_loader import (
    ConfigError,
    KeyHints,
    apply_overrides,
    blame_overrides,
    build_dataclass,
    load_yaml,
    to_dict,
)

MixedPrecision = Literal["no", "fp16", "bf16"]
LRSchedule = Literal[
    "constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial"
]


@dataclass
class ModelConfig:
    """Where the weights come from. Real SDXL and the tiny test model load through the same code."""

    base: str = ""
    """Local diffusers SDXL folder (or hub id) with unet/vae/text_encoder(_2)/tokenizer(_2)/scheduler."""
    controlnet: str | None = None
    """Existing ControlNet folder to fine-tune (e.g. a Canny ControlNet); None copies the UNet."""
    condition_embedding_init: Literal["zeros", "matched"] = "zeros"
    """For a ControlNet copied from the UNet: the last layer of its condition embedding starts at zero
    (the ControlNet paper, diffusers' `from_unet`), or `matched`: nn.Conv2d's own init (seeded by
    `train.seed`) scaled so that the embedded conditions of the first training items have the spread of
    their latents' features. The output convolutions stay zero either way, so step 0 is exactly the
    base; `matched` lets the condition steer the first gradients instead of waiting for the output
    convolutions to grow (on the demo's fill task: read after ~500 steps instead of ~1,500)."""
    vae: str | None = None
    """Alternative VAE folder (e.g. an fp16-safe SDXL VAE); None uses `base`/vae."""
    revision: str | None = None
    variant: str | None = None
    """Weight file variant to load, e.g. 'fp16' for `diffusion_pytorch_model.fp16.safetensors`."""


@dataclass
class DataConfig:
    """The fill50k-format dataset and how samples become tensors."""

    train_jsonl: str = ""
    """Path to train.jsonl; image paths inside are relative to its folder."""
    resolution: int = 1024
    """Training size: squares of this side, or with `buckets` the pixel budget resolution²."""
    buckets: bool = False
    """Aspect-ratio buckets: each sample is resized (without distortion) to cover the bucket closest to
    its aspect ratio and centre-cropped; every batch is drawn from one bucket."""
    bucket_step: int = 64
    """Bucket sides are multiples of this (64 for SDXL; a multiple of 8, the VAE factor)."""
    bucket_max_ratio: float = 2.0
    """Longest side / shortest side of the most elongated bucket."""
    empty_prompt_prob: float = 0.0
    """Per-step probability of replacing a sample's prompt by the empty prompt (classifier-free dropout)."""
    num_workers: int = 0
    """DataLoader worker processes; 0 loads in the training process."""
    max_records: int | None = None
    """Use only the first N records (quick experiments)."""


@dataclass
class TrainConfig:
    """Optimisation and the run folder."""

    output_dir: str = "runs/default"
    seed: int = 0
    max_steps: int = 1000
    """Optimizer steps (after gradient accumulation)."""
    batch_size: int = 1
    """Per process, per micro-step."""
    gradient_accumulation_steps: int = 1
    lr: float = 1e-5
    lr_scheduler: LRSchedule = "constant_with_warmup"
    lr_warmup_steps: int = 0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this; 0 disables clipping."""
    on_nonfinite: Literal["stop", "skip"] = "stop"
    """A non-finite loss or gradient norm is caught at its step, before the optimizer applies it. `stop`
    ends the run naming the step, the losses and the batch's records (the newest checkpoint stays the last
    good one); `skip` drops that step's update (counted as `train/skipped_steps`), at most
    `max_skipped_steps` times in a row."""
    max_skipped_steps: int = 5
    diffusion_loss_weight: float = 1.0
    """Weight of the denoising MSE in the total loss; 0 trains on the text loss alone."""
    timestep_sampling: Literal["uniform", "cubic"] = "uniform"
    """How training timesteps are drawn. `cubic` (T2I-Adapter's t = (1 - u^3) T, as in diffusers' adapter
    script) favours the noisy steps, where the layout is decided and a condition has most to say."""
    lr_new_layers: float | None = None
    """Learning rate of the layers the ControlNet does not copy from the UNet (conditioning embedder,
    zero convolutions); None trains them at `lr` like the rest."""
    optimizer: Literal["adamw", "adamw_8bit"] = "adamw"
    """`adamw_8bit`: bitsandbytes' 8-bit AdamW (CUDA only), ~3/4 less optimizer-state memory."""
    mixed_precision: MixedPrecision = "no"
    """Autocast dtype of the forward pass; the trained ControlNet always keeps fp32 master weights."""
    gradient_checkpointing: Literal["none", "controlnet", "unet", "both"] = "none"
    """Recompute activations in backward to save memory: of the ControlNet, of the frozen UNet (whose
    up path is back-propagated through), or both. true/false mean both/none."""
    attention: Literal["sdpa", "xformers"] = "sdpa"
    """Attention kernel of both models: torch's SDPA or xformers' memory-efficient attention."""
    tf32: bool = True
    """Allow TF32 matmuls/convolutions on Ampere+ GPUs (no effect on CPU)."""
    zero_grad_set_to_none: bool = True
    """Free gradients between steps instead of zeroing them in place (less memory, fewer writes)."""
    num_threads: int | None = None
    """torch intra-op threads on CPU; None keeps torch's default."""
    fused_adamw: bool = True
    """Use torch's fused AdamW kernel (one kernel for all parameters; CPU and CUDA), else the foreach one."""
    channels_last: bool = True
    """Keep the ControlNet, the UNet and their image inputs in channels-last memory layout, which the
    oneDNN (CPU) and cuDNN convolution kernels run faster."""
    keep_freed_host_memory: bool = True
    """CPU runs: glibc keeps freed activation buffers in the heap instead of returning them to the OS
    and page-faulting them back in at every step (tiny SDXL, 128², batch 4: ~2,000-3,000 faults and
    6-8 ms of kernel CPU time per step). No effect on GPU runs (activations live in torch's CUDA
    allocator) or off glibc; see `common.host_memory`."""
    compile: bool = False
    """`torch.compile` the ControlNet and the UNet: faster steps after a one-time compilation that takes
    minutes (on CPU ~2.5 min for the tiny model), so it pays off only on long runs."""


@dataclass
class EmaConfig:
    """An exponential moving average of the ControlNet weights, saved as `controlnet_ema/`."""

    enabled: bool = False
    decay: float = 0.9999
    """Upper bound of the decay; with `warmup` the decay grows towards it as 1 - (1 + step)^-power."""
    warmup: bool = True
    power: float = 0.75
    update_every_n_steps: int = 1
    offload_to_cpu: bool = False
    """Keep the EMA weights in CPU memory (saves one fp32 ControlNet copy on the GPU; slower update)."""


@dataclass
class CacheConfig:
    """Disk cache of VAE latents and prompt embeddings, shared by runs that encode the same things."""

    dir: str | None = None
    """Root folder of the caches; None = $SKINFORGE_CACHE or ~/.cache/skinforge/encoded. One sub-folder
    per fingerprint of (VAE and text encoders, dataset file, resolution/buckets, dtype)."""
    rebuild: bool = False
    """Encode again even when a complete cache with the same fingerprint exists."""


@dataclass
class CheckpointConfig:
    """Resumable checkpoints: accelerate state plus a diffusers-format `controlnet/` in each."""

    every_n_steps: int = 500
    total_limit: int | None = 3
    """Keep at most this many checkpoint-N folders (oldest removed first); None keeps all."""
    resume: str | None = None
    """'latest' (the newest checkpoint in output_dir, or a fresh start when there is none) or a path."""
    save_at_start: bool = False
    """Also write `checkpoint-0` before the first step: the ControlNet as training starts (for a copy of
    the UNet: no control at all), the step-0 column of `python -m inference` reports. Counts towards
    `total_limit`."""
    allow_config_change: bool = False
    """Resume even when the recipe differs from the checkpoint's in what it trains (batch size,
    resolution, dataset, model, optimizer...); refused by default, with the list of changes. The restored
    optimizer and LR schedule keep the checkpoint's learning rates, and the run records those."""


@dataclass
class LogConfig:
    """Where losses and learning rate go. metrics.jsonl is always written."""

    every_n_steps: int = 10
    tensorboard: bool = True
    wandb: bool = False
    wandb_project: str = "skinforge"
    wandb_mode: Literal["online", "offline", "disabled"] = "offline"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    progress_bar: bool = True


@dataclass
class ValidationConfig:
    """Images generated from fixed prompts and conditions during training, saved as a grid."""

    every_n_steps: int = 0
    """0 disables validation; otherwise runs every N steps and after the last step."""
    prompts: list[str] = field(default_factory=list)
    conditioning_images: list[str] = field(default_factory=list)
    jsonl: str | None = None
    """Validation records instead of (or besides) `prompts`: prompt, condition, and optional boxes."""
    max_records: int = 8
    """Records taken from `jsonl` (the first ones)."""
    ocr: bool = True
    """Read each validation record's boxes in the generated image with the OCR backend and log sentence
    accuracy and normalised edit distance against `gt_text`."""
    readers: list[Literal["rapidocr", "tesseract", "paddle"]] = field(default_factory=lambda: ["rapidocr"])
    """The OCR readers of `ocr`, each logged as `validation/ocr_<reader>_*`; the first one's scores are also
    `validation/ocr_*`. rapidocr alone by default, to keep validation fast; add `tesseract` (installed with
    `apt-get install tesseract-ocr tesseract-ocr-eng tesseract-ocr-chi-sim`) for a reader the text loss
    never optimised."""
    num_inference_steps: int = 20
    scheduler: Literal["unipc", "dpm++2m", "euler", "ddim"] | None = None
    """Sampler of the validation images; None keeps the base model's scheduler."""
    guidance_scale: float = 5.0
    seed: int = 0
    at_start: bool = True
    """Also validate before the first step (not on resume): the step-0 baseline that adherence and
    convergence are measured against."""
    edges: bool = True
    """Score each validation image's edge adherence to its condition (Canny 100/200 of the image against
    the condition read as an edge map: F1, F1 within `edge_tolerance` px, SSIM) and log it as
    `validation/edge_*`."""
    edge_tolerance: int = 2
    denoising_advantage: bool = True
    """Log `validation/denoising_advantage`: how much lower the held-out records' denoising error is with
    their own condition than with another record's (same noise; inference.denoising_advantage). It
    rises hundreds of steps before the images follow the condition. Needs `jsonl` with two or more
    records and square training (no `data.buckets`)."""
    convergence_min_gain: float = 0.2
    """The ControlNet paper's "sudden convergence": the first validation step whose tolerant edge F1 is
    this much above the step-0 baseline. Named in the log and in `trainer_state.json`."""
    select_best: (
        Literal[
            "edge_f1_tolerant",
            "edge_f1",
            "edge_ssim",
            "circle_iou",
            "ocr_sentence_accuracy",
            "ocr_normalized_edit_distance",
            "denoising_advantage",
        ]
        | None
    ) = None
    """Keep the best validated ControlNet by this metric (`validation/<metric>`, higher is better) in
    `RUN/best/` (diffusers format, outside checkpoint rotation; `best/selection.json` and each checkpoint's
    `trainer_state.json` record its step and score). Inference, export and serving take it like any
    checkpoint. None: not kept."""


@dataclass
class TextLossConfig:
    """OCR supervision of the text boxes (records with `box` and `gt_text`), on the clean image that the
    current prediction implies. Records without boxes contribute nothing and cost nothing."""

    enabled: bool = False
    kind: Literal["ctc", "feature", "both"] = "ctc"
    """`ctc`: CTC of the recognizer on each box against its `gt_text`; `feature`: MSE of the recognizer's
    features between generated and ground-truth crops (AnyText's perceptual loss); `both`."""
    ctc_weight: float = 0.01
    feature_weight: float = 1.0
    max_timestep: int = 400
    """Apply only to samples whose timestep is at most this (the one-step estimate is blurry above)."""
    timestep_weight: Literal["none", "alphas_cumprod"] = "alphas_cumprod"
    """Weight each sample's text loss by its ᾱ_t, as AnyText does, so low-noise samples dominate."""
    every_n_steps: int = 1
    max_boxes_per_image: int = 8
    """Boxes beyond this are sampled away per step (random subset, reproducible)."""
    estimate: Literal["one_step", "unroll"] = "one_step"
    """`one_step`: x̂0 from this step's prediction; `unroll`: K more denoising steps from x_t, where only
    the last keeps gradients (the slow approach, kept for comparison)."""
    unroll_steps: int = 20
    vae_decode: Literal["full", "crops"] = "full"
    """`crops` decodes only a latent tile around each box (less memory at 1024², approximate at tile
    edges); `full` decodes whole images."""
    vae_gradient_checkpointing: bool = False
    crop_width: int = 320
    """Recognizer input width; lines are scaled to height 48 and padded to this."""
    recognizer_onnx: str | None = None
    """PP-OCR rec ONNX with `character` metadata; None = the model shipped with rapidocr."""
    recognizer_cache_dir: str | None = None
    """Where the converted recognizer weights are cached; None = ~/.cache/skinforge/recognizer."""


@dataclass
class SkinforgeConfig:
    """A whole training recipe."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    text_loss: TextLossConfig = field(default_factory=TextLossConfig)

    def to_yaml(self) -> str:
        return yaml.safe_dump(to_dict(self), sort_keys=False, allow_unicode=True)


def _positive(problems: list[str], where: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        problems.append(f"{where} must be {'>= 0' if allow_zero else '> 0'}, got {value}")


LOCAL_BASE_HINT = "set model.base to a local diffusers folder (e.g. assets/tiny-sdxl-trained)"


def _local_path_problems(config: SkinforgeConfig) -> list[str]:
    """Paths that look local must exist; hub ids (org/name, not present locally) are left to diffusers."""
    problems = []
    for where, value in [("model.controlnet", config.model.controlnet), ("model.vae", config.model.vae)]:
        looks_local = value and (value.startswith((".", "/", "~")) or Path(value).exists())
        if looks_local and not Path(value).expanduser().is_dir():
            problems.append(f"{where}: folder {value} does not exist")
    if problem := base_problem(config.model.base, "model.base", LOCAL_BASE_HINT):
        problems.append(problem)
    jsonl = config.data.train_jsonl
    if not jsonl:
        problems.append("data.train_jsonl is required")
    elif problem := folder_problem(jsonl):
        problems.append(f"data.train_jsonl: {problem}")
    elif not Path(jsonl).is_file():
        problems.append(
            f"data.train_jsonl: {jsonl} does not exist: build a dataset (python -m data ...) or set "
            "data.train_jsonl to your train.jsonl"
        )
    validating = config.validation.every_n_steps > 0
    held_out = config.validation.jsonl
    if validating and held_out and (problem := folder_problem(held_out)):
        problems.append(f"validation.jsonl: {problem}")
    elif validating and held_out and not Path(held_out).is_file():
        problems.append(
            f"validation.jsonl: {held_out} does not exist: set it to a held-out "
            "train.jsonl, or turn validation off with validation.every_n_steps=0"
        )
    for i, image in enumerate(config.validation.conditioning_images):
        if validating and not Path(image).is_file():
            problems.append(f"validation.conditioning_images[{i}]: {image} does not exist")
    return problems


def validate(config: SkinforgeConfig, check_paths: bool = True) -> list[str]:
    """Every semantic problem of a config, as messages naming the field."""
    problems: list[str] = []
    t, d, c, v = config.train, config.data, config.checkpoint, config.validation
    if config.model.controlnet and config.model.condition_embedding_init != "zeros":
        problems.append(
            "model.condition_embedding_init applies to a ControlNet copied from the UNet, not to "
            f"model.controlnet ({config.model.controlnet}), whose weights are used as they are: drop one"
        )
    _positive(problems, "data.resolution", d.resolution)
    if d.resolution % 8:
        problems.append(f"data.resolution must be a multiple of 8 (the VAE factor), got {d.resolution}")
    if not 0.0 <= d.empty_prompt_prob <= 1.0:
        problems.append(f"data.empty_prompt_prob must be in [0, 1], got {d.empty_prompt_prob}")
    _positive(problems, "data.num_workers", d.num_workers, allow_zero=True)
    if d.max_records is not None:
        _positive(problems, "data.max_records", d.max_records)
    for name, value in (
        ("max_steps", t.max_steps),
        ("batch_size", t.batch_size),
        ("gradient_accumulation_steps", t.gradient_accumulation_steps),
        ("lr", t.lr),
    ):
        _positive(problems, f"train.{name}", value)
    for name, value in (
        ("lr_warmup_steps", t.lr_warmup_steps),
        ("weight_decay", t.weight_decay),
        ("max_grad_norm", t.max_grad_norm),
    ):
        _positive(problems, f"train.{name}", value, allow_zero=True)
    if t.num_threads is not None:
        _positive(problems, "train.num_threads", t.num_threads)
    if t.lr_warmup_steps > t.max_steps:
        problems.append(
            f"train.lr_warmup_steps ({t.lr_warmup_steps}) exceeds train.max_steps ({t.max_steps}): lower "
            f"it to at most {t.max_steps} (e.g. train.lr_warmup_steps={t.max_steps // 10})"
        )
    _positive(problems, "checkpoint.every_n_steps", c.every_n_steps)
    if c.total_limit is not None:
        _positive(problems, "checkpoint.total_limit", c.total_limit)
    _positive(problems, "log.every_n_steps", config.log.every_n_steps)
    _positive(problems, "validation.every_n_steps", v.every_n_steps, allow_zero=True)
    if v.every_n_steps and not v.prompts and not v.jsonl:
        problems.append(
            "validation.every_n_steps is set but neither validation.prompts nor validation.jsonl is: set "
            "validation.jsonl to a held-out train.jsonl, or validation.every_n_steps=0"
        )
    _positive(problems, "train.max_skipped_steps", t.max_skipped_steps, allow_zero=True)
    _positive(problems, "validation.max_records", v.max_records)
    _positive(problems, "validation.edge_tolerance", v.edge_tolerance, allow_zero=True)
    if v.select_best and not v.every_n_steps:
        problems.append(
            f"validation.select_best={v.select_best} needs validation: set validation.every_n_steps > 0"
        )
    if not 0 < v.convergence_min_gain <= 1:
        problems.append(f"validation.convergence_min_gain must be in (0, 1], got {v.convergence_min_gain}")
    if len(v.prompts) != len(v.conditioning_images):
        problems.append(
            f"validation.prompts ({len(v.prompts)}) and validation.conditioning_images "
            f"({len(v.conditioning_images)}) must have the same length"
        )
    _positive(problems, "train.diffusion_loss_weight", t.diffusion_loss_weight, allow_zero=True)
    if t.lr_new_layers is not None:
        _positive(problems, "train.lr_new_layers", t.lr_new_layers)
    problems.extend(_bucket_problems(d))
    problems.extend(_ema_problems(config.ema))
    problems.extend(_text_loss_problems(config))
    if check_paths:
        problems.extend(_local_path_problems(config))
        if config.text_loss.enabled:
            problems.extend(_text_loss_data_problems(config))
    return problems


def _bucket_problems(d: DataConfig) -> list[str]:
    problems: list[str] = []
    if not d.buckets:
        return problems
    if d.bucket_step <= 0 or d.bucket_step % 8:
        problems.append(f"data.bucket_step must be a positive multiple of 8, got {d.bucket_step}")
    elif d.resolution % d.bucket_step:
        problems.append(
            f"data.resolution ({d.resolution}) must be a multiple of data.bucket_step ({d.bucket_step})"
        )
    if d.bucket_max_ratio < 1:
        problems.append(f"data.bucket_max_ratio must be >= 1, got {d.bucket_max_ratio}")
    return problems


def _ema_problems(ema: EmaConfig) -> list[str]:
    problems: list[str] = []
    if ema.enabled:
        if not 0.0 < ema.decay < 1.0:
            problems.append(f"ema.decay must be in (0, 1), got {ema.decay}")
        _positive(problems, "ema.power", ema.power)
        _positive(problems, "ema.update_every_n_steps", ema.update_every_n_steps)
    return problems


def _text_loss_problems(config: SkinforgeConfig) -> list[str]:
    """Settings of `text_loss` that cannot work, whatever the data."""
    tl, problems = config.text_loss, []
    if not tl.enabled:
        return problems
    for name, value in (
        ("every_n_steps", tl.every_n_steps),
        ("max_boxes_per_image", tl.max_boxes_per_image),
        ("unroll_steps", tl.unroll_steps),
        ("crop_width", tl.crop_width),
    ):
        _positive(problems, f"text_loss.{name}", value)
    for name, value in (("ctc_weight", tl.ctc_weight), ("feature_weight", tl.feature_weight)):
        _positive(problems, f"text_loss.{name}", value, allow_zero=True)
    if tl.crop_width % 8:
        problems.append(f"text_loss.crop_width must be a multiple of 8, got {tl.crop_width}")
    if tl.max_timestep < 0:
        problems.append(f"text_loss.max_timestep must be >= 0, got {tl.max_timestep}")
    if config.train.diffusion_loss_weight == 0 and _text_weights(tl) == 0:
        problems.append("train.diffusion_loss_weight and the text_loss weights are all 0: nothing to train")
    return problems


def _text_weights(tl: TextLossConfig) -> float:
    return (tl.ctc_weight if tl.kind in ("ctc", "both") else 0.0) + (
        tl.feature_weight if tl.kind in ("feature", "both") else 0.0
    )


def _text_loss_data_problems(config: SkinforgeConfig) -> list[str]:
    """Checks against the files: the schedule's length and whether the dataset has any boxes at all."""
    problems = []
    tl = config.text_loss
    scheduler_config = Path(config.model.base) / "scheduler" / "scheduler_config.json"
    if scheduler_config.is_file():
        num_train = json.loads(scheduler_config.read_text()).get("num_train_timesteps", 1000)
        if not 0 <= tl.max_timestep < num_train:
            problems.append(
                f"text_loss.max_timestep={tl.max_timestep} is outside the base model's schedule "
                f"[0, {num_train - 1}] ({scheduler_config})"
            )
    jsonl = Path(config.data.train_jsonl)
    if jsonl.is_file() and not _has_boxes(jsonl):
        problems.append(
            f"text_loss.enabled: {jsonl} has no record with `box` and `gt_text`, so the text loss "
            "would never apply (build the dataset with `python -m data glyph`, or disable text_loss)"
        )
    return problems


def _has_boxes(jsonl: Path) -> bool:
    """Whether any line has a non-empty box list; a cheap scan that does not validate the records."""
    with jsonl.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if '"box"' in line and '"gt_text"' in line:
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the record reader reports bad lines with their numbers
                if isinstance(obj, dict) and obj.get("box") and obj.get("gt_text"):
                    return True
    return False


def load_config(
    path: str | Path | None, overrides: Sequence[str] = (), check_paths: bool = True
) -> SkinforgeConfig:
    """Loads a YAML recipe, applies `section.key=value` overrides and validates everything at once.
    A problem whose value came from an override says so, rather than blaming the YAML file."""
    source = str(path) if path else "overrides"
    tree = load_yaml(path) if path else {}
    problems = apply_overrides(tree, overrides)
    config = build_dataclass(SkinforgeConfig, tree, "", problems, KEY_HINTS)
    _read_dataset_folders(config)
    problems.extend(validate(config, check_paths=check_paths))
    if problems:
        blamed, from_overrides = blame_overrides(problems, overrides)
        if from_overrides and path:
            source = f"{path} with the command-line overrides ({from_overrides} from the overrides)"
        raise ConfigError(blamed, source)
    _absolute_model_folders(config.model)
    return config


def _read_dataset_folders(config: SkinforgeConfig) -> None:
    """A dataset folder given as data.train_jsonl or validation.jsonl means its train.jsonl, as the data
    builders read it; the run then records the file it really trained on."""
    if config.data.train_jsonl:
        config.data.train_jsonl = str(dataset_jsonl(config.data.train_jsonl))
    if config.validation.jsonl:
        config.validation.jsonl = str(dataset_jsonl(config.validation.jsonl))


def _absolute_model_folders(model: ModelConfig) -> None:
    """Local model folders become absolute (after validation, whose messages quote what the user wrote):
    the run's skinforge.yaml is read by inference and serving from other folders, where a relative
    ``assets/tiny-sdxl-trained`` would name nothing or be taken for a hub id. Hub ids stay as they are."""
    model.base = _absolute_folder(model.base)
    if model.controlnet:
        model.controlnet = _absolute_folder(model.controlnet)
    if model.vae:
        model.vae = _absolute_folder(model.vae)


def _absolute_folder(value: str) -> str:
    """``value`` as an absolute, normalised path if it names a local folder, else unchanged."""
    folder = Path(value).expanduser()
    return os.path.abspath(folder) if value and folder.is_dir() else value


KEY_HINTS = KeyHints.of(SkinforgeConfig, ALIASES)
"""Suggestions for unknown keys: by spelling, by meaning (the diffusers script's names), by section."""
