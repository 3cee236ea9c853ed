"""The SDXL ControlNet trainer: `setup()`, `train()`, `cleanup()`, in the torchtune recipe style."""

from __future__ import annotations

import logging
import math
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from accelerate import Accelerator, DataLoaderConfiguration, InitProcessGroupKwargs
from accelerate.utils import DistributedType, ProjectConfiguration, set_seed
from diffusers import AutoencoderKL, ControlNetModel, DDPMScheduler, UNet2DConditionModel
from diffusers.optimization import get_scheduler
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from common.atomic import atomic_write_text
from common.host_memory import keep_freed_memory
from common.run_layout import CONFIG_FILE, CONTROLNET_DIR
from common.run_lock import RunLock
from data.records import read_records
from train.best_checkpoint import BestCheckpointKeeper, BestRecord
from train.buckets import BucketBatchSampler, bucket_sizes
from train.checkpoint_verify import CheckpointError
from train.checkpointing import (
    TrainerState,
    folder_bytes,
    full_controlnet,
    list_checkpoints,
    remove_stale_temp,
    resolve_resume,
    save_checkpoint,
    save_controlnet,
)
from train.config import SkinforgeConfig
from train.controlnet_dataset import ControlNetTrainDataset, collate_samples
from train.convergence import CONVERGENCE_METRIC, ConvergenceTracker
from train.distributed import check_one_job, deepspeed_clipping_problem
from train.ema import EMA_DIR, ControlNetEma
from train.encoded_cache import (
    CacheSpec,
    EncodedCache,
    Encoders,
    build_encoded_cache,
    default_cache_root,
)
from train.loader_workers import usable_workers
from train.memory_savers import apply_model_savers, controlnet_param_groups, make_optimizer, set_tf32
from train.nonfinite import NonFiniteError, NonFiniteGuard
from train.resume_check import check_resume_config
from train.run_logging import MetricsLog, configure_logging
from train.run_summary import finished_message
from train.sdxl_models import (
    build_controlnet,
    load_noise_scheduler,
    load_prompt_encoders,
    load_unet,
    load_vae,
    match_condition_scale,
)
from train.step_losses import ControlNetStepLosses
from train.stop_signals import StopRequest

if TYPE_CHECKING:
    from train.text_supervision import TextSupervision
    from train.validation import TrainingValidator

logger = logging.getLogger(__name__)

DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
MATCH_SAMPLES = 16
"""Training items `model.condition_embedding_init: matched` measures the condition's scale on."""


def _metric_name(key: str) -> str:
    """`loss/<name>` for losses, `text/<name>` for the text loss's counters (lines, unknown characters)."""
    return f"text/{key.removeprefix('text_')}" if key.startswith("text_") else f"loss/{key}"


