"""report.html and its charts, built from hand-made metrics (no models), and rendered by a real browser."""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from PIL import Image

from inference.plot import line_chart
from inference.report_html import RecordRow, write_html_report

SVG = "{http://www.w3.org/2000/svg}"


def test_line_chart_is_valid_svg_with_one_point_per_step() -> None:
    svg = ET.fromstring(
        line_chart([(80, 0.4), (0, 0.1), (40, 0.3)], "edge F1", reference=0.9, reference_label="t:")
    )
    circles = svg.findall(f"{SVG}circle")
    assert len(circles) == 3
    xs = [float(c.get("cx")) for c in circles]
    assert xs == sorted(xs), "points are drawn in step order"
    ys = [float(c.get("cy")) for c in circles]
    assert ys[0] > ys[1] > ys[2], "higher values are drawn higher"
    assert "t: 0.9" in "".join(svg.itertext())
    assert not svg.findall(f"{SVG}line[@stroke-dasharray]"), "a reference outside the data span is not drawn"


class _Collector(HTMLParser):
    """Collects start tags, checking that every non-void element is closed in order."""

    VOID: ClassVar[frozenset[str]] = frozenset({"meta", "img", "br", "link", "circle", "line", "polyline"})

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1] if self.open else None}>"
        self.open.pop()


def _image(path: Path, value: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((32, 32, 3), value, dtype=np.uint8)).save(path)
    return path


def _summary(name: str, step: int | None, f1: float, reference: bool = False) -> dict[str, Any]:
    return {
        "checkpoint": name, "step": step, "reference": reference, "images": 1, "edge_f1": f1,
        "edge_f1_tolerant": f1 + 0.1, "edge_ssim": 0.5, "text_lines": 2, "sentence_accuracy": 0.5,
        "normalized_edit_distance": 0.75, "clip_score": None, "fid": None,
    }  # fmt: skip


def _page(tmp_path: Path, plot_steps: dict[str, int]) -> tuple[Path, str]:
    out = tmp_path / "out"
    condition, target = _image(tmp_path / "c.png", 0), _image(tmp_path / "t.png", 128)
    a = _image(out / "images" / "checkpoint-40" / "00000_s0.png", 200)
    row = {"checkpoint": "checkpoint-40", "path": "images/checkpoint-40/00000_s0.png", "edge_f1": 0.3,
           "edge_f1_tolerant": 0.4, "edge_ssim": 0.5, "text_lines": 2, "sentence_accuracy": 0.5,
           "normalized_edit_distance": 0.75, "ocr_read": ["Esc", "退"]}  # fmt: skip
    metrics = {
        "metric_settings": {"edges": {"tolerance": 2}},
        "summary": [_summary("target", None, 1.0, True), _summary("checkpoint-40", 40, 0.3),
                    _summary("checkpoint-80", 80, 0.35)],
        "images": [row],
    }  # fmt: skip
    report = {
        "data": str(tmp_path / "train.jsonl"), "records": 1, "seeds": [0], "settings": {"scheduler": None},
        "checkpoints": [{"name": "checkpoint-40", "seconds_per_image": 0.5}, {"name": "checkpoint-80"}],
    }  # fmt: skip
    rows = [
        RecordRow(
            0,
            "a <skin> & keys",
            condition,
            target,
            {"checkpoint-40": a, "checkpoint-80": None},
            ["Esc", "退出"],
        )
    ]
    path = write_html_report(out, report, metrics, rows, plot_steps)
    return path, path.read_text(encoding="utf-8")


def test_html_report_is_self_contained_and_well_formed(tmp_path: Path) -> None:
    _, html = _page(tmp_path, {"checkpoint-40": 40, "checkpoint-80": 80})
    parser = _Collector()
    parser.feed(html)
    assert not parser.open, f"unclosed elements: {parser.open}"
    images = [attrs for tag, attrs in parser.tags if tag == "img"]
    assert len(images) == 3 and all(str(a["src"]).startswith("data:image/") for a in images)
    links = [attrs["href"] for tag, attrs in parser.tags if tag == "a"]
    assert "images/checkpoint-40/00000_s0.png" in links, "thumbnails link to the full image beside the page"
    assert "a &lt;skin&gt; &amp; keys" in html and "<skin>" not in html
    assert "missing" in html  # checkpoint-80 has no image for this record
    assert html.count("<svg") == 5  # one chart per metric with values: F1, tolerant F1, SSIM, acc, NED
    assert "0.3500" in html and "class='num best'>0.3500" in html  # the better checkpoint stands out
    assert "target (reference)" in html and "±2px" in html

    _, without_run = _page(tmp_path / "other", {})
    assert "<svg" not in without_run, "no chart when the checkpoints are not steps of one run"


@pytest.mark.slow
def test_browser_renders_the_report(tmp_path: Path) -> None:
    browser = shutil.which("chromium-headless-shell") or shutil.which("chromium")
    if browser is None:
        pytest.skip("no headless Chromium installed (apt-get install chromium-headless-shell)")
    path, _ = _page(tmp_path, {"checkpoint-40": 40, "checkpoint-80": 80})
    shot = tmp_path / "shot.png"
    subprocess.run(
        [browser, "--no-sandbox", "--hide-scrollbars", f"--screenshot={shot}", "--window-size=1200,900",
         path.as_uri()],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (900, 1200)
    inked_rows = (pixels < 200).any(axis=1).mean()
    assert inked_rows > 0.3, "the page renders text, tables and images, not a blank screen"


def test_final_weights_and_column_directions_are_named(tmp_path: Path) -> None:
    out = tmp_path / "out"
    metrics = {
        "metric_settings": {"edges": {"tolerance": 2}},
        "summary": [_summary("checkpoint-40", 40, 0.3), _summary("final", 80, 0.35)],
        "images": [],
    }
    report = {"data": "d.jsonl", "records": 0, "seeds": [0], "settings": {}, "checkpoints": []}
    html = write_html_report(out, report, metrics, [], {}).read_text(encoding="utf-8")
    assert "<td>final (step 80)</td>" in html and "<td>checkpoint-40</td>" in html
    assert "<th>OCR 1−NED ↑</th>" in html and "<th>edge F1 ↑</th>" in html
    assert "OCR NED" not in html and "↓ lower is better" in html
