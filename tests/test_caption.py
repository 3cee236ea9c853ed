"""BLIP caption builder on a tiny random BLIP saved and loaded like real weights (no mocks)."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from data.__main__ import main
from data.caption import CaptionSettings, build_captions
from data.captioner import load_captioner
from data.fill import build_fill
from data.records import read_records, write_records
from data.tiny_blip import build_tiny_blip, tiny_blip_vocab
from data.validate import validate_dataset

N = 5


@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_blip(tmp_path_factory.mktemp("models") / "tiny-blip", seed=0)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fill dataset with boxes on one record and a zero-byte image on another."""
    jsonl = build_fill(tmp_path_factory.mktemp("data") / "fill", n=N, resolution=64, seed=0)
    records = read_records(jsonl)
    records[1] = replace(records[1], box=[[[1, 1], [20, 1], [20, 9], [1, 9]]], gt_text=["AB"])
    write_records(jsonl, records)
    (jsonl.parent / records[3].image).write_bytes(b"")
    return jsonl


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_tiny_blip_loads_like_real_weights(tiny_blip: Path) -> None:
    captioner = load_captioner(str(tiny_blip), device="cpu", dtype="float32")
    tokenizer = captioner.processor.tokenizer
    assert len(tokenizer) == len(tiny_blip_vocab()) + 1, "the whole vocab plus [DEC], not a 6-token stub"
    ids = tokenizer("a keyboard skin of", add_special_tokens=False)["input_ids"]
    assert tokenizer.unk_token_id not in ids and len(ids) == 4
    assert (
        tokenizer.bos_token
        == "[DEC]"
        == tokenizer.convert_ids_to_tokens(captioner.model.config.text_config.bos_token_id)
    )
    assert type(captioner.processor.image_processor).__name__ == "BlipImageProcessorPil"
    assert importlib.util.find_spec("torchvision") is None, "the project must not need torchvision"


def test_bad_model_and_device_settings_are_clear_errors(tmp_path: Path, tiny_blip: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_captioner(str(tmp_path / "no" / "such" / "model"), device="cpu")
    with pytest.raises(ValueError, match="float16 on the CPU"):
        load_captioner(str(tiny_blip), device="cpu", dtype="float16")
    with pytest.raises(ValueError, match="dtype must be one of"):
        load_captioner(str(tiny_blip), device="cpu", dtype="fp8")


def test_captions_batched_with_prefix_suffix_failures_and_resume(
    tiny_blip: Path, source: Path, tmp_path: Path
) -> None:
    out = tmp_path / "captioned"
    settings = CaptionSettings(model=str(tiny_blip), max_new_tokens=12)
    summary = build_captions(source, out, settings, device="cpu", batch_size=2)
    assert summary.built == N - 1 and [f.key for f in summary.failed] == ["00003"]
    assert summary.failed[0].reason == "zero-byte file"
    records = read_records(out / "train.jsonl")
    assert len(records) == N - 1
    for record in records:
        assert record.text.startswith("a keyboard skin") and record.text.endswith(",iflyskin")
        assert len(record.text) > len("a keyboard skin of,iflyskin"), "the model added words"
    assert len({r.text for r in records}) > 1, "captions depend on the image"
    assert records[1].box is not None and records[1].gt_text == ("AB",), "boxes are carried over"
    assert validate_dataset(out / "train.jsonl", open_images=True) == []

    one_batch = build_captions(source, tmp_path / "one", settings, device="cpu", batch_size=8)
    assert one_batch.built == N - 1
    assert [r.text for r in read_records(tmp_path / "one" / "train.jsonl")] == [r.text for r in records]

    again = build_captions(source, out, settings, device="cpu", batch_size=3)
    assert again.kept == N - 1 and again.built == 0, "finished records kept; batch size is not a setting"
    with pytest.raises(FileExistsError, match="overwrite"):
        build_captions(source, out, replace(settings, suffix=",other"), device="cpu")


@pytest.mark.usefixtures("restore_logging")
def test_caption_cli_unconditional(tiny_blip: Path, source: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    args = ["caption", "--in", str(source), "--out", str(out), "--model", str(tiny_blip), "--device", "cpu"]
    options = ["--prefix", "", "--suffix", " trig", "--max-new-tokens", "5", "--workers", "1"]
    assert main([*args, *options, "--allow-failures"]) == 0, "the zero-byte image failed, on purpose"
    texts = [r.text for r in read_records(out / "train.jsonl")]
    assert len(texts) == N - 1 and all(t.endswith(" trig") for t in texts)
    assert main([*args[:-2], "--device", "cpu", "--dtype", "float16"]) == 1


@pytest.mark.gpu
def test_caption_on_gpu(tiny_blip: Path, source: Path, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    settings = CaptionSettings(model=str(tiny_blip), max_new_tokens=8)
    summary = build_captions(source, tmp_path / "gpu", settings, device="cuda", dtype="float16", batch_size=4)
    assert summary.built == N - 1
    assert load_captioner(str(tiny_blip), "cuda", "float16").model.dtype == torch.float16
