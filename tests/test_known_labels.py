"""Known labels: skin.json records where each label was drawn, compose maps it onto the canvas, the
matcher keeps true strings and names OCR's misreads; builders keep stems and fail loudly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data.compose_builder import build_compose
from data.known_labels import KnownLabel, read_labels
from data.label_matching import match_labels, misread_reason, suspicious_line
from data.layout import load_layout
from data.skins import generate_skin
from data.skins_builder import build_skins
from recognizer.ocr import OcrLine

REPO = Path(__file__).resolve().parents[1]


def _line(box: tuple[float, float, float, float], text: str, confidence: float = 0.99) -> OcrLine:
    x0, y0, x1, y1 = box
    return OcrLine(((x0, y0), (x1, y0), (x1, y1), (x0, y1)), text, confidence)


def _reads(text: str) -> Callable[[Sequence[np.ndarray]], list[tuple[str, float]]]:
    """A recognition pass that reads ``text`` in every crop (the matcher's input, not under test)."""

    def recognize(crops: Sequence[np.ndarray]) -> list[tuple[str, float]]:
        return [(text, 0.9) for _ in crops]

    return recognize


KEYS = [
    KnownLabel("Shift", (0, 0, 100, 50), (20, 10, 80, 40)),
    KnownLabel("符号", (100, 0, 200, 50), (125, 10, 175, 40)),
    KnownLabel("O", (200, 0, 300, 50), (240, 10, 260, 40)),
    KnownLabel("@/.", (300, 0, 400, 50), (330, 10, 370, 40)),
]
IMAGE = np.zeros((60, 400, 3), np.uint8)


def test_matcher_keeps_true_strings_and_names_each_misread() -> None:
    lines = [
        _line((18, 8, 178, 42), "Shift符号"),
        _line((238, 8, 262, 42), "0"),
        _line((328, 8, 345, 42), "@"),
    ]
    outcomes = match_labels(KEYS, lines, IMAGE, _reads(""))
    by_text = {o.label.text: o for o in outcomes}
    assert [o.label.text for o in outcomes] == ["Shift", "符号", "O", "@/."], "every known label, in order"
    assert by_text["Shift"].status == by_text["符号"].status == "corrected"
    assert by_text["Shift"].suspicious == ("merged neighbours",)
    assert by_text["O"].suspicious == ("digit/letter confusion",)
    assert by_text["@/."].suspicious == ("partial string",)
    for outcome in outcomes:
        assert outcome.polygon is not None
        xs = [x for x, _ in outcome.polygon]
        rect = outcome.label.rect
        assert rect is not None and rect[0] <= min(xs) and max(xs) <= rect[2], "never across its key"


def test_matcher_matched_read_in_box_and_dropped() -> None:
    lines = [_line((18, 8, 82, 42), "Shift")]
    outcomes = match_labels(KEYS[:2], lines, IMAGE, _reads("符号"))
    assert [o.status for o in outcomes] == ["matched", "read-in-box"]
    assert outcomes[1].suspicious == (), "nothing misread on the page: OCR only missed it"
    dropped = match_labels(KEYS[2:3], [], IMAGE, _reads(""))
    assert dropped[0].status == "dropped" and dropped[0].polygon is not None, "its known box, for a policy"


def test_misread_reasons_and_unknown_label_flags() -> None:
    assert misread_reason("0", "O") == "digit/letter confusion"
    assert misread_reason("5hift", "Shift") == "digit/letter confusion"
    assert misread_reason("@", "@/.") == "partial string"
    assert misread_reason("H", "I") == "other misread"
    assert suspicious_line("0") == suspicious_line("B0X") == "digit/letter confusion"
    assert suspicious_line("O") is None, "a lone letter is what a keyboard shows"
    assert (
        suspicious_line("123") is None and suspicious_line("ABC") is None and suspicious_line("删除") is None
    )


def test_labels_file_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "labels.jsonl"
    path.write_text('{"image": "a", "labels": [{"text": "Q", "rect": [0, 0, 10, 10]}]}\n{"image": "b"}\n')
    with pytest.raises(ValueError, match=r"labels.jsonl:2: labels: must be an array"):
        read_labels(path)
    path.write_text('{"image": "a", "labels": [{"text": "Q", "rect": [10, 0, 5, 10]}]}\n')
    with pytest.raises(ValueError, match=r":1: labels\[0\].rect: must be \[x0, y0, x1, y1\]"):
        read_labels(path)


def test_skin_json_records_each_label_inside_its_key(tmp_path: Path) -> None:
    skin = generate_skin(3, seed=0)
    for name, keys in skin.keys.items():
        assert [k.label for k in keys] == skin.labels[name]
        width, height = skin.elements[name].size
        for key in keys:
            (rx0, ry0, rx1, ry1), (bx0, by0, bx1, by1) = key.rect, key.box
            assert 0 <= rx0 <= bx0 < bx1 <= rx1 <= width and 0 <= ry0 <= by0 < by1 <= ry1 <= height, key


def test_compose_writes_labels_on_the_canvas(tmp_path: Path) -> None:
    build_skins(tmp_path / "parts", n=1, seed=0, workers=1)
    build_compose(tmp_path / "parts", tmp_path / "composed", workers=1)
    labels = read_labels(tmp_path / "composed" / "labels.jsonl")["skin_00000"]
    meta = json.loads((tmp_path / "parts" / "skin_00000" / "skin.json").read_text(encoding="utf-8"))
    assert [label.text for label in labels] == [
        label for name in ("navbar", "keys26", "function", "keys9") for label in meta["labels"][name]
    ], "layout drawing order"
    slot = {e.name: e.rect for e in load_layout().elements}["keys26"]
    q = labels[[label.text for label in labels].index("Q")]
    assert q.rect is not None and q.box is not None
    assert slot[0] <= q.rect[0] < q.box[0] and q.box[2] < q.rect[2] <= slot[0] + slot[2]
    canvas = np.asarray(Image.open(tmp_path / "composed" / "images" / "skin_00000.png").convert("L"))
    x0, y0, x1, y1 = (int(v) for v in q.box)
    ink = canvas[y0:y1, x0:x1]
    assert ink.std() > 20, "the mapped text box holds the drawn letter"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "data", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


def test_builder_exits_non_zero_when_records_failed(tmp_path: Path) -> None:
    """A script must notice a partial dataset: exit 1 naming the count and failed.jsonl."""
    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (32, 32), (9, 99, 199)).save(folder / "good.png")
    (folder / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    done = _run("canny", "--in", str(folder), "--out", str(out), "--workers", "1")
    assert done.returncode == 1
    assert f"1 record failed (listed in {out / 'failed.jsonl'})" in done.stderr
    assert "--allow-failures" in done.stderr and (out / "train.jsonl").is_file()
    allowed = _run("canny", "--in", str(folder), "--out", str(out), "--workers", "1", "--allow-failures")
    assert allowed.returncode == 0, allowed.stderr
    kept = [json.loads(line)["image"] for line in (out / "train.jsonl").read_text().splitlines()]
    assert kept == ["images/good.png"], "the input's file stem, not a counter"
