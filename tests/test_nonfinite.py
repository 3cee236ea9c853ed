"""Non-finite losses and weights are caught at their step; no checkpoint with NaN/Inf weights is written."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from diffusers import ControlNetModel
from safetensors.torch import load_file, save_file
from training_helpers import read_metrics, reset_accelerator, run_training, set_up_trainer

from train.checkpointing import list_checkpoints
from train.nonfinite import NonFiniteError


@pytest.fixture(autouse=True)
def fresh_accelerator_state() -> Iterator[None]:
    yield
    reset_accelerator()


def _finite_checkpoints(run: Path) -> list[str]:
    names = []
    for checkpoint in list_checkpoints(run):
        weights = ControlNetModel.from_pretrained(checkpoint / "controlnet").state_dict()
        assert all(torch.isfinite(w).all() for w in weights.values()), f"{checkpoint} holds NaN/Inf"
        names.append(checkpoint.name)
    return names


def test_an_overflowing_learning_rate_stops_before_any_bad_checkpoint(tiny_overrides: list[str]) -> None:
    """lr=1e30: the first update is finite but overflows the weights; the next loss is NaN."""
    run = Path(tiny_overrides[3].split("=", 1)[1])
    overrides = [*tiny_overrides, "train.lr=1e30", "train.max_steps=6", "checkpoint.every_n_steps=1"]
    with pytest.raises(NonFiniteError, match=r"lower train\.lr|learning rate") as caught:
        run_training(overrides)
    assert caught.value.step <= 3
    saved = _finite_checkpoints(run)  # asserts every one on disk is finite
    assert len(saved) < caught.value.step


def test_a_nan_loss_stops_at_its_step_naming_the_records_and_is_logged(
    tiny_overrides: list[str], tmp_path: Path
) -> None:
    run = Path(tiny_overrides[3].split("=", 1)[1])
    overrides = [
        *tiny_overrides,
        f"cache.dir={tmp_path / 'own_cache'}",  # poisoned below: not the session's shared cache
        "train.max_steps=4",
        "checkpoint.every_n_steps=1",
        "log.every_n_steps=100",
    ]
    trainer = set_up_trainer(overrides)
    _poison_cached_latents(trainer.loader.dataset.cache.folder)
    reset_accelerator()
    with pytest.raises(NonFiniteError, match=r"at step 1 .*images/000") as caught:
        run_training(overrides)
    assert caught.value.step == 1 and "nan" in str(caught.value.values).lower()
    (logged,) = [m for m in read_metrics(run) if "nonfinite" in m]
    assert logged["step"] == 1 and logged["nonfinite"]["total"] == "nan"
    assert _finite_checkpoints(run) == []


def test_skip_drops_only_the_poisoned_updates_and_counts_them(
    tiny_overrides: list[str], tmp_path: Path
) -> None:
    run = Path(tiny_overrides[3].split("=", 1)[1])
    overrides = [
        *tiny_overrides,
        f"cache.dir={tmp_path / 'own_cache'}",
        "train.max_steps=8",
        "train.on_nonfinite=skip",
        "train.max_skipped_steps=8",
        "log.every_n_steps=1",
    ]
    trainer = set_up_trainer(overrides)
    poisoned = _poison_cached_latents(trainer.loader.dataset.cache.folder, only_first=True)
    reset_accelerator()
    trainer = run_training(overrides)
    skipped = trainer.nonfinite.skipped_total
    metrics = read_metrics(run)
    assert metrics[-1]["train/skipped_steps"] == skipped
    assert 1 <= skipped < 8, f"record {poisoned} is in some batches, not all"
    assert _finite_checkpoints(run) == ["checkpoint-8"]


def _poison_cached_latents(folder: Path, only_first: bool = False) -> int:
    """Writes NaN into the cached latents of a shard's first bucket (all of them, or only its first
    record): a real bad sample, as a corrupt image or a broken encoder would leave. Returns a record index."""
    for shard in sorted(folder.glob("shard-*.safetensors")):
        tensors = load_file(shard)
        key = next(k for k in tensors if k.startswith("latents."))
        tensors[key][: 1 if only_first else None] = float("nan")
        save_file(tensors, shard)
        return int(tensors[key.replace("latents.", "rows.", 1)][0])
    raise AssertionError(f"no shards in {folder}")
