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
                f"model.base={tmp_path}",
            ],
        )
    problems = info.value.problems
    text = str(info.value)
    assert "unknown key 'trian' (did you mean 'train'?) (from the command line: trian.max_steps=3)" in text
    assert "unknown key 'data.resolutoin' (did you mean 'data.resolution'?)" in text
    assert "train.mixed_precision: 'fp8' is not one of 'no', 'fp16', 'bf16'" in text
    assert "train.batch_size: expected int, got str 'two'" in text
    assert "train.lr must be > 0, got -1.0" in text
    assert f"data.train_jsonl: {tmp_path}/missing.jsonl does not exist" in text
    assert any("garbage" in p and "section.key=value" in p for p in problems)
    assert f"model.base: {tmp_path} is not a diffusers folder (no model_index.json)" in text
    assert len(problems) == 8 and "8 problem(s)" in text


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
    text = str(info.value)
    assert "train.lr_warmup_steps (50) exceeds train.max_steps (10): lower it to at most 10" in text
    assert "data.resolution must be a multiple of 8 (the VAE factor), got 100" in text
    assert "validation.every_n_steps is set but neither validation.prompts nor validation.jsonl is" in text


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


# --------------------------------------------------------------------------------------------------
# errors that name the fix


def _problems(overrides: list[str], path: str = "configs/fill_tiny.yaml") -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides, check_paths=False)
    return str(info.value)


def test_unknown_keys_are_suggested_by_meaning_or_listed() -> None:
    text = _problems(["train.learnig_rate=1e-4", "train.max_train_steps=5", "train.resolution=512"])
    assert "unknown key 'train.learnig_rate' (did you mean 'train.lr'?)" in text, "a misspelt alias"
    assert "unknown key 'train.max_train_steps' (did you mean 'train.max_steps'?)" in text, "diffusers' name"
    assert "unknown key 'train.resolution' (did you mean 'data.resolution'?)" in text, "another section"
    assert "did you mean 'train.optimizer=adamw_8bit'" in _problems(["train.use_8bit_adam=true"])
    listed = _problems(["train.zzz=1"])
    assert "unknown key 'train.zzz' (keys of 'train': output_dir, seed, max_steps, batch_size" in listed
    assert "unknown key 'max_steps' (did you mean 'train.max_steps'?)" in _problems(["max_steps=10"])


def test_problems_from_overrides_blame_the_command_line(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("train:\n  lr_warmup_steps: 500\n", encoding="utf-8")
    text = _problems(["train.max_steps=6"], str(recipe))
    assert (
        "train.lr_warmup_steps (500) exceeds train.max_steps (6): lower it to at most 6 "
        "(e.g. train.lr_warmup_steps=0) (from the command line: train.max_steps=6)" in text
    )
    assert f"in {recipe} with the command-line overrides (1 from the overrides)" in text
    recipe.write_text("train:\n  lr_warmup_steps: 500\n  max_steps: 6\n", encoding="utf-8")
    from_yaml = _problems(["train.lr=1e-4"], str(recipe))
    assert "exceeds train.max_steps (6)" in from_yaml and "command line" not in from_yaml, "the YAML's own"


def test_validation_jsonl_missing_says_how_to_fix(tmp_path: Path) -> None:
    missing = [f"validation.jsonl={tmp_path}/val.jsonl"]
    with pytest.raises(ConfigError) as info:
        load_config("configs/fill_tiny.yaml", [*missing, "validation.every_n_steps=10"])
    assert (
        f"validation.jsonl: {tmp_path}/val.jsonl does not exist: set it to a held-out train.jsonl, or turn "
        "validation off with validation.every_n_steps=0" in str(info.value)
    )
    (tmp_path / "train.jsonl").touch()
    present = [f"data.train_jsonl={tmp_path}/train.jsonl", "model.base=assets/tiny-sdxl-trained"]
    config = load_config("configs/fill_tiny.yaml", [*missing, *present, "validation.every_n_steps=0"])
    assert config.validation.every_n_steps == 0, "validation off: its missing records are not a problem"


def test_model_base_checked_before_anything_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=rf"model.base: folder {tmp_path}/nope does not exist"):
        load_config("configs/fill_tiny.yaml", [f"model.base={tmp_path}/nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        ConfigError, match=r"is not a diffusers folder \(no model_index.json\): set model.base"
    ):
        load_config("configs/fill_tiny.yaml", [f"model.base={tmp_path}/empty"])
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(
        ConfigError, match=r"HF_HUB_OFFLINE is set: set model\.base to a local diffusers folder"
    ):
        load_config("configs/fill_tiny.yaml", ["model.base=someorg/some-sdxl"])
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", "http://127.0.0.1:9")  # nothing listens
    with pytest.raises(ConfigError, match=r"cannot be reached to download it .*: set model\.base to a local"):
        load_config("configs/fill_tiny.yaml", ["model.base=someorg/some-sdxl"])


def test_a_dataset_folder_is_read_as_its_train_jsonl(fill_jsonl: Path, tmp_path: Path) -> None:
    """The builders take a dataset folder; so do data.train_jsonl and validation.jsonl."""
    folder = str(fill_jsonl.parent)
    overrides = ["model.base=assets/tiny-sdxl-trained", "validation.every_n_steps=10"]
    config = load_config(
        "configs/fill_tiny.yaml", [*overrides, f"data.train_jsonl={folder}", f"validation.jsonl={folder}"]
    )
    assert config.data.train_jsonl == str(fill_jsonl) and config.validation.jsonl == str(fill_jsonl)

    (tmp_path / "records.jsonl").touch()
    with pytest.raises(ConfigError) as info:
        load_config("configs/fill_tiny.yaml", [*overrides, f"data.train_jsonl={tmp_path}"])
    assert (
        f"data.train_jsonl: {tmp_path} is a folder without train.jsonl (not a dataset a builder wrote); "
        "it holds records.jsonl: pass one of those" in str(info.value)
    )


def test_local_model_folders_are_recorded_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run's skinforge.yaml is read from other folders (inference, serving): a relative base there
    would name nothing, or a hub repo. Problems still quote the path as the user wrote it."""
    repo = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(repo)
    (tmp_path / "train.jsonl").touch()
    data = f"data.train_jsonl={tmp_path}"
    config = load_config("configs/fill_tiny.yaml", ["model.base=./assets/../assets/tiny-sdxl-trained", data])
    assert config.model.base == str(repo / "assets" / "tiny-sdxl-trained")
    assert f"base: {repo / 'assets' / 'tiny-sdxl-trained'}\n" in config.to_yaml()
    with pytest.raises(ConfigError, match=r"model\.base: folder assets/nope does not exist"):
        load_config("configs/fill_tiny.yaml", ["model.base=assets/nope", data])
