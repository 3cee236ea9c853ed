"""Glyph builder: generated skins → compose → real OCR (rapidocr) → rendered glyph conditions."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from common.fonts import load_font
from data.__main__ import main
from data.compose_builder import build_compose
from data.glyph import GlyphSettings, glyph_builder, keep_lines
from data.glyph_render import render_glyphs
from data.inputs import load_items
from data.records import read_records
from data.runner import run_builder
from data.skins_builder import build_skins
from data.validate import validate_dataset
from recognizer.ocr import OcrLine

SQUARE = ((10.0, 10.0), (90.0, 10.0), (90.0, 40.0), (10.0, 40.0))


@pytest.fixture(scope="module")
def composed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two generated skins composed with the packaged 1024² layout (OCR needs real-size labels)."""
    root = tmp_path_factory.mktemp("glyph")
    build_skins(root / "parts", n=2, seed=0)
    build_compose(root / "parts", root / "composed", workers=1)
    return root


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_render_draws_text_inside_its_polygon_only() -> None:
    background = Image.new("RGB", (120, 60), (0, 0, 0))
    drawn = np.asarray(render_glyphs(background, [(SQUARE, "确定 OK")]))[:, :, 0]
    inside = np.zeros_like(drawn, dtype=bool)
    inside[10:41, 10:91] = True
    assert (drawn[inside] > 128).mean() > 0.1, "glyph strokes fill a good part of the box"
    assert not drawn[~inside].any(), "nothing outside the box"

    slanted = ((20.0, 30.0), (100.0, 10.0), (108.0, 40.0), (28.0, 60.0))
    rotated = np.asarray(render_glyphs(Image.new("RGB", (120, 70)), [(slanted, "删除")]))[:, :, 0]
    ys, xs = np.nonzero(rotated > 128)
    assert len(xs) > 50 and np.polyfit(xs, ys, 1)[0] < -0.1, "text follows the rotated box"


def test_render_clears_boxes_unless_told_not_to() -> None:
    grey = Image.new("RGB", (120, 60), (100, 100, 100))
    cleared = np.asarray(render_glyphs(grey, [(SQUARE, "A")]))[:, :, 0]
    kept = np.asarray(render_glyphs(grey, [(SQUARE, "A")], clear_boxes=False))[:, :, 0]
    assert (cleared[12:38, 12:20] == 0).all() and (kept[12:38, 12:20] == 100).all()
    assert (cleared[50:, :] == 100).all(), "outside the boxes the background stays"


def test_keep_lines_threshold_and_clipping() -> None:
    lines = [
        OcrLine(((-5.0, 2.0), (50.0, 2.0), (50.0, 20.0), (-5.0, 20.0)), " 删除 ", 0.99),
        OcrLine(SQUARE, "A", 0.97),
        OcrLine(SQUARE, "  ", 1.0),
    ]
    kept = keep_lines(lines, 0.98, (40, 100))
    assert [line.text for line in kept] == ["删除"]
    assert kept[0].polygon == ((0.0, 2.0), (40.0, 2.0), (40.0, 20.0), (0.0, 20.0))


def test_glyph_reads_generated_labels_back(composed: Path) -> None:
    out = composed / "glyph"
    items = load_items(composed / "composed")
    summary = run_builder("glyph", glyph_builder, items, out, GlyphSettings(), workers=1)
    assert summary.built == 2 and not summary.failed
    records = read_records(out / "train.jsonl")
    for index, record in enumerate(records):
        meta = json.loads(
            (composed / "parts" / f"skin_{index:05d}" / "skin.json").read_text(encoding="utf-8")
        )
        words = {label for name in ("function", "keys9", "navbar") for label in meta["labels"][name]}
        found = set(record.gt_text or ())
        assert len(found & words) >= 12, f"OCR read the labels back: {sorted(found & words)}"
        assert {"ABC", "DEF", "重输", "分词"} <= found, "9-key labels, English and Chinese"
        assert len(record.box or ()) == len(record.gt_text or ())
        condition = np.asarray(Image.open(out / record.conditioning_image).convert("L"))
        for polygon in record.box or ():
            xs, ys = zip(*polygon, strict=True)
            box = condition[int(min(ys)) : int(max(ys)), int(min(xs)) : int(max(xs))]
            assert (box > 200).any(), "every kept line is drawn in its box"
    assert validate_dataset(out / "train.jsonl", open_images=True) == []


