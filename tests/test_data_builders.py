"""Builder runner, resize, canny, validate --fix and stats, end to end on real files (no mocks)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from data.__main__ import main
from data.build_types import BuildFailed
from data.canny import SHARED_CONDITION, CannySettings, canny_builder
from data.image_io import read_image
from data.inputs import items_from_folder, load_items
from data.records import Record, read_records, write_records
from data.resize import ResizeSettings, resize_builder
from data.runner import run_builder
from data.validate import check_dataset

# --------------------------------------------------------------------------------------------------
# material


def _picture(width: int, height: int, seed: int) -> np.ndarray:
    """An RGB picture with a few flat rectangles: clear edges for Canny."""
    rng = np.random.default_rng(seed)
    pixels = np.full((height, width, 3), rng.integers(0, 256, 3), np.uint8)
    for _ in range(3):
        x0, y0 = rng.integers(0, width // 2), rng.integers(0, height // 2)
        pixels[y0 : y0 + height // 3, x0 : x0 + width // 3] = rng.integers(0, 256, 3)
    return pixels


def _save(path: Path, pixels: np.ndarray, mode: str | None = None) -> Path:
    image = Image.fromarray(pixels)
    (image.convert(mode) if mode else image).save(path)
    return path


GOOD = {"a": (40, 30), "b": (30, 40), "c": (32, 32)}


@pytest.fixture(scope="module")
def clean_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three good RGB PNGs of different sizes, two with UTF-8 sidecar captions."""
    folder = tmp_path_factory.mktemp("clean")
    for seed, (name, (w, h)) in enumerate(GOOD.items()):
        _save(folder / f"{name}.png", _picture(w, h, seed))
    (folder / "a.txt").write_text("a keyboard skin of 红色 keys\n", encoding="utf-8")
    (folder / "b.txt").write_bytes("\ufeffblue skin".encode())
    return folder


