"""Checkpoint evaluation on the tiny model: speed options, metrics files, report.html, resume, errors."""

from __future__ import annotations

import csv
import functools
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import ControlNetModel, StableDiffusionXLControlNetPipeline
from PIL import Image

from data.records import DatasetError
from inference.__main__ import main
from inference.batch import image_path, run_batch_inference
from inference.evaluate import METRICS_CSV, METRICS_FILE, METRICS_IMAGES_CSV, MetricSettings
from inference.pipeline import GenerationSettings, generate, load_pipeline
from inference.settings import ComponentDtypes, SpeedSettings
from inference.sources import AUTO, BASE_CONTROLNET_NAME
from recognizer.ocr import OcrConfig, OcrModelNotFoundError
from recognizer.tesseract_reader import tesseract_problem
from train.tiny_sdxl import build_tiny_controlnet

SETTINGS = GenerationSettings(num_inference_steps=2, resolution=64, scheduler="unipc")
RECORDS = 3
NAMES = [BASE_CONTROLNET_NAME, "checkpoint-1", "checkpoint-2"]


def _checkpoint(run: Path, step: int, base: Path, start: Path) -> Path:
    """checkpoint-N of a run that fine-tuned ``start`` (its model.controlnet) on ``base``."""
    folder = run / f"checkpoint-{step}"
    build_tiny_controlnet(base, folder / "controlnet", seed=step)
    (folder / "skinforge.yaml").write_text(f"model:\n  base: {base}\n  controlnet: {start}\n")
    return folder


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, tiny_sdxl_dir: Path, tiny_controlnet_dir: Path) -> Path:
    run = tmp_path_factory.mktemp("eval") / "run"
    for step in (1, 2):
        _checkpoint(run, step, tiny_sdxl_dir, tiny_controlnet_dir)
    return run


@pytest.fixture(scope="module")
def eval_out(run_dir: Path, text_jsonl: Path) -> Path:
    """Both checkpoints and the base ControlNet over 3 labelled 128 px records, generated at 64 px."""
    out = run_dir.parent / "out"
    run_batch_inference(
        [run_dir / "checkpoint-1", run_dir / "checkpoint-2"],
        text_jsonl,
        out,
        SETTINGS,
        limit=RECORDS,
        batch_size=RECORDS,
        metrics=MetricSettings(),
        base_controlnet=AUTO,
    )
    return out


def test_split_pipeline_matches_stock_diffusers(tiny_sdxl_dir: Path, tiny_controlnet_dir: Path) -> None:
    """Our prompt cache, text-less denoiser and own VAE decode give diffusers' pictures, pixel for pixel."""
    edges = np.zeros((64, 64, 3), dtype=np.uint8)
    edges[16:48, 30:34] = 255
    conditions = [Image.fromarray(edges)] * 2
    settings = GenerationSettings(num_inference_steps=2, negative_prompt="blurry")
    pipe = load_pipeline(str(tiny_sdxl_dir), tiny_controlnet_dir)
    ours = generate(pipe, ["red circle", "red circle"], conditions, [0, 1], settings)
    assert pipe.encoder.encoded == 1, "a repeated prompt is encoded once"

    controlnet = ControlNetModel.from_pretrained(tiny_controlnet_dir)
    stock = StableDiffusionXLControlNetPipeline.from_pretrained(tiny_sdxl_dir, controlnet=controlnet)
    stock.set_progress_bar_config(disable=True)
    generators = [torch.Generator().manual_seed(seed) for seed in (0, 1)]
    theirs = stock(
        prompt=["red circle"] * 2, negative_prompt=["blurry"] * 2, image=conditions, height=64, width=64,
        num_inference_steps=2, guidance_scale=settings.guidance_scale, generator=generators,
    ).images  # fmt: skip
    for a, b in zip(ours, theirs, strict=True):
        assert np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max() <= 1


