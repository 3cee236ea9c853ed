"""Batch inference on real tiny models and real files: checkpoints, generation, grid, report, resume, CLI."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import test_serve
from diffusers import ControlNetModel, UNet2DConditionModel
from PIL import Image

from data.fill import build_fill
from data.records import DatasetError
from inference.__main__ import main
from inference.batch import GRID_CELL, PARAMS_FILE, image_path, run_batch_inference
from inference.checkpoints import resolve_checkpoint
from inference.grid import MISSING_CELL, SEPARATOR, TITLE_HEIGHT, grid_size, make_grid
from inference.pipeline import GenerationSettings, generate, load_pipeline, output_size
from train.tiny_sdxl import build_tiny_controlnet

best_run = test_serve.best_run

REPO = Path(__file__).resolve().parents[1]
SIZE = 64
N_RECORDS = 3
SEEDS = [0, 1]
SETTINGS = GenerationSettings(num_inference_steps=2)


def _fake_checkpoint(run: Path, step: int, controlnet_dir: Path, base: Path) -> Path:
    """The layout training writes: checkpoint-N/{controlnet/, skinforge.yaml}, the yaml also inside."""
    folder = run / f"checkpoint-{step}"
    shutil.copytree(controlnet_dir, folder / "controlnet")
    config = f"model:\n  base: {base}\ntrain:\n  max_steps: {step}\n"
    (folder / "skinforge.yaml").write_text(config)
    (folder / "controlnet" / "skinforge.yaml").write_text(config)
    return folder


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("inference")


@pytest.fixture(scope="module")
def data_jsonl(workdir: Path) -> Path:
    return build_fill(workdir / "fill", n=N_RECORDS, resolution=SIZE, seed=0)


@pytest.fixture(scope="module")
def checkpoint_dir(workdir: Path, tiny_sdxl_dir: Path, tiny_controlnet_dir: Path) -> Path:
    return _fake_checkpoint(workdir / "run", 3, tiny_controlnet_dir, tiny_sdxl_dir)


@pytest.fixture(scope="module")
def other_controlnet_dir(workdir: Path, tiny_sdxl_dir: Path) -> Path:
    """A bare ControlNet folder with other weights (no skinforge.yaml: its base must come from --base)."""
    return build_tiny_controlnet(tiny_sdxl_dir, workdir / "other_cn", seed=1)


@pytest.fixture(scope="module")
def batch_out(
    workdir: Path, data_jsonl: Path, checkpoint_dir: Path, other_controlnet_dir: Path, tiny_sdxl_dir: Path
) -> Path:
    """One full run, two checkpoints x 3 records x 2 seeds, shared by the read-only assertions."""
    out = workdir / "out"
    run_batch_inference(
        [checkpoint_dir, other_controlnet_dir],
        data_jsonl,
        out,
        SETTINGS,
        seeds=SEEDS,
        base=str(tiny_sdxl_dir),
        batch_size=3,
    )
    return out


# --------------------------------------------------------------------------- checkpoints


def test_resolve_checkpoint_layouts(checkpoint_dir: Path, tiny_sdxl_dir: Path, tmp_path: Path) -> None:
    source = resolve_checkpoint(checkpoint_dir)
    assert (source.name, source.step, source.base) == ("checkpoint-3", 3, str(tiny_sdxl_dir))
    assert source.controlnet_dir == checkpoint_dir / "controlnet"

    inner = resolve_checkpoint(checkpoint_dir / "controlnet")
    assert (inner.name, inner.step, inner.base) == ("checkpoint-3", 3, str(tiny_sdxl_dir))

    run = tmp_path / "myrun"
    shutil.copytree(checkpoint_dir / "controlnet", run / "controlnet")  # final weights, yaml inside
    final = resolve_checkpoint(run)
    assert (final.name, final.step, final.base) == ("final", 3, str(tiny_sdxl_dir)), "train.max_steps"
    assert final.final and resolve_checkpoint(run / "controlnet").name == "final"


def test_bare_controlnet_has_no_base(other_controlnet_dir: Path) -> None:
    source = resolve_checkpoint(other_controlnet_dir)
    assert (source.name, source.step, source.base) == ("other_cn", None, None)


def test_not_a_controlnet_is_a_clear_error(tmp_path: Path, checkpoint_dir: Path, tiny_sdxl_dir: Path) -> None:
    with pytest.raises(
        ValueError, match=r"is not a ControlNet checkpoint: .*expected .*controlnet/config\.json"
    ) as exc:
        resolve_checkpoint(tiny_sdxl_dir / "unet")  # a config.json, but of a UNet
    assert str(tiny_sdxl_dir / "unet") in str(exc.value)

    logs = tmp_path / "logs"
    logs.mkdir()
    with pytest.raises(ValueError, match="is not a ControlNet checkpoint") as exc:
        resolve_checkpoint(logs)
    assert str(logs) in str(exc.value)
    with pytest.raises(ValueError, match="does not exist"):
        resolve_checkpoint(tmp_path / "missing")
    with pytest.raises(ValueError, match=r"holds checkpoint-3 \(pass one of those\)"):
        resolve_checkpoint(checkpoint_dir.parent)  # a run folder without final weights yet


# --------------------------------------------------------------------------- pipeline and grid


def test_output_size_rounds_to_multiple_of_8() -> None:
    condition = Image.new("RGB", (70, 45))
    assert output_size(condition, GenerationSettings()) == (64, 40)
    assert output_size(condition, GenerationSettings(resolution=100)) == (96, 96)
    with pytest.raises(ValueError, match="num_inference_steps"):
        GenerationSettings(num_inference_steps=0)


def test_trainer_style_pipeline_and_batch_independence(
    tiny_sdxl_dir: Path, tiny_controlnet_dir: Path
) -> None:
    """In-memory UNet/ControlNet are used as given; an image does not depend on its batch."""
    unet = UNet2DConditionModel.from_pretrained(tiny_sdxl_dir, subfolder="unet")
    controlnet = ControlNetModel.from_pretrained(tiny_controlnet_dir)
    pipe = load_pipeline(str(tiny_sdxl_dir), controlnet, unet=unet)
    assert pipe.unet is unet and pipe.controlnet is controlnet

    edges = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    edges[16:48, 30:34] = 255
    conditions = [Image.fromarray(edges), Image.fromarray(255 - edges), Image.new("RGB", (48, 32))]
    prompts = ["red circle", "blue square", "green"]
    batched = generate(pipe, prompts, conditions, [0, 1, 2], SETTINGS, batch_size=3)
    alone = generate(pipe, prompts[1:2], conditions[1:2], [1], SETTINGS, batch_size=1)

    assert [im.size for im in batched] == [(SIZE, SIZE), (SIZE, SIZE), (48, 32)]  # mixed sizes split batches
    diff = np.abs(np.asarray(batched[1], dtype=int) - np.asarray(alone[0], dtype=int))
    assert diff.max() <= 2, "per-image generators must make an image independent of its batch"
    assert not np.array_equal(np.asarray(batched[0]), np.asarray(batched[1]))


def test_make_grid_layout() -> None:
    red, blue = Image.new("RGB", (40, 20), "red"), Image.new("RGB", (8, 8), "blue")
    grid = make_grid(
        [[red, None], [blue, red]], ["a", "a very long checkpoint name that cannot fit"], cell=32
    )
    assert grid.size == grid_size(2, 2, 32) == (2 * 32 + SEPARATOR, TITLE_HEIGHT + 2 * (32 + SEPARATOR))
    first_row = TITLE_HEIGHT + SEPARATOR
    assert grid.getpixel((16, first_row + 16)) == (255, 0, 0)  # wide image centred, aspect kept
    assert grid.getpixel((16, first_row + 1)) == (255, 255, 255)  # letterbox above it
    assert grid.getpixel((32 + SEPARATOR + 16, first_row + 16)) == MISSING_CELL
    assert grid.getpixel((32, first_row + 16)) == (255, 255, 255)  # separator column
    with pytest.raises(ValueError, match="row 0 has 1 cells"):
        make_grid([[red]], ["a", "b"])


# --------------------------------------------------------------------------- batch inference


def test_batch_writes_images_grid_and_report(
    batch_out: Path, data_jsonl: Path, checkpoint_dir: Path, other_controlnet_dir: Path, tiny_sdxl_dir: Path
) -> None:
    names = ["checkpoint-3", "other_cn"]
    for name in names:
        for index in range(N_RECORDS):
            for seed in SEEDS:
                with Image.open(image_path(batch_out, name, index, seed)) as image:
                    assert image.size == (SIZE, SIZE) and image.mode == "RGB"
    assert len(list((batch_out / "images").rglob("*.png"))) == len(names) * N_RECORDS * len(SEEDS)
    first = np.asarray(Image.open(image_path(batch_out, names[0], 0, 0)))
    other = np.asarray(Image.open(image_path(batch_out, names[1], 0, 0)))
    assert not np.array_equal(first, other), "the second checkpoint's ControlNet must really be swapped in"

    with Image.open(batch_out / "grid.png") as grid:
        assert grid.size == grid_size(N_RECORDS, 2 + len(names), GRID_CELL)

    report = json.loads((batch_out / "report.json").read_text())
    assert report["data"] == str(data_jsonl)
    assert report["seeds"] == SEEDS and report["records"] == N_RECORDS
    assert report["settings"]["num_inference_steps"] == 2 and report["dtype"] == "float32"
    assert report["grid"] == "grid.png"
    ckpt, bare = report["checkpoints"]
    assert (ckpt["name"], ckpt["step"], ckpt["base"]) == ("checkpoint-3", 3, str(tiny_sdxl_dir))
    assert ckpt["path"] == str(checkpoint_dir) and ckpt["controlnet_dir"] == str(
        checkpoint_dir / "controlnet"
    )
    assert (bare["name"], bare["step"], bare["base"]) == ("other_cn", None, str(tiny_sdxl_dir))
    for entry in report["checkpoints"]:
        assert entry["generated"] == N_RECORDS * len(SEEDS) and entry["kept"] == 0
        assert entry["seconds_per_image"] > 0
        assert [(i["record"], i["seed"]) for i in entry["images"]] == [
            (r, s) for r in range(N_RECORDS) for s in SEEDS
        ]
        for item in entry["images"]:
            assert (batch_out / item["path"]).is_file() and item["seconds"] > 0 and item["generated"]
    assert report["checkpoints"][0]["images"][1]["path"] == "images/checkpoint-3/00000_s1.png"


def test_resume_keeps_existing_images_and_fills_missing(
    batch_out: Path,
    data_jsonl: Path,
    checkpoint_dir: Path,
    other_controlnet_dir: Path,
    tiny_sdxl_dir: Path,
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    shutil.copytree(batch_out, out)  # copy2 keeps mtimes; the shared run stays untouched
    images = sorted((out / "images").rglob("*.png"))
    missing = image_path(out, "other_cn", 1, 0)
    missing.unlink()
    before = {p: p.stat().st_mtime_ns for p in images if p != missing}

    report_path = run_batch_inference(
        [checkpoint_dir, other_controlnet_dir],
        data_jsonl,
        out,
        SETTINGS,
        seeds=SEEDS,
        base=str(tiny_sdxl_dir),
    )

    assert missing.is_file()
    assert {p: p.stat().st_mtime_ns for p in before} == before
    ckpt, bare = json.loads(report_path.read_text())["checkpoints"]
    assert (ckpt["generated"], ckpt["kept"], ckpt["seconds_per_image"]) == (0, N_RECORDS * len(SEEDS), None)
    assert (bare["generated"], bare["kept"]) == (1, N_RECORDS * len(SEEDS) - 1)
    assert [i["record"] for i in bare["images"] if i["generated"]] == [1]

    with pytest.raises(ValueError, match=r"settings\.num_inference_steps: 2 before, 3 now"):
        run_batch_inference(
            [checkpoint_dir],
            data_jsonl,
            out,
            GenerationSettings(num_inference_steps=3),
            base=str(tiny_sdxl_dir),
        )
    assert json.loads((out / PARAMS_FILE).read_text())["settings"]["num_inference_steps"] == 2


def test_images_of_weights_replaced_at_the_same_path_are_made_again(
    data_jsonl: Path,
    checkpoint_dir: Path,
    other_controlnet_dir: Path,
    tiny_sdxl_dir: Path,
    tmp_path: Path,
) -> None:
    """Keyed on the weights' content: a touched file keeps its images, replaced weights do not, and
    the temp file of a killed image write is removed."""
    checkpoint = _fake_checkpoint(tmp_path / "run", 3, checkpoint_dir / "controlnet", tiny_sdxl_dir)
    weights = checkpoint / "controlnet" / "diffusion_pytorch_model.safetensors"
    out = tmp_path / "out"

    def rerun() -> dict:
        report = run_batch_inference([checkpoint], data_jsonl, out, SETTINGS, limit=1)
        return json.loads(report.read_text())["checkpoints"][0]

    first = rerun()
    image = out / first["images"][0]["path"]
    with Image.open(image) as made:
        before = np.asarray(made)
    leftover = image.with_name(f".{image.name}.k1ll3d.tmp")
    leftover.write_bytes(b"")
    os.utime(weights)  # same content, newer mtime: hashed again, found equal
    assert (rerun()["generated"], leftover.exists()) == (0, False)

    shutil.copy(other_controlnet_dir / weights.name, weights)  # same size, other weights
    assert rerun()["generated"] == 1
    with Image.open(image) as remade:
        assert not np.array_equal(np.asarray(remade), before)


def test_bad_dataset_lines_raise_dataset_error(
    data_jsonl: Path, checkpoint_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(data_jsonl.parent, data)
    lines = (data / "train.jsonl").read_text().splitlines()
    lines[1] = '{"text": "no condition", "image": "images/00001.png"}'
    lines[2] = lines[2].replace("conditioning_images/00002.png", "conditioning_images/gone.png")
    (data / "train.jsonl").write_text("\n".join(lines) + "\n")

    with pytest.raises(DatasetError) as exc:
        run_batch_inference([checkpoint_dir], data / "train.jsonl", tmp_path / "out", SETTINGS)
    message = str(exc.value)
    assert "train.jsonl:2: conditioning_image: missing required field" in message
    assert "train.jsonl:3: conditioning_image: file does not exist" in message
    assert not (tmp_path / "out").exists(), "nothing is written for bad input"


def test_missing_target_and_base_errors(data_jsonl: Path, other_controlnet_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"has no skinforge\.yaml with model\.base; pass the base SDXL with --base"
    ):
        run_batch_inference([other_controlnet_dir], data_jsonl, tmp_path / "out", SETTINGS)
    with pytest.raises(FileNotFoundError, match=r"no model_index\.json"):
        run_batch_inference(
            [other_controlnet_dir], data_jsonl, tmp_path / "out", SETTINGS, base=str(tmp_path)
        )


def test_main_returns_2_with_one_message(
    data_jsonl: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--checkpoint", str(tmp_path), "--data", str(data_jsonl), "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m inference: error: ") and str(tmp_path) in err
    assert "Traceback" not in err


# --------------------------------------------------------------------------- CLI subprocess


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "inference", *map(str, args)]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.slow
def test_cli_end_to_end(data_jsonl: Path, checkpoint_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli_out"
    result = _cli(
        "--checkpoint", checkpoint_dir, "--data", data_jsonl, "--out", out,
        "--steps", "2", "--seeds", "5", "--limit", "2", "--resolution", "32", "--batch-size", "2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (out / "images" / "checkpoint-3").iterdir()) == [
        "00000_s5.png",
        "00001_s5.png",
    ]
    with Image.open(out / "images" / "checkpoint-3" / "00000_s5.png") as image:
        assert image.size == (32, 32)
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["resolution"] == 32 and report["records"] == 2
    with Image.open(out / "grid.png") as grid:
        assert grid.size == grid_size(2, 3, GRID_CELL)


@pytest.mark.slow
def test_cli_rejects_non_controlnet_folder(data_jsonl: Path, tmp_path: Path) -> None:
    not_a_model = tmp_path / "logs"
    not_a_model.mkdir()
    result = _cli("--checkpoint", not_a_model, "--data", data_jsonl, "--out", tmp_path / "out")
    assert result.returncode == 2
    assert f"{not_a_model} is not a ControlNet checkpoint" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_final_weights_chart_once_and_keep_runs_apart(
    checkpoint_dir: Path, tiny_controlnet_dir: Path, tiny_sdxl_dir: Path, tmp_path: Path
) -> None:
    from inference.outputs import plot_steps
    from inference.sources import _unique_names

    run = tmp_path / "runA"
    shutil.copytree(checkpoint_dir, run / checkpoint_dir.name)
    shutil.copytree(checkpoint_dir / "controlnet", run / "controlnet")  # the final, beside checkpoint-3
    shutil.copytree(checkpoint_dir / "controlnet", tmp_path / "runB" / "controlnet")
    final = resolve_checkpoint(run)
    assert final.step == 3 and final.final
    assert plot_steps([resolve_checkpoint(run / checkpoint_dir.name), final]) == {"checkpoint-3": 3}
    both = _unique_names([final, resolve_checkpoint(tmp_path / "runB")])
    assert [s.name for s in both] == ["runA-final", "runB-final"], "two runs' finals never share a folder"


# --------------------------------------------------------------------------- a run's best/


@pytest.mark.slow
def test_a_runs_best_resolves_comes_with_its_run_and_is_the_default(best_run: Path) -> None:
    from inference.checkpoints import default_source, with_run_best

    selection = json.loads((best_run / "best" / "selection.json").read_text())
    best = resolve_checkpoint(best_run / "best")
    assert (best.name, best.step, best.best, best.final) == ("best", selection["step"], True, False)
    assert best.base is not None and Path(best.base).is_dir(), "the base comes from best/skinforge.yaml"

    listed = [best_run / "checkpoint-0", best_run / "checkpoint-2", best_run]
    assert with_run_best(listed) == [*listed, best_run / "best"]
    assert with_run_best([*listed, best_run / "best"]) == [*listed, best_run / "best"], "not twice"
    assert with_run_best(listed[:2]) == listed[:2], "checkpoints alone bring nothing along"

    sources = [resolve_checkpoint(path) for path in with_run_best(listed)]
    assert default_source(sources).name == "best"
    assert default_source(sources[:3]).name == "final"
    assert default_source(sources[:2]).name == "checkpoint-2", "never the untrained checkpoint-0"
    assert default_source(sources[:1]).name == "checkpoint-0", "unless it is all there is"


@pytest.mark.slow
def test_cli_lists_a_runs_best_as_a_column_and_the_report_marks_it(best_run: Path, tmp_path: Path) -> None:
    """``python -m inference --checkpoint RUN/checkpoint-* RUN``: best/ is a column, named with its
    step and marked as the one training kept."""
    selection = json.loads((best_run / "best" / "selection.json").read_text())
    data = build_fill(tmp_path / "held_out", n=2, resolution=SIZE, seed=7)
    out = tmp_path / "out"
    checkpoints = sorted(str(path) for path in best_run.glob("checkpoint-*"))
    code = main(["--checkpoint", *checkpoints, str(best_run), "--data", str(data), "--out", str(out),
                 "--steps", "2", "--no-ocr", "--device", "cpu"])  # fmt: skip
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    names = [entry["name"] for entry in report["checkpoints"]]
    assert names == ["checkpoint-0", "checkpoint-2", "final", "best"]
    assert report["checkpoints"][-1]["step"] == selection["step"]
    assert len(list((out / "images" / "best").glob("*.png"))) == 2
    html = (out / "report.html").read_text(encoding="utf-8")
    assert f"best (step {selection['step']})" in html
    assert "kept by training: edge_f1_tolerant" in html
    assert "best by edge SSIM" not in html, "SSIM never names a best checkpoint"


def test_long_generation_says_where_it_stands_between_progress_updates(
    data_jsonl: Path,
    checkpoint_dir: Path,
    tiny_sdxl_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 1024² batch on a CPU takes minutes between progress-bar updates: every denoising step logs
    where it is once `HEARTBEAT_S` has passed (0 here, so every step)."""
    import inference.batch

    monkeypatch.setattr(inference.batch, "HEARTBEAT_S", 0.0)
    checkpoint = _fake_checkpoint(tmp_path / "run", 3, checkpoint_dir / "controlnet", tiny_sdxl_dir)
    with caplog.at_level(logging.INFO, logger="inference.batch"):
        run_batch_inference([checkpoint], data_jsonl, tmp_path / "out", SETTINGS, limit=1)
    beats = [r.getMessage() for r in caplog.records if "denoising step" in r.getMessage()]
    assert beats == [
        "generating 1 image(s): denoising step 1 of 2",
        "generating 1 image(s): denoising step 2 of 2",
    ]
