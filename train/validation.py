"""Validation images during training: fixed prompts and conditions, saved as one grid per step, plus
OCR scores of the generated labels when the validation records carry text boxes."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from diffusers import ControlNetModel, UNet2DConditionModel
from PIL import Image

from common.atomic import atomic_save_image
from data.records import read_records, resolve_path
from inference.dataset_edges import dataset_edge_settings
from inference.denoising_advantage import HeldOut, denoising_advantage
from inference.fill_metrics import circle_iou
from inference.grid import make_grid
from inference.metrics import EdgeSettings, edge_scores, text_scores
from inference.pipeline import ControlNetPipeline, GenerationSettings, generate, load_pipeline
from recognizer.ocr import READERS, OcrBackend, OcrConfig
from recognizer.tesseract_reader import tesseract_problem
from train.buckets import Size, nearest_bucket
from train.config import ModelConfig, ValidationConfig
from train.controlnet_dataset import map_boxes
from train.sample_geometry import CropGeometry

logger = logging.getLogger(__name__)


@dataclass
class ValidationSample:
    prompt: str
    condition: Image.Image
    boxes: np.ndarray
    """(K, 4, 2) in the condition's pixels; K = 0 when the sample has no text boxes."""
    texts: list[str]


def load_validation_samples(cfg: ValidationConfig) -> list[ValidationSample]:
    """`prompts` with `conditioning_images`, then the first `max_records` records of `jsonl`."""
    samples = [
        ValidationSample(prompt, Image.open(path).convert("RGB"), np.zeros((0, 4, 2)), [])
        for prompt, path in zip(cfg.prompts, cfg.conditioning_images, strict=True)
    ]
    if cfg.jsonl:
        jsonl = Path(cfg.jsonl)
        for record in read_records(jsonl)[: cfg.max_records]:
            with Image.open(resolve_path(jsonl.parent, record.conditioning_image)) as image:
                condition = image.convert("RGB")
            boxes = np.asarray(record.box or np.zeros((0, 4, 2)), dtype=np.float64).reshape(-1, 4, 2)
            samples.append(ValidationSample(record.text, condition, boxes, list(record.gt_text or [])))
    return samples


def fit_to_bucket(sample: ValidationSample, buckets: Sequence[Size]) -> ValidationSample:
    """The sample's condition fitted into its nearest bucket as training fits it, boxes mapped along."""
    condition = sample.condition
    geometry = CropGeometry.cover(condition.width, condition.height, nearest_bucket(*condition.size, buckets))
    boxes, texts = map_boxes(sample.boxes, sample.texts, geometry)
    return ValidationSample(sample.prompt, geometry.apply(condition), boxes.astype(np.float64), texts)


def _copy_in_dtype(controlnet: ControlNetModel, dtype: torch.dtype) -> ControlNetModel:
    """A plain copy in the pipeline's dtype: the fp32 master weights stay untouched, and accelerate's
    mixed-precision forward wrapper (which returns fp32 outputs) is not carried over."""
    copy = ControlNetModel.from_config(controlnet.config)
    copy.load_state_dict(controlnet.state_dict())
    return copy.to(device=controlnet.device, dtype=dtype)