@pytest.fixture(scope="module")
def mixed_folder(clean_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The clean images plus one of every kind of bad or unusual input."""
    folder = tmp_path_factory.mktemp("mixed")
    for path in clean_folder.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    picture = _picture(32, 32, 9)
    (folder / "zero.png").write_bytes(b"")
    data = (folder / "a.png").read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    (folder / "notes.png").write_bytes(b"this is not a picture")
    _save(folder / "cmyk.jpg", picture, "CMYK")
    cv2.imwrite(str(folder / "deep.png"), (picture.astype(np.uint16) * 257)[:, :, ::-1])
    _save(folder / "palette.png", picture, "P")
    _save(folder / "gray.png", picture, "L")
    rgba = np.dstack([picture, np.full((32, 32), 255, np.uint8)])
    _save(folder / "opaque.png", rgba)
    rgba[0, 0, 3] = 0
    _save(folder / "transparent.png", rgba)
    _save(folder / "latin1.png", picture)
    (folder / "latin1.txt").write_bytes("clavier rouge été".encode("latin-1"))
    return folder


EXPECTED_FAILURES = {
    "zero.png": "zero-byte file",
    "truncated.png": "truncated or corrupt",
    "notes.png": "not a readable image",
    "cmyk.jpg": "CMYK image",
    "deep.png": "16-bit image",
    "transparent.png": "transparent pixels",
    "latin1.txt": "caption file is not UTF-8",
}
LOSSY = {"cmyk.jpg", "deep.png", "transparent.png"}


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """main() configures root logging (force=True); put pytest's handlers back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _failures(out: Path) -> dict[str, str]:
    lines = (out / "failed.jsonl").read_text(encoding="utf-8").splitlines()
    return {Path(entry["path"]).name: entry["reason"] for entry in map(json.loads, lines)}


def _gray(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("L"))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------------------------------
# canny through the CLI, with bad inputs


@pytest.mark.usefixtures("restore_logging")
def test_canny_cli_reports_every_bad_input(mixed_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "canny"
    args = ["canny", "--in", str(mixed_folder), "--out", str(out), "--workers", "2"]
    assert main(args) == 1, "records failed: a script must notice"
    assert main([*args, "--allow-failures"]) == 0, "a partial dataset accepted on request (resumed)"

    failures = _failures(out)
    assert failures.keys() == EXPECTED_FAILURES.keys()
    for name, reason in EXPECTED_FAILURES.items():
        assert reason in failures[name], (name, failures[name])
    for name in LOSSY:
        assert "--convert" in failures[name]

    records = read_records(out / "train.jsonl")
    keys = [Path(r.conditioning_image).stem for r in records]
    assert keys == ["a", "b", "c", "gray", "opaque", "palette"], "sorted input order, bad ones left out"
    assert records[0].text == "a keyboard skin of 红色 keys" and records[1].text == "blue skin"
    assert records[2].text == ""
    for record in records:
        image, condition = out / record.image, out / record.conditioning_image
        with Image.open(image) as picture:
            assert picture.mode == "RGB"
            expected = cv2.Canny(np.asarray(picture), 50, 80)
        assert (_gray(condition) == expected).all(), "condition is Canny of the image, 0/255"
    assert (out / "images" / "a.png").stat().st_ino == (mixed_folder / "a.png").stat().st_ino, "hard link"
    notes = {json.loads(line)["key"]: json.loads(line)["notes"] for line in _journal(out, "canny")}
    assert notes["palette"] == ["palette image converted to RGB (lossless)"]
    assert notes["gray"] == ["grayscale image converted to RGB (lossless)"]
    assert notes["opaque"] == ["opaque alpha channel dropped (lossless)"]
    assert notes["a"] == []


def _journal(out: Path, name: str) -> list[str]:
    return (out / f".{name}_journal.jsonl").read_text(encoding="utf-8").splitlines()


def test_convert_accepts_lossy_inputs(mixed_folder: Path, tmp_path: Path) -> None:
    items = load_items(mixed_folder)
    settings = CannySettings(convert=True)
    summary = run_builder("canny", canny_builder, items, tmp_path / "c", settings, workers=1)
    assert {Path(f.path).name for f in summary.failed} == EXPECTED_FAILURES.keys() - LOSSY
    assert summary.notes["CMYK image converted (to RGB without colour management shifts colours, --convert)"]
    deep = read_image(mixed_folder / "deep.png", convert=True).pixels
    assert deep.dtype == np.uint8
    assert (deep == read_image(mixed_folder / "latin1.png").pixels).all(), "16-bit rounds back exactly"
    white = read_image(mixed_folder / "transparent.png", convert=True).pixels
    assert (white[0, 0] == 255).all(), "transparent pixel composited onto white"


@pytest.mark.usefixtures("restore_logging")
def test_strict_stops_at_first_failure(mixed_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "strict"
    items = load_items(mixed_folder)
    with pytest.raises(BuildFailed, match="CMYK image"):
        run_builder("canny", canny_builder, items, out, CannySettings(), workers=1, strict=True)
    assert not (out / "train.jsonl").exists(), "no dataset from a strict run that failed"
    assert list(_failures(out)) == ["cmyk.jpg"]
    assert [json.loads(line)["key"] for line in _journal(out, "canny")] == ["a", "b", "c"]
    assert main(["canny", "--in", str(mixed_folder), "--out", str(out), "--strict", "--workers", "2"]) == 1


def test_resume_keeps_finished_records(clean_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "resume"
    items = load_items(clean_folder)
    first = run_builder("canny", canny_builder, items, out, CannySettings(), workers=1)
    assert (first.built, first.kept) == (3, 0)
    expected = _files(out)
    old_ns = 1_000_000_000_000_000_000
    for path in out.glob("conditioning_images/*.png"):
        os.utime(path, ns=(old_ns, old_ns))
    (out / "conditioning_images" / "b.png").unlink()  # as if interrupted
    journal = out / ".canny_journal.jsonl"
    journal.write_text(journal.read_text() + '{"key": "torn', encoding="utf-8")  # crash mid-line
    (out / "train.jsonl").unlink()

    again = run_builder("canny", canny_builder, items, out, CannySettings(), workers=2)
    assert (again.built, again.kept) == (1, 2)
    assert _files(out) == expected, "finished build is byte-identical to an uninterrupted one"
    kept = sorted(p.name for p in out.glob("conditioning_images/*") if p.stat().st_mtime_ns == old_ns)
    assert kept == ["a.png", "c.png"]

    with pytest.raises(FileExistsError, match="overwrite"):
        run_builder("canny", canny_builder, items, out, CannySettings(low=10), workers=1)
    with pytest.raises(FileExistsError, match="not made by the resize builder"):
        run_builder("resize", resize_builder, items, out, ResizeSettings(8, 8), workers=1)
    replaced = run_builder("canny", canny_builder, items, out, CannySettings(low=10), overwrite=True)
    assert (replaced.built, replaced.kept) == (3, 0)


def test_order_and_bytes_do_not_depend_on_workers(fill_jsonl: Path, tmp_path: Path) -> None:
    items = load_items(fill_jsonl)
    settings = CannySettings(blur=3, gray=True)
    run_builder("canny", canny_builder, items, tmp_path / "one", settings, workers=1)
    run_builder("canny", canny_builder, items, tmp_path / "two", settings, workers=2, chunksize=1)
    assert _files(tmp_path / "one") == _files(tmp_path / "two")
    records = read_records(tmp_path / "two" / "train.jsonl")
    assert [r.text for r in records] == [r.text for r in read_records(fill_jsonl)]


def test_outputs_load_with_hf_datasets(fill_jsonl: Path, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "canny"
    run_builder("canny", canny_builder, load_items(fill_jsonl), out, CannySettings(), workers=1)
    dataset = datasets.load_dataset(
        "json", data_files=str(out / "train.jsonl"), split="train", cache_dir=str(tmp_path / "hf")
    )
    assert dataset.num_rows == 16
    assert dataset[3] == read_records(out / "train.jsonl")[3].to_json()
    assert check_dataset(out / "train.jsonl", open_images=True).ok


def test_shared_condition(clean_folder: Path, tmp_path: Path) -> None:
    shared = _save(tmp_path / "edge.png", _picture(32, 32, 5))
    out = tmp_path / "shared"
    settings = CannySettings(shared_condition=str(shared))
    summary = run_builder("canny", canny_builder, load_items(clean_folder), out, settings, workers=2)
    assert [Path(f.path).name for f in summary.failed] == ["a.png", "b.png"]
    assert "wrong size: image is 40x30, the shared condition 32x32" in summary.failed[0].reason
    (record,) = read_records(out / "train.jsonl")
    assert record.conditioning_image == SHARED_CONDITION and record.image == "images/c.png"
    assert _gray(out / SHARED_CONDITION).tolist() == _gray(shared).tolist()
    assert not (out / "conditioning_images").exists(), "no per-record conditions"


# --------------------------------------------------------------------------------------------------
# resize


def _boxed_dataset(root: Path) -> Path:
    """One 80x40 record with two text boxes: one across x=20, one on the far right."""
    root.mkdir()
    _save(root / "image.png", _picture(80, 40, 1))
    _save(root / "edges.png", np.full((40, 80, 3), 255, np.uint8))
    box = [[[4, 4], [30, 4], [30, 12], [4, 12]], [[70, 30], [78, 30], [78, 36], [70, 36]]]
    record = Record("skin", "image.png", "edges.png", box=box, gt_text=["Q", "返回"])
    write_records(root / "train.jsonl", [record])
    return root / "train.jsonl"


def test_resize_pad_and_crop_map_boxes(tmp_path: Path) -> None:
    items = load_items(_boxed_dataset(tmp_path / "in"))
    pad = run_builder("resize", resize_builder, items, tmp_path / "pad", ResizeSettings(40, 40), workers=1)
    (record,) = read_records(pad.jsonl)
    assert record.box[0] == ((2.0, 12.0), (15.0, 12.0), (15.0, 16.0), (2.0, 16.0)), "scale 1/2, 10 px down"
    assert record.gt_text == ("Q", "返回")
    image = np.asarray(Image.open(pad.jsonl.parent / record.image))
    condition = np.asarray(Image.open(pad.jsonl.parent / record.conditioning_image))
    assert image.shape == condition.shape == (40, 40, 3)
    assert (image[:10] == 255).all() and (condition[:10] == 0).all(), "white / black padding bands"
    assert (condition[10:30] == 255).all()

    crop_settings = ResizeSettings(40, 40, mode="crop")
    crop = run_builder("resize", resize_builder, items, tmp_path / "crop", crop_settings, workers=1)
    (record,) = read_records(crop.jsonl)
    # scale 1, 20 px cut on each side: the first box is clipped at x=0, the second is cut away
    assert record.box == (((0.0, 4.0), (10.0, 4.0), (10.0, 12.0), (0.0, 12.0)),)
    assert record.gt_text == ("Q",)


def test_resize_cli_folder_input_and_size_mismatch(clean_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "r"
    args = ["resize", "--in", str(clean_folder), "--out", str(out), "--size", "16x8", "--workers", "1"]
    assert main(args) == 0
    records = read_records(out / "train.jsonl")
    assert len(records) == 3 and all(r.image == r.conditioning_image for r in records)
    for record in records:
        with Image.open(out / record.image) as image:
            assert image.size == (16, 8)

    root = tmp_path / "mismatch"
    root.mkdir()
    _save(root / "i.png", _picture(20, 20, 0))
    _save(root / "c.png", _picture(10, 10, 0))
    write_records(root / "train.jsonl", [Record("t", "i.png", "c.png")])
    summary = run_builder("resize", resize_builder, load_items(root), tmp_path / "m", ResizeSettings(8, 8))
    assert summary.failed[0].reason == "wrong size: condition is 10x10, image 20x20"
    assert summary.failed[0].path == str(root / "c.png")


@pytest.mark.usefixtures("restore_logging")
def test_cli_refuses_output_inside_input(clean_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["resize", "--in", str(clean_folder), "--out", str(clean_folder / "x"), "--size", "8"]) == 1
    assert "write to a new folder" in capsys.readouterr().err


def test_every_subcommand_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("fill", "validate", "stats", "resize", "canny"):
        with pytest.raises(SystemExit) as exited:
            main([command, "--help"])
        assert exited.value.code == 0
        assert f"usage: python -m data {command}" in capsys.readouterr().out


def test_folder_keys_keep_names_and_never_collide(tmp_path: Path) -> None:
    for rel in ("a.png", "a.jpg", "sub/x.png", ".hidden/y.png", "notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    assert [item.key for item in items_from_folder(tmp_path)] == ["a_jpg", "a_png", "sub/x"]
    assert [item.key for item in load_items(tmp_path)] == ["a_jpg", "a_png", "sub/x"]


# --------------------------------------------------------------------------------------------------
# validate --fix and stats


def _messy_dataset(root: Path) -> Path:
    root.mkdir()
    for name in ("a", "b", "c"):
        _save(root / f"{name}.png", _picture(16, 16, 0))
    box = [[[1, 1], [5, 1], [5, 5], [1, 5]]]
    records = [
        Record(" red skin \n", "a.png", "a.png", box=box, gt_text=["Q"]),
        Record("red skin", "a.png", "a.png", box=box, gt_text=["Q"]),  # a copy once stripped
        Record("  ", "b.png", "b.png"),
        Record("green", "c.png", "c.png"),
        Record("other text", "c.png", "c.png"),  # same image, different text: not fixable
    ]
    write_records(root / "train.jsonl", records)
    return root / "train.jsonl"


@pytest.mark.usefixtures("restore_logging")
def test_validate_fix_only_lossless(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    jsonl = _messy_dataset(tmp_path / "messy")
    problems = {(p.line, p.field) for p in check_dataset(jsonl).problems}
    assert problems == {(2, "image"), (3, "text"), (5, "image")}

    assert main(["validate", str(jsonl), "--fix"]) == 1, "still blank text and a conflicting image"
    err = capsys.readouterr().err
    assert "dropped 1 exact duplicate records, stripped whitespace from 2 texts" in err
    records = read_records(jsonl)
    assert [r.text for r in records] == ["red skin", "", "green", "other text"]
    assert {(p.line, p.field) for p in check_dataset(jsonl).problems} == {(2, "text"), (4, "image")}

    jsonl.write_text(jsonl.read_text() + "not json\n", encoding="utf-8")
    assert main(["validate", str(jsonl), "--fix"]) == 1
    assert "--fix would drop them" in capsys.readouterr().err


def test_stats_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    jsonl = _messy_dataset(tmp_path / "messy")
    assert main(["stats", str(jsonl)]) == 0
    out = capsys.readouterr().out
    assert "records: 5 (0 lines with problems" in out and "distinct images: 3" in out
    assert "image sizes: 16x16 (3)" in out
    assert "caption length (characters): min 2, mean" in out
    assert "text boxes: 2 in 2 of 5 records, max 1 per record" in out
    assert "      1-9 chars:       3" in out and "    10-19 chars:       2" in out