def test_per_component_dtypes_and_fallbacks(
    tiny_sdxl_dir: Path, tiny_controlnet_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """bf16 UNet with fp32 VAE and text encoders runs; xformers and offload fall back with a warning."""
    dtypes = ComponentDtypes(torch.bfloat16, torch.float32, torch.float32)
    speed = SpeedSettings(attention="xformers", cpu_offload=True, channels_last=True, vae_slicing=True)
    with caplog.at_level(logging.WARNING):
        pipe = load_pipeline(str(tiny_sdxl_dir), tiny_controlnet_dir, dtype=dtypes, speed=speed)
    assert "xformers attention unavailable" in caplog.text and "offload needs a GPU" in caplog.text
    assert pipe.attention == "sdpa" and not pipe.speed.cpu_offload
    assert (pipe.unet.dtype, pipe.controlnet.dtype, pipe.denoiser.vae.dtype) == (
        torch.bfloat16,
        torch.bfloat16,
        torch.float32,
    )
    assert pipe.encoder.pipe.text_encoder_2.dtype == torch.float32
    settings = GenerationSettings(num_inference_steps=2, scheduler="ddim", control_guidance_end=0.5)
    (image,) = generate(pipe, ["blue"], [Image.new("RGB", (64, 64))], [0], settings)
    assert image.size == (64, 64) and type(pipe.denoiser.scheduler).__name__ == "DDIMScheduler"


@pytest.mark.slow
def test_failed_compile_falls_back_to_eager(
    tiny_sdxl_dir: Path,
    tiny_controlnet_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken_backend(graph: torch.fx.GraphModule, inputs: list[torch.Tensor]) -> None:
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend=broken_backend))
    pipe = load_pipeline(str(tiny_sdxl_dir), tiny_controlnet_dir, speed=SpeedSettings(compile=True))
    assert pipe.eager, "compiled (lazily)"
    with caplog.at_level(logging.WARNING):
        (image,) = generate(
            pipe, ["x"], [Image.new("RGB", (64, 64))], [0], GenerationSettings(num_inference_steps=1)
        )
    assert image.size == (64, 64)
    assert "torch.compile failed" in caplog.text and "no C++ compiler" in caplog.text
    assert (
        not pipe.eager
        and isinstance(pipe.unet, torch.nn.Module)
        and type(pipe.unet).__name__ == "UNet2DConditionModel"
    )


def test_evaluation_writes_images_metrics_and_report(eval_out: Path) -> None:
    for name in NAMES:
        for record in range(RECORDS):
            with Image.open(image_path(eval_out, name, record, 0)) as image:
                assert image.size == (64, 64)

    metrics = json.loads((eval_out / METRICS_FILE).read_text())
    summary = {row["checkpoint"]: row for row in metrics["summary"]}
    assert list(summary) == ["target", *NAMES]
    target = summary["target"]
    assert target["reference"] and target["images"] == RECORDS and target["text_lines"] == 2 * RECORDS
    assert target["sentence_accuracy"] == 1.0, "OCR reads the rendered labels of the dataset's own images"
    for name in NAMES:
        row = summary[name]
        assert row["images"] == RECORDS and row["text_lines"] == 2 * RECORDS and 0 <= row["edge_f1"] <= 1
    assert (summary[BASE_CONTROLNET_NAME]["step"], summary["checkpoint-2"]["step"]) == (0, 2)

    with (eval_out / METRICS_CSV).open() as handle:
        assert [row["checkpoint"] for row in csv.DictReader(handle)] == ["target", *NAMES]
    with (eval_out / METRICS_IMAGES_CSV).open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == RECORDS * (1 + len(NAMES)) and json.loads(rows[0]["gt_text"]) == ["Shift", "上档"]

    report = json.loads((eval_out / "report.json").read_text())
    assert report["metrics"] == metrics["summary"]
    assert report["speed"]["prompts_encoded"] == RECORDS, "each prompt encoded once for all three ControlNets"
    html = (eval_out / "report.html").read_text()
    assert html.count("<svg") >= 4 and "checkpoint-2" in html and "上档" in html