class TrainingValidator:
    """Runs on the main process; borrows the trainer's UNet and ControlNet, loads VAE and text encoders."""

    def __init__(
        self,
        cfg: ValidationConfig,
        model: ModelConfig,
        resolution: int,
        output_dir: Path,
        buckets: Sequence[Size] | None = None,
    ) -> None:
        """Square images of side `resolution`, or with `buckets` each condition's nearest bucket."""
        self.cfg = cfg
        self.model = model
        self.folder = output_dir / "validation"
        self.settings = GenerationSettings(
            num_inference_steps=cfg.num_inference_steps,
            scheduler=cfg.scheduler,
            guidance_scale=cfg.guidance_scale,
            resolution=None if buckets else resolution,
        )
        self.samples = load_validation_samples(cfg)
        if buckets:
            self.samples = [fit_to_bucket(s, buckets) for s in self.samples]
        self.scores_text = cfg.ocr and any(len(s.texts) for s in self.samples)
        if not cfg.readers or len(set(cfg.readers)) != len(cfg.readers):
            raise ValueError(f"validation.readers: name each OCR reader once, got {cfg.readers}")
        if self.scores_text and "tesseract" in cfg.readers and (problem := tesseract_problem()) is not None:
            raise ValueError(f"validation.readers names tesseract, which cannot run here: {problem}")
        self._readers: dict[str, OcrBackend] = {}
        self.held_out = self._held_out(resolution, buckets)

    def _held_out(self, resolution: int, buckets: Sequence[Size] | None) -> HeldOut | None:
        cfg = self.cfg
        if not (cfg.denoising_advantage and cfg.jsonl and cfg.every_n_steps):
            return None
        if buckets:
            logger.info("validation.denoising_advantage is not computed with data.buckets (mixed sizes)")
            return None
        jsonl = Path(cfg.jsonl)
        records = read_records(jsonl)[: cfg.max_records]
        if len(records) < 2:
            logger.info("validation.denoising_advantage needs two or more validation records; not computed")
            return None
        return HeldOut.from_records(records, jsonl.parent, size=resolution)

    def due(self, step: int, max_steps: int) -> bool:
        """After every `every_n_steps` steps and the last; at step 0 when `at_start`."""
        every = self.cfg.every_n_steps
        if step == 0:
            return bool(every) and self.cfg.at_start
        return bool(every) and (step % every == 0 or step == max_steps)

    @torch.no_grad()
    def run(
        self, step: int, controlnet: ControlNetModel, unet: UNet2DConditionModel, accelerator: Accelerator
    ) -> dict[str, float]:
        """Generates the validation grid for `step`, saves it, sends it to the trackers; returns the edge
        adherence scores (with `edges`) and the OCR scores (when the samples have text boxes)."""
        images, advantage = self._generate(controlnet, unet, accelerator)
        conditions = [s.condition for s in self.samples]
        grid = make_grid(
            [list(pair) for pair in zip(conditions, images, strict=True)], ["condition", f"step {step}"]
        )
        path = self.folder / f"step-{step:06d}.png"
        atomic_save_image(grid, path)
        batch = np.stack([np.asarray(grid)])
        for tracker in accelerator.trackers:
            layout = {"dataformats": "NHWC"} if tracker.name == "tensorboard" else {}
            tracker.log_images({"validation": batch}, step=step, **layout)
        logger.info("Validation images for step %d: %s", step, path)
        scores = self._edge_scores(images) if self.cfg.edges else {}
        return scores | advantage | (self._text_scores(images) if self.scores_text else {})

    def _edge_scores(self, images: list[Image.Image]) -> dict[str, float]:
        """Mean edge adherence of the images to their conditions (inference's metric, condition as edges)."""
        settings = EdgeSettings(tolerance=self.cfg.edge_tolerance)
        if self.cfg.jsonl:  # the detector `data canny` made the conditions with, when it did
            settings = dataset_edge_settings(Path(self.cfg.jsonl), settings)
        rows = [edge_scores(i, s.condition, settings) for i, s in zip(images, self.samples, strict=True)]
        scores = {
            "validation/edge_f1": float(np.mean([r.f1 for r in rows])),
            "validation/edge_f1_tolerant": float(np.mean([r.f1_tolerant for r in rows])),
            "validation/edge_ssim": float(np.mean([r.ssim for r in rows])),
        }
        ious = [circle_iou(i, s.condition, s.prompt) for i, s in zip(images, self.samples, strict=True)]
        if ious := [iou for iou in ious if iou is not None]:  # fill records: is the circle in its place?
            scores["validation/circle_iou"] = float(np.mean(ious))
        logger.info("Validation edge adherence: %s", {k: round(v, 4) for k, v in scores.items()})
        return scores

    def _generate(
        self, controlnet: ControlNetModel, unet: UNet2DConditionModel, accelerator: Accelerator
    ) -> tuple[list[Image.Image], dict[str, float]]:
        """The validation images, and the denoising advantage scores (same pipeline)."""
        if controlnet.dtype != unet.dtype:
            controlnet = _copy_in_dtype(controlnet, unet.dtype)
        was_training = controlnet.training
        controlnet.eval()
        try:
            pipe = load_pipeline(
                self.model.base,
                controlnet,
                str(accelerator.device),
                dtype=unet.dtype,
                unet=unet,
                vae=self.model.vae,
            )
            prompts = [s.prompt for s in self.samples]
            conditions = [s.condition for s in self.samples]
            images = generate(pipe, prompts, conditions, [self.cfg.seed] * len(prompts), self.settings)
            return images, self._advantage_scores(pipe) if self.held_out else {}
        finally:
            controlnet.train(was_training)

    def _advantage_scores(self, pipe: ControlNetPipeline) -> dict[str, float]:
        """Mean relative advantage over the timesteps, and each timestep's."""
        assert self.held_out is not None
        rows = denoising_advantage(pipe, self.held_out)
        scores = {f"validation/denoising_advantage_t{r.timestep}": r.relative for r in rows}
        scores["validation/denoising_advantage"] = float(np.mean([r.relative for r in rows]))
        logger.info(
            "Validation denoising advantage (own vs exchanged condition): %s",
            ", ".join(f"t={r.timestep} {r.relative:+.1%} ({r.wins}/{r.records} records)" for r in rows),
        )
        return scores

    def _text_scores(self, images: list[Image.Image]) -> dict[str, float]:
        """Each sample's boxes, scaled from its condition to the generated image, read by each reader
        (loaded at first use); the first reader's scores also under the plain ``validation/ocr_*`` keys."""
        from recognizer.backends import load_ocr
        from recognizer.box_reading import read_boxes

        scores: dict[str, float] = {}
        for index, name in enumerate(self.cfg.readers):
            if name not in self._readers:
                self._readers[name] = load_ocr(OcrConfig(backend=READERS[name], use_angle_cls=False))
            read, truth = [], []
            for sample, image in zip(self.samples, images, strict=True):
                if not sample.texts:
                    continue
                size = sample.condition
                scale = np.array([image.width / size.width, image.height / size.height])
                read += read_boxes(self._readers[name], image, sample.boxes * scale, sample.texts)
                truth += sample.texts
            text = text_scores(read, truth)
            scores |= text.as_dict(f"validation/ocr_{name}_")
            if index == 0:
                scores |= text.as_dict("validation/ocr_")
        logger.info("Validation OCR: %s", scores)
        return scores
