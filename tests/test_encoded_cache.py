"""The latent/prompt disk cache: reused across runs without loading the encoders, rebuilt on request,
continued after a killed encoding; and bucketed training on top of it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from training_helpers import reset_accelerator, run_training, set_up_trainer

import train.encoded_cache as encoded_cache
import train.trainer as trainer_module


def _shards(cache: Path) -> list[Path]:
    return sorted(cache.glob("*/shard-*.safetensors"))


def _refuse(name: str):
    def load(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"{name} was loaded although the cache is complete")

    return load


def test_a_later_run_reuses_the_cache_without_loading_the_encoders(
    tiny_overrides: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    run_training([*tiny_overrides, f"cache.dir={cache}", "train.max_steps=1"])
    shards = _shards(cache)
    assert len(shards) == 1
    stamp = shards[0].stat().st_mtime_ns

    monkeypatch.setattr(trainer_module, "load_vae", _refuse("the VAE"))
    monkeypatch.setattr(trainer_module, "load_prompt_encoders", _refuse("the text encoders"))
    other_run = [o for o in tiny_overrides if not o.startswith("train.output_dir=")]
    run_training(
        [*other_run, f"train.output_dir={tmp_path / 'run2'}", f"cache.dir={cache}", "train.max_steps=1"]
    )
    assert _shards(cache) == shards and shards[0].stat().st_mtime_ns == stamp
    assert (tmp_path / "run2" / "controlnet").is_dir()


def test_rebuild_encodes_again_and_a_new_resolution_gets_its_own_cache(
    tiny_overrides: list[str], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    run_training([*tiny_overrides, f"cache.dir={cache}", "train.max_steps=1"])
    (shard,) = _shards(cache)
    stamp = shard.stat().st_mtime_ns
    run_training([*tiny_overrides, f"cache.dir={cache}", "train.max_steps=1", "cache.rebuild=true"])
    assert shard.stat().st_mtime_ns != stamp
    new_run = [f"train.output_dir={tmp_path / 'run32'}", "data.resolution=32"]  # a new recipe, a new run
    run_training([*tiny_overrides, f"cache.dir={cache}", "train.max_steps=1", *new_run])
    assert len(_shards(cache)) == 2


def test_a_killed_encoding_continues_with_the_missing_shards(
    tiny_overrides: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(encoded_cache, "SHARD_RECORDS", 4)
    cache = tmp_path / "cache"
    trainer = set_up_trainer([*tiny_overrides, f"cache.dir={cache}"])
    reset_accelerator()
    reference = [trainer.loader.dataset.cache[i]["latents"].clone() for i in range(16)]
    shards = _shards(cache)
    assert len(shards) == 4
    folder = shards[0].parent
    (folder / encoded_cache.COMPLETE_MARKER).unlink()  # as if killed before the end
    shards[2].unlink()
    stamps = {p: p.stat().st_mtime_ns for p in shards if p != shards[2]}

    trainer = set_up_trainer([*tiny_overrides, f"cache.dir={cache}"])
    reset_accelerator()
    assert _shards(cache) == shards
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items()), "a finished shard was redone"
    for i in range(16):
        assert torch.equal(trainer.loader.dataset.cache[i]["latents"], reference[i])


def test_bucketed_training_keeps_each_batch_in_one_bucket_with_its_time_ids(
    tiny_overrides: list[str], bucket_jsonl: Path
) -> None:
    overrides = [
        *[o for o in tiny_overrides if not o.startswith("data.train_jsonl=")],
        f"data.train_jsonl={bucket_jsonl}",
        "data.buckets=true",
        "data.bucket_step=16",
        "train.max_steps=2",
        "validation.every_n_steps=2",
        f"validation.jsonl={bucket_jsonl}",
        "validation.max_records=2",
        "validation.scheduler=euler",
        "validation.num_inference_steps=2",
    ]
    trainer = set_up_trainer(overrides)
    conditions = [s.condition.size for s in trainer.validator.samples]
    assert conditions == [(80, 48), (48, 80)], "validation conditions are fitted to their buckets"
    shapes = set()
    for batch in trainer.loader:
        latents, condition, time_ids = batch["latents"], batch["conditioning_pixel_values"], batch["time_ids"]
        height, width = condition.shape[-2:]
        assert latents.shape[-2:] == (height // 8, width // 8)
        for ids in time_ids.tolist():
            original = (72, 120) if width > height else (120, 72) if height > width else (64, 64)
            assert tuple(ids[:2]) == original and tuple(ids[4:]) == (height, width)
        shapes.add((height, width))
    assert shapes == {(48, 80), (80, 48), (64, 64)}
    trainer.train()
    trainer.cleanup()
    reset_accelerator()
    run = Path(trainer.config.train.output_dir)
    assert (run / "controlnet").is_dir()
    assert (run / "validation" / "step-000002.png").is_file()


def test_an_image_replaced_in_place_is_encoded_again(
    tiny_overrides: list[str], fill_jsonl: Path, tmp_path: Path
) -> None:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(fill_jsonl.parent, data)
    base = [o for o in tiny_overrides if not o.startswith("data.train_jsonl=")]
    overrides = [*base, f"data.train_jsonl={data / 'train.jsonl'}", f"cache.dir={tmp_path / 'cache'}"]
    first = set_up_trainer(overrides)
    reset_accelerator()
    image = data / first.loader.dataset.records[0].image
    other = data / first.loader.dataset.records[1].image
    shutil.copyfile(other, image)  # same file name, new content; train.jsonl untouched
    second = set_up_trainer(overrides)
    reset_accelerator()
    assert second.loader.dataset.cache.folder != first.loader.dataset.cache.folder
    assert torch.equal(second.loader.dataset.cache[0]["latents"], second.loader.dataset.cache[1]["latents"])


def test_worker_processes_read_the_same_batches_as_the_main_process(
    tiny_overrides: list[str], bucket_jsonl: Path
) -> None:
    """The cache and the bucket sampler cross into DataLoader workers (file handles reopen there)."""
    base = [o for o in tiny_overrides if not o.startswith("data.train_jsonl=")]
    overrides = [*base, f"data.train_jsonl={bucket_jsonl}", "data.buckets=true", "data.bucket_step=16"]
    batches = {}
    for workers in (0, 2):
        trainer = set_up_trainer([*overrides, f"data.num_workers={workers}"])
        reset_accelerator()
        trainer.batch_sampler.set_epoch(3)
        batches[workers] = [(b["index"].tolist(), b["latents"]) for b in trainer.loader]
    assert [i for i, _ in batches[0]] == [i for i, _ in batches[2]]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(batches[0], batches[2], strict=True))
