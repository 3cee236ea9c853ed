"""The OCR text loss inside training steps, on the tiny SDXL and a small labelled dataset."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from training_helpers import read_metrics, reset_accelerator, run_training, set_up_trainer

from train.config import ModelConfig
from train.config_loader import ConfigError
from train.controlnet_dataset import collate_samples
from train.trainer import ControlNetTrainer

LABELLED, UNLABELLED = [0, 1], [6, 7]
"""Record indices of `text_jsonl` with and without boxes."""


@pytest.fixture(autouse=True)
def fresh_accelerator_state() -> Iterator[None]:
    yield
    reset_accelerator()


@pytest.fixture
def text_overrides(tiny_overrides: list[str], text_jsonl: Path) -> list[str]:
    return [
        *[o for o in tiny_overrides if not o.startswith(("data.train_jsonl", "data.resolution"))],
        f"data.train_jsonl={text_jsonl}",
        "data.resolution=128",
        "data.empty_prompt_prob=0",
        "text_loss.enabled=true",
        "text_loss.max_timestep=999",
        "text_loss.timestep_weight=none",
    ]


def batch_of(trainer: ControlNetTrainer, indices: list[int]) -> dict:
    dataset = trainer.loader.dataset
    return collate_samples([dataset[i] for i in indices])


def losses_at(trainer: ControlNetTrainer, batch: dict, micro_step: int = 0) -> dict[str, torch.Tensor]:
    """The step's losses for a fixed draw of noise and timesteps."""
    trainer.state.micro_step = micro_step
    return trainer.compute_losses(batch)


def test_text_loss_is_finite_and_its_gradient_reaches_only_the_controlnet(text_overrides: list[str]) -> None:
    trainer = set_up_trainer([*text_overrides, "text_loss.kind=both", "train.diffusion_loss_weight=0"])
    losses = losses_at(trainer, batch_of(trainer, LABELLED))
    assert losses["ctc"].item() > 0 and torch.isfinite(losses["ctc"])
    assert losses["feature"].item() > 0 and torch.isfinite(losses["feature"])
    assert losses["text_lines"].item() == 4  # two labels on each of the two keys
    losses["total"].backward()

    grads = [p.grad for p in trainer.controlnet.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    supervision = trainer.text_supervision
    assert supervision is not None
    frozen = [trainer.unet, supervision.vae, supervision.text_loss.recognizer]
    assert all(p.grad is None and not p.requires_grad for module in frozen for p in module.parameters())


def test_records_without_boxes_leave_the_step_unchanged(text_overrides: list[str], tmp_path: Path) -> None:
    def step(extra: list[str]) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
        trainer = set_up_trainer([*text_overrides, *extra])
        losses = losses_at(trainer, batch_of(trainer, UNLABELLED))
        losses["total"].backward()
        grads = [p.grad.clone() for p in trainer.controlnet.parameters()]
        reset_accelerator()
        return losses, grads

    with_text, grads_with = step([f"train.output_dir={tmp_path / 'a'}", "text_loss.kind=both"])
    without, grads_without = step([f"train.output_dir={tmp_path / 'b'}", "text_loss.enabled=false"])
    assert with_text["text_lines"].item() == 0 and with_text["ctc"].item() == 0
    assert torch.equal(with_text["total"], without["total"])
    assert all(torch.equal(a, b) for a, b in zip(grads_with, grads_without, strict=True))


def test_a_text_only_run_lowers_the_text_loss(text_overrides: list[str]) -> None:
    """15 optimizer steps on the CTC alone, each with the same batch, noise and timesteps, lower it."""
    trainer = set_up_trainer(
        [*text_overrides, "train.diffusion_loss_weight=0", "text_loss.ctc_weight=1", "train.lr=2e-3"]
    )
    batch = batch_of(trainer, LABELLED)
    history = []
    for _ in range(15):
        trainer.state.micro_step = 0
        history.append(trainer._micro_step(batch)["ctc"].item())
    with torch.no_grad():
        after = losses_at(trainer, batch)["ctc"].item()
    assert after < 0.6 * history[0], f"CTC {history} -> {after:.3f}"


@pytest.mark.parametrize(
    "mode",
    [
        ["text_loss.estimate=unroll", "text_loss.unroll_steps=3"],
        ["text_loss.vae_decode=crops"],
        ["train.mixed_precision=bf16", "text_loss.kind=both"],
    ],
    ids=["unroll", "tiles", "bf16"],
)
def test_unroll_tiles_and_bf16_train_and_log(text_overrides: list[str], mode: list[str]) -> None:
    run = Path(next(o for o in text_overrides if o.startswith("train.output_dir")).split("=", 1)[1])
    run_training([*text_overrides, *mode, "train.max_steps=2", "log.every_n_steps=1"])
    metrics = read_metrics(run)
    assert [m["step"] for m in metrics] == [1, 2]
    assert all(m["loss/ctc"] > 0 and m["text/lines"] > 0 for m in metrics)


def test_impossible_text_loss_settings_are_refused(text_overrides: list[str], fill_jsonl: Path) -> None:
    from train.config import load_config

    with pytest.raises(ConfigError) as error:
        load_config(
            "configs/fill_tiny.yaml",
            [*text_overrides, f"data.train_jsonl={fill_jsonl}", "text_loss.max_timestep=1000"],
        )
    message = str(error.value)
    assert "has no record with `box` and `gt_text`" in message
    assert "text_loss.max_timestep=1000 is outside the base model's schedule [0, 999]" in message


def test_validation_reads_the_generated_labels_and_logs_ocr_scores(
    text_overrides: list[str], text_jsonl: Path
) -> None:
    run = Path(next(o for o in text_overrides if o.startswith("train.output_dir")).split("=", 1)[1])
    run_training(
        [
            *text_overrides,
            "train.max_steps=1",
            "validation.every_n_steps=1",
            "validation.num_inference_steps=2",
            f"validation.jsonl={text_jsonl}",
            "validation.max_records=3",
        ]
    )
    baseline, scores = [m for m in read_metrics(run) if "validation/ocr_lines" in m]
    assert (baseline["step"], scores["step"]) == (0, 1)  # validation.at_start: the step-0 baseline too
    assert scores["validation/ocr_lines"] == 6  # 3 records, an English and a Chinese label each
    assert 0 <= scores["validation/ocr_sentence_accuracy"] <= 1
    assert 0 <= scores["validation/ocr_normalized_edit_distance"] <= 1
    assert (run / "validation" / "step-000001.png").is_file()


def test_validation_ocr_scores_boxes_scaled_to_the_generated_size(text_jsonl: Path, tmp_path: Path) -> None:
    """Fed the ground-truth images at twice the condition's size, the OCR scores must be near perfect."""
    from PIL import Image

    from data.records import read_records
    from train.config import ValidationConfig
    from train.validation import TrainingValidator

    cfg = ValidationConfig(every_n_steps=1, jsonl=str(text_jsonl), max_records=6)
    validator = TrainingValidator(cfg, ModelConfig(base="unused"), 128, tmp_path)
    records = read_records(text_jsonl)[:6]
    images = [Image.open(text_jsonl.parent / r.image).convert("RGB").resize((256, 256)) for r in records]
    scores = validator._text_scores(images)
    assert scores["validation/ocr_lines"] == 12
    assert scores["validation/ocr_sentence_accuracy"] >= 0.8, scores