class ControlNetTrainer:
    """Trains a ControlNet against a frozen SDXL UNet on cached latents and prompt embeddings."""

    def __init__(self, config: SkinforgeConfig, stop: StopRequest | None = None) -> None:
        self.config = config
        self.output_dir = Path(config.train.output_dir)
        self.weight_dtype = DTYPES[config.train.mixed_precision]
        self.state = TrainerState(step=0, micro_step=0, epoch=0, batches_into_epoch=0)
        self.convergence = ConvergenceTracker(config.validation.convergence_min_gain)
        self.nonfinite = NonFiniteGuard(config.train.on_nonfinite, config.train.max_skipped_steps)
        self.stop = stop or StopRequest()
        """Installed by the command line (`main`); in-process callers get one that never fires."""
        self.stopped = False
        """True when `train()` ended early on a stop signal, after writing this step's checkpoint."""
        self.lock = RunLock(self.output_dir)
        self._saved_step: int | None = None
        self.last_logged: dict[str, float] = {}
        """The last logged step's values (losses, learning rates), for the end-of-run message."""

    # ----------------------------------------------------------------------------------- setup
    def setup(self) -> None:
        cfg = self.config
        self.accelerator = self._make_accelerator()
        configure_logging(cfg.log.level, self.accelerator.process_index)
        check_one_job(self.accelerator)
        if self.accelerator.distributed_type == DistributedType.DEEPSPEED:
            ds_config = self.accelerator.state.deepspeed_plugin.deepspeed_config
            if problem := deepspeed_clipping_problem(ds_config, cfg.train.max_grad_norm):
                raise ValueError(problem)
        if cfg.train.mixed_precision == "fp16" and self.accelerator.device.type == "cpu":
            raise ValueError(
                "train.mixed_precision=fp16 needs a CUDA device (CPU autocast has no fp16); use bf16"
            )
        if cfg.train.num_threads:
            torch.set_num_threads(cfg.train.num_threads)
        if self.accelerator.device.type == "cpu":
            # Late in a run, small gradients and AdamW moments reach the denormal range, where x86 float
            # math is 10-100x slower (a tiny UNet's steps went from 0.6 s to 5 s); flush them to zero.
            torch.set_flush_denormal(True)
        if cfg.train.keep_freed_host_memory and self.accelerator.device.type == "cpu":
            keep_freed_memory()
        if self.accelerator.is_main_process:
            self.lock.acquire()  # before anything in the folder is read or written
            remove_stale_temp(self.output_dir)
        self.resume_from = self._pick_checkpoint()
        set_seed(cfg.train.seed)
        dataset = self._setup_data_and_models()
        self._setup_optimization(dataset)
        self._setup_trackers()
        self.validator = self._make_validator()
        self._resume()
        self.best = self._make_best_keeper()
        self.config_yaml = cfg.to_yaml()  # after the resume: what the run really uses
        if self.accelerator.is_main_process:
            atomic_write_text(self.output_dir / CONFIG_FILE, self.config_yaml)

    def _make_accelerator(self) -> Accelerator:
        cfg = self.config
        trackers = [
            name for name, on in (("tensorboard", cfg.log.tensorboard), ("wandb", cfg.log.wandb)) if on
        ]
        return Accelerator(
            gradient_accumulation_steps=cfg.train.gradient_accumulation_steps,
            mixed_precision=cfg.train.mixed_precision,
            log_with=trackers or None,
            project_config=ProjectConfiguration(
                project_dir=str(self.output_dir), logging_dir=str(self.output_dir / "logs")
            ),
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
            kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(hours=2))],
        )

    def _setup_data_and_models(self) -> ControlNetTrainDataset:
        cfg = self.config
        jsonl = Path(cfg.data.train_jsonl)
        records = read_records(jsonl)[: cfg.data.max_records]
        self.records = records
        logger.info("Dataset %s: %d records", jsonl, len(records))
        cache = EncodedCache(self._encoded_cache_folder(records, jsonl))
        if len(cache) != len(records):
            raise RuntimeError(
                f"the encoded cache {cache.folder} holds {len(cache)} of {len(records)} records: its shards "
                "are written by every rank, so cache.dir must be a folder that all nodes share"
            )
        self.noise_scheduler: DDPMScheduler = load_noise_scheduler(cfg.model)
        unet = load_unet(cfg.model)
        self.controlnet: ControlNetModel = build_controlnet(cfg.model, unet)  # fp32 copy, on the CPU
        # moved and cast in one go: an fp32 SDXL UNet on the GPU would cost 10 GB for nothing
        cast = {} if self.weight_dtype == torch.float32 else {"dtype": self.weight_dtype}
        self.unet: UNet2DConditionModel = unet.to(self.accelerator.device, **cast)
        self.text_supervision = (
            self._make_text_supervision(load_vae(cfg.model)) if cfg.text_loss.enabled else None
        )
        if self.accelerator.device.type == "cuda":
            set_tf32(cfg.train.tf32)
        apply_model_savers(cfg.train, self.controlnet, self.unet)
        self.empty_prompt = cache.empty_prompt
        text = cfg.text_loss
        dataset = ControlNetTrainDataset(
            records,
            jsonl.parent,
            cache,
            text_targets=text.enabled,
            reference_images=text.enabled and text.kind in ("feature", "both"),
        )
        if cfg.model.condition_embedding_init == "matched" and not cfg.model.controlnet:
            self._match_condition_embedding(dataset)
        return dataset

    def _match_condition_embedding(self, dataset: ControlNetTrainDataset) -> None:
        """`model.condition_embedding_init: matched` on a fresh start; a resumed run loads the trained
        embedder from its checkpoint, so matching it first would be wasted reads and forwards."""
        if self.resume_from is not None:
            logger.info("Condition embedding: trained weights come from %s, not matched", self.resume_from)
            return
        samples = [dataset[i] for i in range(min(MATCH_SAMPLES, len(dataset)))]
        scale = match_condition_scale(self.controlnet, samples, self.config.train.seed)
        logger.info("Condition embedding matched to the latents' scale (%.0f× a Conv2d's default)", scale)

    def _encoded_cache_folder(self, records: list, jsonl: Path) -> Path:
        """The latents/prompt cache for this run, encoded now if no earlier run left a complete one;
        the VAE and text encoders are loaded only in that case, and freed afterwards."""
        cfg, device = self.config, self.accelerator.device

        def load_encoders() -> Encoders:
            return Encoders(load_vae(cfg.model).to(device), load_prompt_encoders(cfg.model).to(device))

        return build_encoded_cache(
            records,
            jsonl.parent,
            CacheSpec.create(cfg.model, cfg.data, jsonl, records, self.weight_dtype),
            load_encoders,
            self.accelerator,
            Path(cfg.cache.dir) if cfg.cache.dir else default_cache_root(),
            cfg.train.batch_size,
            rebuild=cfg.cache.rebuild,
        )

    def _make_text_supervision(self, vae: AutoencoderKL) -> TextSupervision:
        """The VAE decoder and the frozen recognizer, for the text loss. The VAE runs in bf16 under bf16
        training and in fp32 otherwise (SDXL's VAE overflows in fp16)."""
        cfg = self.config.text_loss
        from recognizer.text_loss import TextLoss
        from recognizer.torch_rec import RecognizerConfig, load_text_recognizer
        from train.text_supervision import TextSupervision

        recognizer = load_text_recognizer(
            RecognizerConfig(
                onnx_path=Path(cfg.recognizer_onnx) if cfg.recognizer_onnx else None,
                cache_dir=Path(cfg.recognizer_cache_dir) if cfg.recognizer_cache_dir else None,
            )
        )
        device = self.accelerator.device
        vae_dtype = torch.bfloat16 if self.weight_dtype == torch.bfloat16 else torch.float32
        vae.encoder = None  # latents come from the cache; only the decoder is used
        vae.to(device)
        if vae.dtype != vae_dtype:
            vae.to(dtype=vae_dtype)
        text_loss = TextLoss(recognizer, crop_width=cfg.crop_width).to(device)
        return TextSupervision(cfg, vae, text_loss, self.noise_scheduler)

    def _setup_optimization(self, dataset: ControlNetTrainDataset) -> None:
        t = self.config.train
        groups = controlnet_param_groups(self.controlnet, t.lr, t.lr_new_layers)
        optimizer = make_optimizer(t, groups, self.accelerator.device)
        n = self.accelerator.num_processes
        logger.info(
            "%d process(es) (world size); train.batch_size=%d per process x %d gradient accumulation "
            "= %d samples per optimizer step",
            n,
            t.batch_size,
            t.gradient_accumulation_steps,
            n * t.batch_size * t.gradient_accumulation_steps,
        )
        self.batch_sampler = BucketBatchSampler(
            [dataset.cache.bucket(i) for i in range(len(dataset))], t.batch_size, t.seed, num_replicas=n
        )
        if self.batch_sampler.never_drawn():
            logger.warning(
                "%d records sit in buckets with fewer than train.batch_size=%d records and are never "
                "trained on (widen data.bucket_step or lower the batch size)",
                self.batch_sampler.never_drawn(),
                t.batch_size,
            )
        if len(self.batch_sampler) == 0:
            raise ValueError(
                f"data: {len(dataset)} records cannot give each of {n} process(es) one batch of "
                f"train.batch_size={t.batch_size} from a single bucket"
            )
        workers = usable_workers(self.config.data.num_workers)
        loader = DataLoader(
            dataset,
            batch_sampler=self.batch_sampler,
            num_workers=workers,
            collate_fn=collate_samples,
            persistent_workers=workers > 0,
        )
        scheduler = get_scheduler(
            t.lr_scheduler,
            optimizer,
            num_warmup_steps=t.lr_warmup_steps * n,
            num_training_steps=t.max_steps * n,
        )
        self.controlnet, self.optimizer, self.loader, self.lr_scheduler = self.accelerator.prepare(
            self.controlnet, optimizer, loader, scheduler
        )
        self.ema = self._make_ema()
        self.step_losses = ControlNetStepLosses(
            self.config,
            self.accelerator,
            self.controlnet,
            self.unet,
            self.noise_scheduler,
            self.empty_prompt,
            self.text_supervision,
        )

    def _make_ema(self) -> ControlNetEma | None:
        if not self.config.ema.enabled:
            return None
        if self.accelerator.distributed_type == DistributedType.FSDP:
            raise ValueError(
                "ema.enabled: EMA of FSDP-sharded weights is not supported; use DDP or DeepSpeed"
            )
        return ControlNetEma(
            self.config.ema, self.accelerator.unwrap_model(self.controlnet), self.accelerator
        )

    def _setup_trackers(self) -> None:
        cfg = self.config
        if self.accelerator.is_main_process:
            # the lines of steps after the resumed checkpoint were lost with their weights; redone below
            resumed_step = TrainerState.read(self.resume_from).step if self.resume_from else -1
            self.metrics = MetricsLog(self.output_dir / "metrics.jsonl", keep_through_step=resumed_step)
            init_kwargs = (
                {"wandb": {"mode": cfg.log.wandb_mode, "dir": str(self.output_dir)}} if cfg.log.wandb else {}
            )
            self.accelerator.init_trackers(cfg.log.wandb_project, init_kwargs=init_kwargs)

    def _make_validator(self) -> TrainingValidator | None:
        """Only when validation is on: the pipeline's imports cost start-up time and ~12 MiB of RSS."""
        cfg = self.config
        if not cfg.validation.every_n_steps:
            return None
        from train.validation import TrainingValidator

        buckets = None
        if cfg.data.buckets:
            buckets = bucket_sizes(cfg.data.resolution, cfg.data.bucket_step, cfg.data.bucket_max_ratio)
        return TrainingValidator(cfg.validation, cfg.model, cfg.data.resolution, self.output_dir, buckets)

    def _pick_checkpoint(self) -> Path | None:
        """The verified checkpoint to resume from, its recipe checked against this one; None: fresh."""
        resume = self.config.checkpoint.resume
        folder = resolve_resume(resume, self.output_dir)
        if folder is None:
            if existing := list_checkpoints(self.output_dir):
                raise CheckpointError(
                    f"{self.output_dir} holds {existing[-1].name} of an earlier run and checkpoint.resume is "
                    "not set: a fresh start would overwrite it. Set checkpoint.resume=latest to continue "
                    "it, or choose another train.output_dir"
                )
            if resume:
                logger.info("checkpoint.resume=%s: no checkpoint yet, starting fresh", resume)
            return None
        check_resume_config(folder, self.config)
        saved_ranks = TrainerState.read(folder).num_processes
        ranks = self.accelerator.num_processes
        if saved_ranks not in (None, ranks) and not self.config.checkpoint.allow_config_change:
            raise CheckpointError(
                f"{folder} was written by {saved_ranks} processes and this run has {ranks}: its data "
                "position counts the batches of all ranks. Launch as many, or set "
                "checkpoint.allow_config_change=true"
            )
        return folder

    def _make_best_keeper(self) -> BestCheckpointKeeper | None:
        """With `validation.select_best`, on the main process: the keeper of `best/`, continuing the
        resumed checkpoint's record (the folder on disk wins where they differ)."""
        metric = self.config.validation.select_best
        if metric is None or self.validator is None or not self.accelerator.is_main_process:
            return None
        record = BestRecord(**self.state.best) if self.state.best else None
        return BestCheckpointKeeper(metric, self.output_dir, record)

    def _resume(self) -> None:
        folder = self.resume_from
        if folder is None:
            return
        self.accelerator.load_state(str(folder))
        self.state = TrainerState.read(folder)
        if self.state.convergence:
            self.convergence = ConvergenceTracker.from_json(
                self.state.convergence, self.config.validation.convergence_min_gain
            )
        self._record_restored_learning_rates()
        logger.info("Resumed from %s at step %d", folder, self.state.step)

    def _record_restored_learning_rates(self) -> None:
        """The restored LR schedule keeps the checkpoint's base rates whatever train.lr says now; the
        run's recorded config says what it really trains with."""
        t = self.config.train
        restored = [float(rate) for rate in self.lr_scheduler.scheduler.base_lrs]
        configured = [t.lr] if t.lr_new_layers is None else [t.lr, t.lr_new_layers]
        if restored != configured:
            logger.warning(
                "The restored LR schedule trains at base rates %s, not the configured %s; recorded as such",
                restored,
                configured,
            )
            t.lr = restored[0]
            if t.lr_new_layers is not None:
                t.lr_new_layers = restored[-1]

    # ----------------------------------------------------------------------------------- train
    def train(self) -> None:
        cfg = self.config
        bar = tqdm(
            total=cfg.train.max_steps,
            initial=self.state.step,
            desc="steps",
            disable=not (self.accelerator.is_main_process and cfg.log.progress_bar),
        )
        if self.state.step == 0:
            self._validate(0)
            if cfg.checkpoint.save_at_start:
                self._save_checkpoint()
        while self.state.step < cfg.train.max_steps:
            self.batch_sampler.set_epoch(self.state.epoch)
            self.loader.set_epoch(self.state.epoch)
            batches = self.accelerator.skip_first_batches(self.loader, self.state.batches_into_epoch)
            for batch in batches:
                losses = self._micro_step(batch)
                if self.accelerator.sync_gradients:
                    self.state.step += 1
                    if self.ema is not None:
                        self.ema.update(self.state.step, self.accelerator.unwrap_model(self.controlnet))
                    bar.update(1)
                    self._after_step(losses, bar)
                    if self.state.step >= cfg.train.max_steps:
                        break
                    if self.stop.stop_after(self.state.step):
                        self._stop_on_signal()
                        break
            else:
                self.state.epoch += 1
                self.state.batches_into_epoch = 0
            if self.stopped:
                break
        bar.close()

    def _stop_on_signal(self) -> None:
        """Writes this step's checkpoint (unless just written) and ends `train()` early."""
        if self._saved_step != self.state.step:
            self._save_checkpoint()
        self.stopped = True
        logger.warning(
            "Stopped on %s after step %d; checkpoint-%d holds it (resume with checkpoint.resume=latest)",
            self.stop.signal.name if self.stop.signal else "another rank's stop signal",
            self.state.step,
            self.state.step,
        )

    def _micro_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        with self.accelerator.accumulate(self.controlnet):
            losses = self.compute_losses(batch)
            self.accelerator.backward(losses["total"])
            if not self.accelerator.sync_gradients or self._update_is_finite(losses, batch):
                self.optimizer.step()  # a no-op on micro-steps that accumulate
                self.lr_scheduler.step()
            self.optimizer.zero_grad(set_to_none=self.config.train.zero_grad_set_to_none)
        self.state.micro_step += 1
        self.state.batches_into_epoch += 1
        return losses

    def _update_is_finite(self, losses: dict[str, torch.Tensor], batch: dict[str, Any]) -> bool:
        """Clips the gradients (an infinite limit only measures them) and checks losses and norm; False
        skips the update, a NonFiniteError (recorded in metrics.jsonl) stops the run."""
        limit = self.config.train.max_grad_norm or math.inf
        norm = self.accelerator.clip_grad_norm_(self.controlnet.parameters(), limit)
        records = [self.records[int(i)].image for i in batch["index"]]
        try:
            return self.nonfinite.step_is_finite(self.accelerator, self.state.step + 1, losses, norm, records)
        except NonFiniteError as err:
            if self.accelerator.is_main_process:
                self.metrics.write(err.step, {"nonfinite": {k: str(v) for k, v in err.values.items()}})
            raise

    def compute_losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Named losses of one micro-batch; `total` is what is back-propagated."""
        return self.step_losses(batch, micro_step=self.state.micro_step, step=self.state.step)

    def _after_step(self, losses: dict[str, torch.Tensor], bar: tqdm) -> None:
        cfg, step = self.config, self.state.step
        if step % cfg.log.every_n_steps == 0 or step == cfg.train.max_steps:
            values = {
                _metric_name(k): self.accelerator.reduce(v.detach(), "mean").item() for k, v in losses.items()
            }
            values |= self._learning_rates()
            if self.nonfinite.skipped_total or cfg.train.on_nonfinite == "skip":
                values["train/skipped_steps"] = float(self.nonfinite.skipped_total)
            self.accelerator.log(values, step=step)
            if self.accelerator.is_main_process:
                self.metrics.write(step, values)
                bar.set_postfix(loss=f"{values['loss/total']:.4f}")
                self.last_logged = values
        # Validation first, so the checkpoint's trainer_state.json holds this step's scores; but not when a
        # stop is pending in a one-process run, where the stop's checkpoint must be the next write (with
        # several ranks validation is collective, and the ranks agree on the stop only after the step).
        if self.stop.requested and self.accelerator.num_processes == 1:
            logger.info("Stop requested: skipping step %d's validation, writing the checkpoint first", step)
        else:
            self._validate(step)
        if step % cfg.checkpoint.every_n_steps == 0 or step == cfg.train.max_steps:
            self._save_checkpoint()

    def _save_checkpoint(self) -> None:
        NonFiniteGuard.check_weights(self.accelerator, self.controlnet.parameters(), self.state.step)
        self.state.num_processes = self.accelerator.num_processes
        save_checkpoint(
            self.accelerator,
            self._exportable_models(),
            self.output_dir,
            self.state,
            self.config_yaml,
            self.config.checkpoint.total_limit,
            self._checkpoint_bytes(),
        )
        self._saved_step = self.state.step

    def _checkpoint_bytes(self) -> int:
        """The size of the next checkpoint: the newest one's, or (none yet) the ControlNet's weights four
        times over (accelerate's copy, AdamW's two moments, the diffusers copy), plus the EMA."""
        if existing := list_checkpoints(self.output_dir):
            return folder_bytes(existing[-1])
        weights = sum(p.numel() * p.element_size() for p in self.controlnet.parameters())
        return weights * (4 + (self.ema is not None))

    def _validate(self, step: int) -> None:
        """Validation images and scores when due; edge adherence feeds the convergence tracker."""
        if self.validator is None or not self.validator.due(step, self.config.train.max_steps):
            return
        # On every rank: under FSDP the main process alone cannot run the sharded ControlNet.
        controlnet = full_controlnet(self.accelerator, self.controlnet)
        if controlnet is not None:
            scores = self.validator.run(step, controlnet, self.unet, self.accelerator)
            if CONVERGENCE_METRIC in scores and self.convergence.update(step, scores[CONVERGENCE_METRIC]):
                scores["validation/converged_at_step"] = float(step)
            self.state.convergence = self.convergence.to_json()
            if self.best is not None:
                self.best.consider(step, scores, controlnet, self.config_yaml)
                self.state.best = self.best.to_json()
            if scores:
                self.accelerator.log(scores, step=step)
                self.metrics.write(step, scores)
        self.accelerator.wait_for_everyone()

    def _learning_rates(self) -> dict[str, float]:
        """`lr` of the first parameter group, plus `lr/<group>` of the others when there are several."""
        rates = self.lr_scheduler.get_last_lr()
        values = {"lr": rates[0]}
        for group, rate in zip(self.optimizer.param_groups[1:], rates[1:], strict=True):
            values[f"lr/{group.get('name', len(values))}"] = rate
        return values

    def _exportable_models(self) -> dict[str, ControlNetModel]:
        """Folder name -> ControlNet to save in diffusers format, on the main process (empty elsewhere).
        Called on every rank, because gathering FSDP shards needs all of them."""
        controlnet = full_controlnet(self.accelerator, self.controlnet)
        if controlnet is None:
            return {}
        models = {CONTROLNET_DIR: controlnet}
        if self.ema is not None:
            models[EMA_DIR] = self.ema.averaged_controlnet(controlnet)
        return models

    def _log_convergence(self) -> None:
        """The run's answer to "did it learn to follow the condition, and when?"."""
        tracker = self.convergence
        if not tracker.history:
            return
        last_step, last = tracker.history[-1]
        if tracker.converged_at is not None:
            logger.info(
                "Converged (sudden convergence) at step %d; %s %.3f at step-%d baseline, %.3f at step %d",
                tracker.converged_at,
                CONVERGENCE_METRIC,
                tracker.baseline,
                tracker.history[0][0],
                last,
                last_step,
            )
        else:
            logger.info(
                "No convergence yet: %s %.3f at step %d against %.3f at step %d (needs a gain of %.2f)",
                CONVERGENCE_METRIC,
                last,
                last_step,
                tracker.baseline,
                tracker.history[0][0],
                tracker.min_gain,
            )

    # --------------------------------------------------------------------------------- cleanup
    def cleanup(self) -> Path:
        """Saves the final ControlNet (and its EMA) in diffusers format and closes the trackers."""
        final = self.output_dir / CONTROLNET_DIR
        self.accelerator.wait_for_everyone()
        NonFiniteGuard.check_weights(self.accelerator, self.controlnet.parameters(), self.state.step)
        models = self._exportable_models()
        if self.accelerator.is_main_process:
            for name, model in models.items():
                save_controlnet(model, self.output_dir / name, self.config_yaml)
            self._log_convergence()
            if self.best is not None and (record := self.best.record) is not None:
                logger.info(
                    "Best validated ControlNet by %s: step %d (%.4f), in %s",
                    record.metric,
                    record.step,
                    record.score,
                    self.best.folder,
                )
            data = self.config.validation.jsonl or self.config.data.train_jsonl
            logger.info(
                "%s", finished_message(final, self.state.step, self.last_logged, self.output_dir, data)
            )
        self.close()
        return final

    def close(self) -> None:
        """Closes metrics.jsonl and the trackers and frees the run folder (also after a stop)."""
        if self.accelerator.is_main_process:
            self.metrics.close()
        self.accelerator.end_training()
        self.lock.release()
