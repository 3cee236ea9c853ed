"""The typed config: every shipped recipe loads, overrides apply, and every problem is listed at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from train.config import SkinforgeConfig, load_config
from train.config_loader import ConfigError

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


def test_configs_folder_is_not_empty() -> None:
    assert {p.name for p in CONFIGS} >= {
        "fill_tiny.yaml",
        "keyboard_512.yaml",
        "keyboard_1024.yaml",
        "finetune_canny_1024.yaml",
        "keyboard_glyph_1024.yaml",
    }


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads_and_validates(path: Path) -> None:
    config = load_config(path, check_paths=False)
    assert isinstance(config, SkinforgeConfig)
    assert config.model.base and config.data.train_jsonl


def test_glyph_recipe_turns_the_text_loss_on() -> None:
    config = load_config(Path("configs/keyboard_glyph_1024.yaml"), check_paths=False)
    assert config.text_loss.enabled and config.validation.jsonl


def test_finetune_recipe_starts_from_a_controlnet() -> None:
    config = load_config(Path("configs/finetune_canny_1024.yaml"), check_paths=False)
    assert config.model.controlnet


def test_fill_tiny_validates_with_real_paths(tiny_overrides: list[str]) -> None:
    config = load_config("configs/fill_tiny.yaml", tiny_overrides)
    assert config.data.resolution == 64
    assert config.train.batch_size == 2


def test_overrides_are_typed_and_nested() -> None:
    config = load_config(
        "configs/keyboard_1024.yaml",
        [
            "train.lr=3e-5",
            "train.mixed_precision=fp16",
            "checkpoint.total_limit=null",
            "validation.prompts=[a]",
            "validation.conditioning_images=[x.png]",
        ],
        check_paths=False,
    )
    assert config.train.lr == pytest.approx(3e-5)
    assert config.train.mixed_precision == "fp16"
    assert config.checkpoint.total_limit is None
    assert config.validation.prompts == ["a"]


def test_every_problem_is_listed_with_suggestions(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(
            "configs/fill_tiny.yaml",
            [
                "trian.max_steps=3",
                "data.resolutoin=5",
                "train.mixed_precision=fp8",
                "train.batch_size=two",
                "train.lr=-1",
                f"data.train_jsonl={tmp_path}/missing.jsonl",
                "garbage",
            ],
        )
    problems = info.value.problems
    text = str(info.value)
    assert "unknown key 'trian' (did you mean 'train'?)" in problems
    assert "unknown key 'data.resolutoin' (did you mean 'data.resolution'?)" in problems
    assert "train.mixed_precision: 'fp8' is not one of 'no', 'fp16', 'bf16'" in problems
    assert "train.batch_size: expected int, got str 'two'" in problems
    assert "train.lr must be > 0, got -1.0" in problems
    assert f"data.train_jsonl: {tmp_path}/missing.jsonl does not exist" in problems
    assert any("garbage" in p and "section.key=value" in p for p in problems)
    assert len(problems) == 7 and "7 problem(s)" in text


def test_cross_field_checks() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(
            "configs/keyboard_512.yaml",
            [
                "train.lr_warmup_steps=50",
                "train.max_steps=10",
                "data.resolution=100",
                "validation.every_n_steps=5",
            ],
            check_paths=False,
        )
    problems = info.value.problems
    assert "train.lr_warmup_steps (50) exceeds train.max_steps (10)" in problems
    assert "data.resolution must be a multiple of 8 (the VAE factor), got 100" in problems
    assert (
        "validation.every_n_steps is set but neither validation.prompts nor validation.jsonl is" in problems
    )


def test_saved_yaml_round_trips(tmp_path: Path) -> None:
    config = load_config("configs/keyboard_1024.yaml", ["train.lr=2e-6"], check_paths=False)
    saved = tmp_path / "saved.yaml"
    saved.write_text(config.to_yaml(), encoding="utf-8")
    assert load_config(saved, check_paths=False) == config


def test_missing_config_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_entry_point_reports_config_problems_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    from train.train_controlnet_sdxl import main

    assert main(["--config", "configs/fill_tiny.yaml", "train.lr=0", "trian.x=1"]) == 2
    err = capsys.readouterr().err
    assert "train.lr must be > 0, got 0.0" in err and "did you mean 'train'" in err


def test_bare_no_is_the_string_no() -> None:
    config = load_config("configs/keyboard_1024.yaml", ["train.mixed_precision=no"], check_paths=False)
    assert config.train.mixed_precision == "no"
