"""`python -m inference export`: the single file other tools load, the diffusers folder and the model card,
from a real two-step training run on the tiny SDXL."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from diffusers import ControlNetModel
from huggingface_hub import ModelCard
from safetensors import safe_open

from inference.export import DETECTED_KEY, EXPORT_DTYPES, export_controlnet
from tests.training_helpers import run_training
from train.config import load_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(tiny_sdxl_dir: Path, fill_jsonl: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished training run: checkpoint-1, checkpoint-2, the final controlnet/ and skinforge.yaml."""
    folder = tmp_path_factory.mktemp("export") / "fill_run"
    run_training(
        [
            f"model.base={tiny_sdxl_dir}",
            f"data.train_jsonl={fill_jsonl.parent}",  # a dataset folder, as the builders take it
            "data.resolution=64",
            f"train.output_dir={folder}",
            "train.max_steps=2",
            "train.batch_size=2",
            "train.lr_warmup_steps=0",
            "train.num_threads=2",
            "checkpoint.every_n_steps=1",
            "log.progress_bar=false",
            "log.tensorboard=false",
        ]
    )
    return folder


@pytest.fixture(scope="module")
def laid_out_run(
    tiny_sdxl_dir: Path, tiny_controlnet_dir: Path, fill_jsonl: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The layout training writes (the recipe as the trainer records it), around the session's tiny
    ControlNet: fast enough for every `make test`; `run` is the real thing, for the slow tests."""
    folder = tmp_path_factory.mktemp("export") / "fill_run"
    overrides = [
        f"model.base={tiny_sdxl_dir}",
        f"data.train_jsonl={fill_jsonl}",
        "train.max_steps=2",
        "train.lr_warmup_steps=0",
    ]
    recipe = load_config("configs/fill_tiny.yaml", overrides).to_yaml()
    for controlnet in (folder / "controlnet", folder / "checkpoint-2" / "controlnet"):
        shutil.copytree(tiny_controlnet_dir, controlnet)
        (controlnet / "skinforge.yaml").write_text(recipe, encoding="utf-8")
    (folder / "skinforge.yaml").write_text(recipe, encoding="utf-8")
    (folder / "checkpoint-2" / "skinforge.yaml").write_text(recipe, encoding="utf-8")
    return folder


def _tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), "pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}, handle.metadata()  # noqa: SIM118


@pytest.mark.parametrize("dtype", list(EXPORT_DTYPES))
def test_single_file_round_trips_into_controlnet_bit_exactly(
    laid_out_run: Path, tmp_path: Path, dtype: str
) -> None:
    run = laid_out_run
    done = export_controlnet(run, tmp_path / "out", dtype=dtype)
    assert done.single_file == tmp_path / "out" / "fill_run.safetensors" and done.step == 2
    torch_dtype = EXPORT_DTYPES[dtype]
    trained = ControlNetModel.from_pretrained(run / "controlnet").to(torch_dtype).state_dict()

    tensors, metadata = _tensors(done.single_file)
    assert DETECTED_KEY in tensors, "the key ComfyUI / A1111 / Forge detect a diffusers ControlNet by"
    assert set(tensors) == set(trained), "the diffusers layout, key for key"
    assert metadata["skinforge.step"] == "2" and metadata["skinforge.dtype"] == dtype
    assert yaml.safe_load(metadata["skinforge.config"])["train"]["max_steps"] == 2

    # diffusers' own single-file loader, offline, with the exported folder as the config
    single = ControlNetModel.from_single_file(
        str(done.single_file), config=str(done.folder), local_files_only=True, torch_dtype=torch_dtype
    ).state_dict()
    folder = ControlNetModel.from_pretrained(done.folder, torch_dtype=torch_dtype).state_dict()
    for key, expected in trained.items():
        assert tensors[key].dtype == torch_dtype, key
        assert torch.equal(tensors[key], expected), key
        assert torch.equal(single[key], expected) and single[key].dtype == torch_dtype, key
        assert torch.equal(folder[key], expected), key


def test_model_card_parses_with_the_hub_library(laid_out_run: Path, tmp_path: Path) -> None:
    run = laid_out_run
    report = tmp_path / "report"
    report.mkdir()
    metrics = {
        "protocols": {"native": {"follows": "skinforge's own", "comparable_with": "skinforge reports"}},
        "summary": [
            {"checkpoint": "checkpoint-1", "step": 1, "images": 4, "edge_f1": 0.25, "fid": None},
            {"checkpoint": "checkpoint-2", "step": 2, "images": 4, "edge_f1": 0.5, "fid": None},
        ],
    }
    (report / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    (report / "report.json").write_text(json.dumps({"data": "/x/fill/train.jsonl"}), encoding="utf-8")
    shutil.copyfile(REPO / "assets" / "tiny-sdxl-trained" / "samples.png", report / "grid.png")

    done = export_controlnet(run / "checkpoint-2", tmp_path / "out", report=report, base_model="org/sdxl")
    card = ModelCard.load(done.card)
    assert card.data.base_model == "org/sdxl" and card.data.license == "openrail++"
    assert {"controlnet", "diffusers", "sdxl"} <= set(card.data.tags)
    assert card.data.pipeline_tag == "text-to-image" and card.data.library_name == "diffusers"
    assert done.single_file.name == "fill_run-checkpoint-2.safetensors"
    text = card.text
    assert "Weights: **checkpoint-2**, step 2" in text and "| train.max_steps | `2` |" in text
    assert "records: 16" in text, "the training set's statistics"
    assert "| **checkpoint-2** (these weights) | 2 | 4 | 0.5 |" in text, text
    assert "On `fill/train.jsonl`" in text and "- **native**: follows skinforge's own" in text
    assert "![samples](samples.png)" in text and (done.folder / "samples.png").is_file()


@pytest.mark.slow
def test_best_exports_the_runs_best_folder_or_says_what_makes_it(run: Path, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "inference", "export", "--checkpoint", str(run), "--best"]
    done = subprocess.run(
        [*command, "--out", str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"python -m inference export: error: {run} has no best/ folder: training writes it with "
        "validation.select_best=<metric> (the checkpoint with the best validation score); export the run's "
        "final weights or a checkpoint-N without --best"
    ]

    best_run = tmp_path / "run"
    shutil.copytree(run, best_run)
    shutil.copytree(run / "checkpoint-1" / "controlnet", best_run / "best")
    (best_run / "best" / "skinforge.yaml").unlink()  # the base comes from the run's own record
    selection = {"metric": "edge_f1_tolerant", "step": 1, "score": 0.75}  # as validation.select_best writes
    (best_run / "best" / "selection.json").write_text(json.dumps(selection), encoding="utf-8")
    done = subprocess.run(
        [*command[:-2], str(best_run), "--best", "--out", str(tmp_path / "best"), "--dtype", "fp32"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    tensors, metadata = _tensors(tmp_path / "best" / "run-best.safetensors")
    assert (metadata["skinforge.checkpoint"], metadata["skinforge.step"]) == ("best", "1")
    expected = ControlNetModel.from_pretrained(run / "checkpoint-1" / "controlnet").state_dict()
    assert all(torch.equal(tensors[key], value) for key, value in expected.items())
    text = (tmp_path / "best" / "README.md").read_text(encoding="utf-8")
    assert "best checkpoint of the run: metric `edge_f1_tolerant`, score `0.75`." in text
