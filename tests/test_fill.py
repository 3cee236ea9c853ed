"""Procedural fill builder, deep validation and the ``python -m data`` CLI (real files, no mocks)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from data.__main__ import main
from data.fill import COLOURS, PARAMS_FILE, build_fill, fill_record, outline_width
from data.records import Record, read_records, write_records
from data.validate import check_dataset, validate_dataset

REPO = Path(__file__).resolve().parents[1]
N = 6
RES = 64


@pytest.fixture(scope="module")
def fill_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One shared small build; tests that modify a dataset build their own."""
    out = tmp_path_factory.mktemp("fill")
    build_fill(out, n=N, resolution=RES, seed=0)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "RGB"
        return np.asarray(image)


# --------------------------------------------------------------------------------------------------
# builder output


def test_build_writes_valid_records(fill_dir: Path) -> None:
    records = read_records(fill_dir / "train.jsonl")
    assert len(records) == N
    colour_words = set(COLOURS.values())
    for i, record in enumerate(records):
        assert record.image == f"images/{i:05d}.png"
        assert record.conditioning_image == f"conditioning_images/{i:05d}.png"
        foreground, background = record.text.removesuffix(" background").split(" circle with ")
        assert foreground in colour_words and background in colour_words and foreground != background
        for rel in (record.image, record.conditioning_image):
            with Image.open(fill_dir / rel) as image:
                assert image.size == (RES, RES) and image.mode == "RGB" and image.format == "PNG"
    assert json.loads((fill_dir / PARAMS_FILE).read_text())["seed"] == 0
    assert validate_dataset(fill_dir / "train.jsonl", open_images=True) == []


def test_condition_is_the_circle_outline(fill_dir: Path) -> None:
    width = outline_width(RES)
    for i in range(N):
        target = _rgb(fill_dir / "images" / f"{i:05d}.png").astype(np.int16)
        condition = _rgb(fill_dir / "conditioning_images" / f"{i:05d}.png")
        white = condition.min(axis=2) > 127
        black = condition.max(axis=2) < 128
        assert (white | black).all(), "condition is pure white-on-black"
        assert 0 < white.mean() < 0.2, "an outline: some white, mostly black"

        background = (target == target[0, 0]).all(axis=2)  # corners are outside the circle
        border = np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]])
        assert border.all(), "the whole circle is inside the image, background all around"
        disc = ~background
        assert len(np.unique(target[disc], axis=0)) == 1, "one flat foreground colour"
        near_background = cv2.dilate(background.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=width)
        assert (white <= (disc & near_background.astype(bool))).all(), "white only on the circle's edge"

        cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
        edge = disc & cv2.dilate(background.astype(np.uint8), cross).astype(bool)
        assert white[edge].all(), "every disc pixel touching the background is on the outline"


def test_fill_record_is_deterministic_and_seed_dependent() -> None:
    image_a, condition_a, text_a = fill_record(3, 32, seed=7)
    image_b, condition_b, text_b = fill_record(3, 32, seed=7)
    assert text_a == text_b and image_a.tobytes() == image_b.tobytes()
    assert condition_a.tobytes() == condition_b.tobytes()
    others = [fill_record(3, 32, seed=s) for s in range(8, 12)]
    assert any(o[0].tobytes() != image_a.tobytes() for o in others)
    with pytest.raises(ValueError, match="resolution"):
        fill_record(0, 8, seed=0)


def test_same_seed_identical_bytes_different_seed_differs(tmp_path: Path, fill_dir: Path) -> None:
    again = build_fill(tmp_path / "again", n=N, resolution=RES, seed=0, workers=3).parent
    assert _files(again) == _files(fill_dir), "byte-identical, also with threads"

    other = build_fill(tmp_path / "other", n=N, resolution=RES, seed=1).parent
    other_files, base_files = _files(other), _files(fill_dir)
    assert other_files.keys() == base_files.keys()
    changed = [k for k in base_files if k.startswith("images/") and other_files[k] != base_files[k]]
    assert len(changed) == N
    assert other_files["train.jsonl"] != base_files["train.jsonl"]


def test_resume_keeps_existing_files_and_rewrites_jsonl(tmp_path: Path) -> None:
    out = tmp_path / "fill"
    jsonl = build_fill(out, n=4, resolution=32, seed=5)
    expected = _files(out)
    old_ns = 1_000_000_000_000_000_000  # a recognisable past mtime (2001)
    for path in out.glob("*images/*.png"):
        os.utime(path, ns=(old_ns, old_ns))
    (out / "images" / "00002.png").unlink()  # as if interrupted
    jsonl.write_text("stale\n", encoding="utf-8")

    assert build_fill(out, n=4, resolution=32, seed=5) == jsonl
    assert _files(out) == expected, "missing file rebuilt identically, jsonl rewritten"
    kept = [p for p in out.glob("*images/*.png") if p.stat().st_mtime_ns == old_ns]
    assert len(kept) == 7, "every other image file was kept untouched"

    build_fill(out, n=6, resolution=32, seed=5)  # extending a build reuses its first samples
    assert len(read_records(jsonl)) == 6
    assert (out / "images" / "00000.png").stat().st_mtime_ns == old_ns