@pytest.mark.usefixtures("restore_logging")
def test_glyph_cli_bad_font_and_background(
    composed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["glyph", "--in", str(composed / "composed"), "--out", str(tmp_path / "g")]
    assert main([*base, "--font", str(tmp_path / "missing.ttf")]) == 1
    assert "missing.ttf does not exist" in capsys.readouterr().err
    assert main([*base, "--background", str(tmp_path / "missing.png")]) == 1
    assert "missing.png" in capsys.readouterr().err


def _label_picture(path: Path, text: str, size: tuple[int, int] = (320, 96)) -> Path:
    image = Image.new("RGB", size, (250, 250, 245))
    ImageDraw.Draw(image).text(
        (size[0] / 2, size[1] / 2), text, font=load_font(None, 40), fill=(10, 10, 10), anchor="mm"
    )
    image.save(path)
    return path


def test_glyph_backgrounds_on_a_folder_of_images(tmp_path: Path) -> None:
    folder = tmp_path / "raw"
    folder.mkdir()
    _label_picture(folder / "a.png", "删除 Delete")
    shared = _label_picture(tmp_path / "shared.png", "", (320, 96))
    items = load_items(folder)

    black = run_builder(
        "glyph", glyph_builder, items, tmp_path / "black", GlyphSettings(background="black"), workers=1
    )
    record = read_records(tmp_path / "black" / "train.jsonl")[0]
    assert black.built == 1 and "删除" in "".join(record.gt_text or ())
    condition = np.asarray(Image.open(tmp_path / "black" / record.conditioning_image).convert("L"))
    assert condition[0, 0] == 0 and condition.max() == 255, "white text on black"

    on_shared = GlyphSettings(background=str(shared))
    run_builder("glyph", glyph_builder, items, tmp_path / "shared", on_shared, workers=1)
    record = read_records(tmp_path / "shared" / "train.jsonl")[0]
    condition = np.asarray(Image.open(tmp_path / "shared" / record.conditioning_image).convert("RGB"))
    assert tuple(condition[0, 0]) == (250, 250, 245), "the shared picture is the background"

    small = _label_picture(tmp_path / "small.png", "", (100, 50))
    wrong = run_builder(
        "glyph", glyph_builder, items, tmp_path / "wrong", GlyphSettings(background=str(small)), workers=1
    )
    assert (
        wrong.built == 0
        and wrong.failed[0].reason == "wrong size: image is 320x96, the shared background 100x50"
    )


# --------------------------------------------------------------------------------------------------
# known labels: the true strings from skin.json, OCR only locates and checks them


def _truth(parts: Path, stem: str) -> list[str]:
    meta = json.loads((parts / stem / "skin.json").read_text(encoding="utf-8"))
    return sorted(label for labels in meta["labels"].values() for label in labels)


@pytest.mark.usefixtures("restore_logging")
def test_glyph_with_known_labels_writes_every_true_string(
    composed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """compose's labels.jsonl travels through canny; glyph finds it (--labels auto) and writes the
    generator's exact labels, with the numbers in the log and glyph_report.json."""
    canny, out = tmp_path / "canny", tmp_path / "glyph"
    assert main(["canny", "--in", str(composed / "composed"), "--out", str(canny), "--workers", "1"]) == 0
    assert (canny / "labels.jsonl").is_file(), "carried along"
    assert main(["glyph", "--in", str(canny), "--out", str(out), "--workers", "1"]) == 0
    log = capsys.readouterr().err
    records = read_records(out / "train.jsonl")
    assert [Path(r.image).stem for r in records] == ["skin_00000", "skin_00001"], "input stems kept"
    for record in records:
        assert sorted(record.gt_text or ()) == _truth(composed / "parts", Path(record.image).stem)
        assert "0" not in (record.gt_text or ()) and "Shift符号" not in (record.gt_text or ())
    report = json.loads((out / "glyph_report.json").read_text(encoding="utf-8"))
    expected = sum(len(r.gt_text or ()) for r in records)
    assert report["expected"] == expected and report["in_gt_text_with_true_string"] == expected
    confirmed = report["matched"] + report["read_in_box"]
    assert confirmed >= 0.95 * expected, report
    assert report["suspicious"].get("digit/letter confusion", 0) >= 1, "OCR's '0' for 'O' was seen and named"
    assert f"{expected} expected, {expected} in gt_text with the true string" in log
    assert validate_dataset(out / "train.jsonl", open_images=True) == []


def _blank_with_outline(folder: Path) -> tuple[Path, Path]:
    """A label-free picture, its 'Canny' condition (a white outline), and a labels file claiming a 'Q'
    inside the outline: OCR reads nothing there, so the label is dropped."""
    folder.mkdir()
    Image.new("RGB", (256, 128), (200, 200, 200)).save(folder / "key.png")
    condition = Image.new("RGB", (256, 128))
    ImageDraw.Draw(condition).rectangle((100, 40, 140, 90), outline=(255, 255, 255), width=2)
    condition.save(folder / "key_edges.png")
    jsonl = folder / "train.jsonl"
    jsonl.write_text(
        json.dumps({"text": "", "image": "key.png", "conditioning_image": "key_edges.png"}) + "\n",
        encoding="utf-8",
    )
    labels = folder / "mine.jsonl"
    entry = {"image": "key", "labels": [{"text": "Q", "rect": [90, 30, 150, 100], "box": [100, 40, 140, 90]}]}
    labels.write_text(json.dumps(entry) + "\n", encoding="utf-8")
    return jsonl, labels


@pytest.mark.usefixtures("restore_logging")
def test_dropped_label_policies(tmp_path: Path) -> None:
    jsonl, labels = _blank_with_outline(tmp_path / "in")
    inside = (slice(30, 100), slice(90, 150))
    results = {}
    for policy in ("draw", "black", "keep"):
        out = tmp_path / policy
        args = ["glyph", "--in", str(jsonl), "--out", str(out), "--labels", str(labels), "--dropped", policy]
        assert main([*args, "--workers", "1"]) == 0
        record = read_records(out / "train.jsonl")[0]
        results[policy] = (
            record.gt_text,
            np.asarray(Image.open(out / record.conditioning_image).convert("L")),
        )
        report = json.loads((out / "glyph_report.json").read_text(encoding="utf-8"))
        assert report["dropped"] == 1
    assert results["draw"][0] == ("Q",), "drawn from the known label, so it is ground truth too"
    assert results["black"][0] in (None, ()) and results["keep"][0] in (None, ())
    assert results["black"][1][inside].max() == 0, "outline blacked out"
    original = np.asarray(Image.open(tmp_path / "in" / "key_edges.png").convert("L"))
    assert np.array_equal(results["keep"][1], original), "the background's outline stays as it was"
    drawn = results["draw"][1]
    assert drawn[40, 120] == 0 and (drawn[inside] > 200).any(), "box cleared, the glyph drawn in it"
    bad = ["glyph", "--in", str(jsonl), "--out", str(tmp_path / "x"), "--labels", "none", "--dropped", "draw"]
    assert main(bad) == 1, "draw needs known labels"
