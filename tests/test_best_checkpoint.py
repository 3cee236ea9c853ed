"""`validation.select_best`: the best validated ControlNet kept in `RUN/best/`, across rotation and resume."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from diffusers import ControlNetModel, UNet2DConditionModel

from tests.training_helpers import read_metrics, run_training
from train.best_checkpoint import SELECTABLE, BestCheckpointKeeper, read_selection
from train.config import ValidationConfig, load_config

METRIC = "edge_ssim"


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return ControlNetModel.from_pretrained(folder).state_dict()


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_every_selectable_metric_is_a_config_choice() -> None:
    from typing import get_args, get_type_hints

    (choices, _none) = get_args(get_type_hints(ValidationConfig)["select_best"])
    assert set(get_args(choices)) == set(SELECTABLE)


def test_an_unknown_metric_is_refused_with_the_choices(tiny_overrides: list[str]) -> None:
    with pytest.raises(ValueError, match="select_best") as err:
        load_config("configs/fill_tiny.yaml", [*tiny_overrides, "validation.select_best=edge_fone"])
    assert "edge_f1" in str(err.value)
    with pytest.raises(ValueError, match="needs validation"):
        load_config("configs/fill_tiny.yaml", [*tiny_overrides, "validation.select_best=edge_f1"])


def test_only_a_strictly_better_score_replaces_best_and_a_killed_replace_is_undone(
    tiny_sdxl_dir: Path, tmp_path: Path
) -> None:
    unet = UNet2DConditionModel.from_pretrained(tiny_sdxl_dir, subfolder="unet")
    models = [ControlNetModel.from_unet(unet) for _ in range(3)]
    for i, model in enumerate(models):
        torch.nn.init.constant_(model.controlnet_mid_block.bias, float(i + 1))
    keeper = BestCheckpointKeeper("circle_iou", tmp_path)
    key = SELECTABLE["circle_iou"][0]
    written = [
        keeper.consider(step, {key: score}, model, "train: {}\n")
        for step, score, model in ((10, 0.5, models[0]), (20, 0.7, models[1]), (30, 0.7, models[2]))
    ]
    assert written == [True, True, False], "a tie keeps the earlier ControlNet"
    assert read_selection(tmp_path).step == 20 and read_selection(tmp_path).score == 0.7
    assert _same(_weights(tmp_path / "best"), models[1].state_dict())
    assert not keeper.consider(40, {"validation/edge_f1": 1.0}, models[2], ""), "metric not logged"

    # A kill between renaming the old best aside and putting the new one in place.
    os.replace(tmp_path / "best", tmp_path / ".best.old")
    resumed = BestCheckpointKeeper("circle_iou", tmp_path)
    assert resumed.record is not None and resumed.record.step == 20
    assert _same(_weights(tmp_path / "best"), models[1].state_dict())
    assert not resumed.consider(50, {key: 0.69}, models[2], "")


@pytest.mark.slow
def test_best_survives_rotation_and_resume(
    tiny_overrides: list[str], fill_jsonl: Path, tmp_path: Path
) -> None:
    common = [
        *tiny_overrides,
        "log.every_n_steps=1",
        "validation.every_n_steps=1",
        "validation.num_inference_steps=2",
        f"validation.jsonl={fill_jsonl}",
        "validation.max_records=2",
        "validation.denoising_advantage=false",
        "model.condition_embedding_init=matched",
        f"validation.select_best={METRIC}",
    ]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run_training([*common, f"train.output_dir={straight}", "train.max_steps=4", "checkpoint.every_n_steps=1"])
    rotated = [
        *common,
        f"train.output_dir={resumed}",
        "checkpoint.every_n_steps=2",
        "checkpoint.total_limit=1",
    ]
    run_training([*rotated, "train.max_steps=2"])
    run_training([*rotated, "train.max_steps=4", "checkpoint.resume=latest"])

    scores = [
        (m["step"], m[f"validation/{METRIC}"]) for m in read_metrics(straight) if f"validation/{METRIC}" in m
    ]
    best_step, best_score = max(scores, key=lambda s: (s[1], -s[0]))  # the first of equal scores
    selection = read_selection(straight)
    assert (selection.metric, selection.step) == (METRIC, best_step)
    assert selection.score == pytest.approx(best_score)
    assert _same(_weights(straight / "best"), _weights(straight / f"checkpoint-{best_step}" / "controlnet"))

    assert sorted(p.name for p in resumed.glob("checkpoint-*")) == ["checkpoint-4"], "rotation as configured"
    assert read_selection(resumed) == selection, "the resumed run selected the same step"
    assert _same(_weights(resumed / "best"), _weights(straight / "best"))
    state = json.loads((resumed / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["best"] == {"metric": METRIC, "step": best_step, "score": selection.score}
    assert load_config(str(resumed / "best" / "skinforge.yaml")).validation.select_best == METRIC