def test_refuses_to_mix_builds_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "fill"
    build_fill(out, n=3, resolution=32, seed=0)
    with pytest.raises(FileExistsError, match="overwrite"):
        build_fill(out, n=3, resolution=32, seed=1)
    build_fill(out, n=2, resolution=32, seed=1, overwrite=True)
    assert sorted(p.name for p in (out / "images").iterdir()) == ["00000.png", "00001.png"]
    assert (
        _files(out)["images/00000.png"]
        == _files(build_fill(tmp_path / "b", 2, 32, seed=1).parent)["images/00000.png"]
    )

    foreign = tmp_path / "foreign"
    (foreign / "images").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="not made by the fill builder"):
        build_fill(foreign, n=1, resolution=32)


def test_loads_with_hf_datasets(fill_dir: Path, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    dataset = datasets.load_dataset(
        "json", data_files=str(fill_dir / "train.jsonl"), split="train", cache_dir=str(tmp_path / "hf")
    )
    assert dataset.num_rows == N
    assert set(dataset.column_names) == {"text", "image", "conditioning_image"}
    assert dataset[0] == read_records(fill_dir / "train.jsonl")[0].to_json()


# --------------------------------------------------------------------------------------------------
# deep validation


def test_validate_open_images_finds_size_box_and_decode_problems(tmp_path: Path) -> None:
    out = tmp_path / "fill"
    jsonl = build_fill(out, n=4, resolution=32, seed=0)
    records = read_records(jsonl)
    box = [[[0, 0], [10, 0], [10, 8], [0, 8]]]
    records[0] = Record(records[0].text, records[0].image, records[0].conditioning_image, box=box)
    outside = [[[0, 0], [40, 0], [40, 8], [0, 8]]]
    records[1] = Record(records[1].text, records[1].image, records[1].conditioning_image, box=outside)
    write_records(jsonl, records)
    Image.new("RGB", (16, 16)).save(out / "conditioning_images" / "00002.png")  # wrong size
    data = (out / "images" / "00003.png").read_bytes()
    (out / "images" / "00003.png").write_bytes(data[: len(data) // 2])  # truncated

    assert validate_dataset(jsonl, open_images=False) == [], "header-free checks pass"
    report = check_dataset(jsonl, open_images=True, workers=2)
    assert {(p.line, p.field) for p in report.problems} == {
        (2, "box"),
        (3, "conditioning_image"),
        (4, "image"),
    }
    assert report.records == 1
    messages = {p.line: p.message for p in report.problems}
    assert "outside the 32x32 image" in messages[2]
    assert "16x16 differs" in messages[3]
    assert "cannot open" in messages[4]


# --------------------------------------------------------------------------------------------------
# CLI


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """main() configures root logging (force=True); put pytest's handlers back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
def test_cli_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert main(["fill", "--out", str(out), "--n", "3", "--resolution", "32", "--seed", "2"]) == 0
    assert main(["validate", str(out / "train.jsonl"), "--open-images"]) == 0
    assert "3 valid records, 0 problems" in capsys.readouterr().err
    assert main(["fill", "--out", str(out), "--n", "3", "--resolution", "32", "--seed", "3"]) == 1
    assert "--overwrite" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["fill", "--out", str(out), "--n", "0"])
    assert exited.value.code == 2


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "data", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
def test_cli_subprocess_fill_validate_and_broken(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    fill = _run_cli("fill", "--out", str(out), "--n", "3", "--resolution", "32")
    assert fill.returncode == 0, fill.stderr
    jsonl = out / "train.jsonl"
    ok = _run_cli("validate", str(jsonl), "--open-images")
    assert ok.returncode == 0, ok.stderr
    assert "3 valid records, 0 problems" in ok.stderr

    lines = jsonl.read_text(encoding="utf-8").splitlines()
    lines[1] = lines[1].replace('"text"', '"txt"')
    jsonl.write_text("\n".join(lines) + "\n", encoding="utf-8")
    broken = _run_cli("validate", str(jsonl))
    assert broken.returncode == 1
    assert f"{jsonl}:2: txt: unknown key 'txt' (did you mean 'text'?)" in broken.stderr
    assert f"{jsonl}:2: text: missing required field" in broken.stderr

    assert _run_cli("--help").returncode == 0
    for command in ("fill", "validate"):
        helped = _run_cli(command, "--help")
        assert helped.returncode == 0 and "usage: python -m data" in helped.stdout
