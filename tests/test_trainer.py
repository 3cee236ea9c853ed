"""The trainer in-process on the tiny SDXL: it learns, leaves the frozen parts alone and resumes exactly."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from diffusers import ControlNetModel, UNet2DConditionModel
from PIL import Image
from training_helpers import CONFIG, read_metrics, reset_accelerator, run_training

from common.diffusion import diffusion_target
from data.records import DatasetError
from train.config import load_config
from train.distributed import step_generator
from train.losses import drop_prompts
from train.trainer import ControlNetTrainer


@pytest.fixture(autouse=True)
def fresh_accelerator_state() -> Iterator[None]:
    yield
    reset_accelerator()


def state_dicts_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k].float(), b[k].float()) for k in a)


def test_training_updates_the_controlnet_and_nothing_frozen(
    tiny_sdxl_dir: Path, tiny_overrides: list[str]
) -> None:
    run = Path(tiny_overrides[3].split("=", 1)[1])
    trainer = run_training([*tiny_overrides, "train.max_steps=3", "log.every_n_steps=1"])

    metrics = read_metrics(run)
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert all(torch.isfinite(torch.tensor(m["loss/total"])) for m in metrics)

    unet_on_disk = UNet2DConditionModel.from_pretrained(tiny_sdxl_dir, subfolder="unet")
    assert state_dicts_equal(trainer.unet.state_dict(), unet_on_disk.state_dict())
    initial = ControlNetModel.from_unet(unet_on_disk).state_dict()
    trained = ControlNetModel.from_pretrained(run / "controlnet").state_dict()
    changed = [k for k in initial if not torch.equal(initial[k], trained[k])]
    assert len(changed) > len(initial) // 2, "most ControlNet tensors should have moved"

    checkpoint = run / "checkpoint-3"
    assert (checkpoint / "trainer_state.json").is_file()
    in_checkpoint = ControlNetModel.from_pretrained(checkpoint / "controlnet").state_dict()
    assert state_dicts_equal(in_checkpoint, trained)
    assert "model:" in (run / "controlnet" / "skinforge.yaml").read_text()


def test_resume_continues_exactly_and_rotation_keeps_the_limit(
    tiny_overrides: list[str], tmp_path: Path
) -> None:
    straight = tmp_path / "straight"
    resumed = tmp_path / "resumed"
    common = [
        *tiny_overrides,
        "checkpoint.every_n_steps=2",
        "checkpoint.total_limit=1",
        "log.every_n_steps=1",
    ]
    run_training([*common, f"train.output_dir={straight}", "train.max_steps=4"])
    run_training([*common, f"train.output_dir={resumed}", "train.max_steps=2"])
    trainer = run_training(
        [*common, f"train.output_dir={resumed}", "train.max_steps=4", "checkpoint.resume=latest"]
    )

    assert trainer.state.step == 4
    assert [m["step"] for m in read_metrics(resumed)] == [1, 2, 3, 4]
    assert sorted(p.name for p in resumed.glob("checkpoint-*")) == ["checkpoint-4"]
    a = ControlNetModel.from_pretrained(straight / "controlnet").state_dict()
    b = ControlNetModel.from_pretrained(resumed / "controlnet").state_dict()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-6, f"resumed run drifted from the uninterrupted one by {worst}"


def test_resume_from_an_explicit_path_and_a_missing_one(tiny_overrides: list[str], tmp_path: Path) -> None:
    run = Path(tiny_overrides[3].split("=", 1)[1])
    run_training(
        [*tiny_overrides, "train.max_steps=2", "checkpoint.every_n_steps=1", "checkpoint.total_limit=null"]
    )
    trainer = run_training(
        [*tiny_overrides, "train.max_steps=3", f"checkpoint.resume={run / 'checkpoint-1'}"]
    )
    assert trainer.state.step == 3
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        run_training([*tiny_overrides, f"checkpoint.resume={tmp_path / 'nowhere'}"])


class _Messages(logging.Handler):
    """The trainer's log lines (its own logger: the run replaces the root logger's handlers)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_matched_init_runs_on_a_fresh_start_only(tiny_overrides: list[str]) -> None:
    messages = _Messages()
    logging.getLogger("train.trainer").addHandler(messages)
    matched = [*tiny_overrides, "model.condition_embedding_init=matched", "checkpoint.every_n_steps=1"]
    try:
        run_training([*matched, "train.max_steps=1"])
        fresh, messages.lines = messages.lines, []
        resumed = run_training([*matched, "train.max_steps=2", "checkpoint.resume=latest"])
    finally:
        logging.getLogger("train.trainer").removeHandler(messages)
    assert resumed.state.step == 2
    assert any(line.startswith("Condition embedding matched") for line in fresh)
    assert not any(line.startswith("Condition embedding matched") for line in messages.lines)
    assert any("trained weights come from" in line and "checkpoint-1" in line for line in messages.lines)