def test_resume_keeps_images_and_their_scores(
    eval_out: Path, run_dir: Path, text_jsonl: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    shutil.copytree(eval_out, out)
    missing = image_path(out, "checkpoint-2", 1, 0)
    missing.unlink()
    kept = {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.png")}
    old_rows = {
        (r["checkpoint"], r["path"]): r for r in json.loads((out / METRICS_FILE).read_text())["images"]
    }

    run_batch_inference(
        [run_dir / "checkpoint-2"], text_jsonl, out, SETTINGS, limit=RECORDS, metrics=MetricSettings()
    )

    assert missing.is_file() and {p: p.stat().st_mtime_ns for p in kept} == kept
    rows = json.loads((out / METRICS_FILE).read_text())["images"]
    by_key = {(r["checkpoint"], r["path"]): r for r in rows}
    assert (
        by_key[("checkpoint-2", "images/checkpoint-2/00000_s0.png")]
        == old_rows[("checkpoint-2", "images/checkpoint-2/00000_s0.png")]
    )
    assert (
        by_key[("checkpoint-2", "images/checkpoint-2/00001_s0.png")]["mtime_ns"] == missing.stat().st_mtime_ns
    )


def test_bad_inputs_fail_before_anything_is_written(
    run_dir: Path, text_jsonl: Path, tiny_sdxl_dir: Path, tiny_controlnet_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    no_conditions = tmp_path / "plain.jsonl"
    no_conditions.write_text('{"text": "a skin", "image": "a.png"}\n{"text": "b skin", "image": "b.png"}\n')
    with pytest.raises(DatasetError, match=r"plain\.jsonl:1: conditioning_image: missing required field"):
        run_batch_inference([run_dir / "checkpoint-1"], no_conditions, out, SETTINGS)

    with pytest.raises(ValueError, match=r"is not a ControlNet checkpoint.*expected"):
        run_batch_inference([tiny_sdxl_dir / "text_encoder"], text_jsonl, out, SETTINGS)

    bare = tmp_path / "bare"
    shutil.copytree(tiny_controlnet_dir, bare)
    with pytest.raises(ValueError, match=r"names no model\.controlnet.*--base-controlnet PATH"):
        run_batch_inference([bare], text_jsonl, out, SETTINGS, base=str(tiny_sdxl_dir), base_controlnet=AUTO)

    bad_ocr = MetricSettings(ocr=OcrConfig(rec_model=tmp_path / "rec.onnx", use_angle_cls=False))
    with pytest.raises(OcrModelNotFoundError, match=r"OCR rec model file not found"):
        run_batch_inference([run_dir / "checkpoint-1"], text_jsonl, out, SETTINGS, metrics=bad_ocr)
    assert not out.exists()


def test_cli_reports_a_missing_ocr_model_in_one_line(
    run_dir: Path, text_jsonl: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint, out = run_dir / "checkpoint-1", tmp_path / "out"
    missing = tmp_path / "missing.onnx"
    code = main(
        [
            "--checkpoint",
            str(checkpoint),
            "--data",
            str(text_jsonl),
            "--out",
            str(out),
            "--ocr-rec-model",
            str(missing),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m inference: error: --ocr-rec-model ") and "file not found" in err
    assert "Traceback" not in err


@pytest.mark.skipif(tesseract_problem() is not None, reason=f"Tesseract is not usable: {tesseract_problem()}")
def test_cli_scores_each_reader_under_its_name(run_dir: Path, text_jsonl: Path, tmp_path: Path) -> None:
    """--reader tesseract --reader rapidocr: both read every label, the first one fills the plain columns."""
    out = tmp_path / "out"
    args = ["--checkpoint", str(run_dir / "checkpoint-1"), "--data", str(text_jsonl), "--out", str(out)]
    args += [
        "--limit",
        "2",
        "--steps",
        "1",
        "--resolution",
        "64",
        "--reader",
        "tesseract",
        "--reader",
        "rapidocr",
    ]
    assert main(args) == 0

    metrics = json.loads((out / METRICS_FILE).read_text())
    assert metrics["metric_settings"]["readers"] == ["tesseract", "rapidocr"]
    target = next(row for row in metrics["summary"] if row["reference"])
    assert target["tesseract/lines"] == target["rapidocr/lines"] == target["text_lines"] == 4
    assert target["rapidocr/sentence_accuracy"] == 1.0, "PP-OCR reads the rendered labels"
    assert target["tesseract/sentence_accuracy"] >= 0.5, "and so, mostly, does Tesseract"
    assert target["sentence_accuracy"] == target["tesseract/sentence_accuracy"], "the first reader's"
    image = next(row for row in metrics["images"] if row["checkpoint"] == "target")
    assert image["ocr_read"] == image["tesseract/read"] and len(image["rapidocr/read"]) == 2

    with (out / METRICS_CSV).open() as handle:
        header = next(csv.reader(handle))
    assert {"tesseract/sentence_accuracy", "rapidocr/normalized_edit_distance"} <= set(header)
    with (out / METRICS_IMAGES_CSV).open() as handle:
        assert "tesseract/read" in next(csv.reader(handle))
    html = (out / "report.html").read_text()
    assert "tesseract sentence acc." in html and "rapidocr 1−NED" in html and "native, by reader" in html