def test_finetune_starts_from_the_given_controlnet(
    tiny_controlnet_dir: Path, tiny_overrides: list[str]
) -> None:
    trainer = ControlNetTrainer(
        load_config(CONFIG, [*tiny_overrides, f"model.controlnet={tiny_controlnet_dir}"])
    )
    trainer.setup()
    start = trainer.accelerator.unwrap_model(trainer.controlnet).state_dict()
    assert state_dicts_equal(start, ControlNetModel.from_pretrained(tiny_controlnet_dir).state_dict())


def test_bf16_accumulation_and_checkpointing_run_on_cpu(tiny_overrides: list[str]) -> None:
    run = Path(tiny_overrides[3].split("=", 1)[1])
    trainer = run_training(
        [
            *tiny_overrides,
            "train.max_steps=2",
            "train.mixed_precision=bf16",
            "train.gradient_checkpointing=true",
            "train.gradient_accumulation_steps=2",
            "log.every_n_steps=1",
        ]
    )
    metrics = read_metrics(run)
    assert [m["step"] for m in metrics] == [1, 2]
    assert all(torch.isfinite(torch.tensor(m["loss/total"])) for m in metrics)
    assert trainer.state.micro_step == 4
    assert trainer.unet.dtype == torch.bfloat16
    master = trainer.accelerator.unwrap_model(trainer.controlnet)
    assert all(p.dtype == torch.float32 for p in master.parameters())


def test_a_bad_dataset_stops_setup_with_every_bad_line(tiny_overrides: list[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"text": "a", "image": "missing.png", "conditioning_image": "missing_c.png"}\n{"txt": "b"}\n',
        encoding="utf-8",
    )
    trainer = ControlNetTrainer(load_config(CONFIG, [*tiny_overrides, f"data.train_jsonl={bad}"]))
    with pytest.raises(DatasetError) as info:
        trainer.setup()
    message = str(info.value)
    assert f"{bad}:1: image" in message
    assert f"{bad}:2:" in message and "did you mean 'text'" in message


def test_prompt_dropout_is_drawn_per_call() -> None:
    embeds, pooled = torch.ones(64, 3, 4), torch.ones(64, 5)
    empty = {"prompt_embeds": torch.zeros(3, 4), "pooled_embeds": torch.zeros(5)}
    kept, kept_pooled = drop_prompts(embeds, pooled, empty, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(kept, embeds) and torch.equal(kept_pooled, pooled)
    all_dropped, _ = drop_prompts(embeds, pooled, empty, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(all_dropped, torch.zeros_like(embeds))
    first, _ = drop_prompts(embeds, pooled, empty, 0.5, step_generator(0, 0, 1))
    second, _ = drop_prompts(embeds, pooled, empty, 0.5, step_generator(0, 0, 2))
    dropped_first = (first.sum(dim=(1, 2)) == 0).tolist()
    assert 10 < sum(dropped_first) < 54
    assert dropped_first != (second.sum(dim=(1, 2)) == 0).tolist()


def test_noise_differs_per_rank_and_repeats_per_step() -> None:
    def draw(rank: int, step: int) -> torch.Tensor:
        return torch.randn(8, generator=step_generator(7, rank, step))

    assert torch.equal(draw(0, 5), draw(0, 5))
    assert not torch.equal(draw(0, 5), draw(1, 5))
    assert not torch.equal(draw(0, 5), draw(0, 6))


def test_validation_grids_are_saved_and_logged(tiny_overrides: list[str], fill_jsonl: Path) -> None:
    run = Path(tiny_overrides[3].split("=", 1)[1])
    conditions = [fill_jsonl.parent / f"conditioning_images/0000{i}.png" for i in (0, 1)]
    run_training(
        [
            *tiny_overrides,
            "train.max_steps=3",
            "train.mixed_precision=bf16",
            "log.tensorboard=true",
            "validation.every_n_steps=2",
            "validation.num_inference_steps=2",
            "validation.prompts=[red circle, blue circle]",
            f"validation.conditioning_images=[{conditions[0]}, {conditions[1]}]",
            f"validation.jsonl={fill_jsonl}",
            "validation.max_records=3",
            "model.condition_embedding_init=matched",  # else the condition has no path yet after 3 steps
        ]
    )
    grids = sorted(p.name for p in (run / "validation").glob("*.png"))
    assert grids == ["step-000000.png", "step-000002.png", "step-000003.png"]  # step 0: the baseline
    advantage = [m for m in read_metrics(run) if "validation/denoising_advantage" in m]
    assert [m["step"] for m in advantage] == [0, 2, 3]
    assert advantage[0]["validation/denoising_advantage"] == 0.0, "zero output convolutions at step 0"
    assert all(m["validation/denoising_advantage_t900"] != 0.0 for m in advantage[1:])
    with Image.open(run / "validation" / grids[0]) as grid:
        assert grid.width > 2 * 64 and grid.height > 2 * 64
    edges = [m for m in read_metrics(run) if "validation/edge_f1_tolerant" in m]
    assert [m["step"] for m in edges] == [0, 2, 3]
    assert all(0 <= m["validation/edge_f1"] <= m["validation/edge_f1_tolerant"] <= 1 for m in edges)
    state = json.loads((run / "checkpoint-3" / "trainer_state.json").read_text())
    history = [[m["step"], m["validation/edge_f1_tolerant"]] for m in edges]
    assert state["convergence"]["history"] == history
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = (run / "logs").rglob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events.parent), size_guidance={"images": 0})
    accumulator.Reload()
    assert [e.step for e in accumulator.Images("validation")] == [0, 2, 3], "grids not in TensorBoard"


def test_fp16_on_cpu_is_refused_with_a_clear_message(tiny_overrides: list[str]) -> None:
    trainer = ControlNetTrainer(load_config(CONFIG, [*tiny_overrides, "train.mixed_precision=fp16"]))
    if torch.cuda.is_available():
        pytest.skip("fp16 is valid where CUDA is available")
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        trainer.setup()


def test_targets_follow_the_prediction_type(tiny_sdxl_dir: Path) -> None:
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler.from_pretrained(tiny_sdxl_dir, subfolder="scheduler")
    latents, noise = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    timesteps = torch.tensor([10, 900])
    assert torch.equal(diffusion_target(scheduler, latents, noise, timesteps), noise)
    v_scheduler = DDPMScheduler.from_config(scheduler.config, prediction_type="v_prediction")
    alpha = v_scheduler.alphas_cumprod[timesteps].sqrt()[:, None, None, None]
    sigma = (1 - v_scheduler.alphas_cumprod[timesteps]).sqrt()[:, None, None, None]
    expected = alpha * noise - sigma * latents
    assert torch.allclose(diffusion_target(v_scheduler, latents, noise, timesteps), expected, atol=1e-6)
    sample_scheduler = DDPMScheduler.from_config(scheduler.config, prediction_type="sample")
    with pytest.raises(ValueError, match="unsupported prediction_type 'sample'"):
        diffusion_target(sample_scheduler, latents, noise, timesteps)


def _trained_weights(overrides: list[str], run: Path) -> dict[str, torch.Tensor]:
    run_training([*overrides, f"train.output_dir={run}", "train.max_steps=2"])
    return ControlNetModel.from_pretrained(run / "controlnet").state_dict()


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_speed_switches_do_not_change_what_is_learned(tiny_overrides: list[str], tmp_path: Path) -> None:
    """channels-last and the fused AdamW kernel are pure speed switches: same weights after training."""
    plain = _trained_weights(
        [*tiny_overrides, "train.channels_last=false", "train.fused_adamw=false"], tmp_path / "plain"
    )
    fast = _trained_weights(
        [*tiny_overrides, "train.channels_last=true", "train.fused_adamw=true"], tmp_path / "fast"
    )
    assert _max_difference(plain, fast) < 1e-5


@pytest.mark.slow
def test_compiled_training_matches_eager_and_saves_plain_weights(
    tiny_overrides: list[str], tmp_path: Path
) -> None:
    eager = _trained_weights([*tiny_overrides, "train.compile=false"], tmp_path / "eager")
    compiled = _trained_weights([*tiny_overrides, "train.compile=true"], tmp_path / "compiled")
    assert _max_difference(eager, compiled) < 1e-4
    resumable = tmp_path / "compiled" / "checkpoint-2" / "controlnet"
    assert ControlNetModel.from_pretrained(resumable).state_dict().keys() == eager.keys()
