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

    VOID: ClassVar[frozenset[str]] = frozenset(
        {"meta", "img", "br", "link", "col", "circle", "line", "polyline"}
    )

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
    assert "class='num best'>0.4500" in html  # the better tolerant F1 stands out
    assert "class='num best'>0.3500" not in html, "the strict F1 does not say whether the outline is followed"
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
    assert "<td>final (step 80)<span class='tag'>best by edge F1 (±2px)</span></td>" in html
    assert "<td>checkpoint-40</td>" in html
    assert "<th>OCR 1−NED ↑</th>" in html and "<th>edge F1 ↑</th>" in html
    assert "OCR NED" not in html and "↓ lower is better" in html


def test_best_is_named_by_adherence_and_the_runs_best_column_is_marked(tmp_path: Path) -> None:
    """checkpoint-100 has the best SSIM but ignores its condition (lowest tolerant F1 and circle IoU): it is
    never named best. The run's best/ column is named with its step and how training chose it."""
    out = tmp_path / "out"
    best_dir = tmp_path / "run" / "best"
    best_dir.mkdir(parents=True)
    (best_dir / "selection.json").write_text('{"metric": "edge_f1_tolerant", "step": 300, "score": 0.61}')
    rows = [
        {**_summary("target", None, 0.37, True), "circle_iou": 0.98},
        {**_summary("checkpoint-100", 100, 0.05), "edge_ssim": 0.9, "circle_iou": 0.1},
        {**_summary("checkpoint-300", 300, 0.5), "edge_ssim": 0.4, "circle_iou": 0.8},
        {**_summary("best", 300, 0.5), "edge_ssim": 0.4, "circle_iou": 0.8},
    ]
    metrics = {"metric_settings": {"edges": {"tolerance": 2}}, "summary": rows, "images": []}
    report = {
        "data": "d.jsonl", "records": 0, "seeds": [0], "settings": {},
        "checkpoints": [{"name": "checkpoint-100", "step": 100}, {"name": "checkpoint-300", "step": 300},
                        {"name": "best", "step": 300, "controlnet_dir": str(best_dir)}],
    }  # fmt: skip
    html = write_html_report(out, report, metrics, [], {}).read_text(encoding="utf-8")
    lines = {line.split("</td>")[0]: line for line in html.splitlines() if line.startswith("<tr")}
    ssim_winner = next(line for key, line in lines.items() if "checkpoint-100" in key)
    assert "best by" not in ssim_winner and "num best" not in ssim_winner
    kept = next(line for key, line in lines.items() if ">best (step 300)" in key)
    assert "best by edge F1 (±2px)" in kept and "best by circle IoU" in kept
    assert "kept by training: edge_f1_tolerant 0.610" in kept
    assert "best by edge SSIM" not in html
    assert "training image against its own condition" in html and "1-px edge" in html  # the target row


def _many_columns_page(tmp_path: Path) -> Path:
    """A demo-sized report: 4 records, condition, target and 7 checkpoint columns (the demo's 0..400,
    final, best), 128² images."""
    out = tmp_path / "out"
    names = [*(f"checkpoint-{step}" for step in range(0, 500, 100)), "final", "best"]
    rows = []
    for record in range(4):
        images = {name: _image(out / "images" / name / f"{record:05d}_s0.png", 40 * record) for name in names}
        condition = _image(tmp_path / f"c{record}.png", 0)
        rows.append(RecordRow(record, "pale golden rod circle with old lace background", condition,
                              _image(tmp_path / f"t{record}.png", 200), images))  # fmt: skip
    summary = [_summary(name, 100, 0.1 * i) for i, name in enumerate(names)]
    metrics = {"metric_settings": {"edges": {"tolerance": 2}}, "summary": summary, "images": []}
    report = {"data": str(tmp_path / "train.jsonl"), "records": 4, "seeds": [0], "settings": {},
              "checkpoints": [{"name": name, "step": 100} for name in names]}  # fmt: skip
    return write_html_report(out, report, metrics, rows, {})


@pytest.mark.slow
def test_the_grid_fits_a_1400_px_window(tmp_path: Path) -> None:
    """Every checkpoint column, the last included, is inside a 1400-px-wide window: no sideways scrolling."""
    pytest.importorskip("playwright.sync_api", reason="playwright (pip) is not installed")
    from playwright.sync_api import sync_playwright

    browser_path = shutil.which("chromium-headless-shell") or shutil.which("chromium")
    if browser_path is None:
        pytest.skip("no headless Chromium installed (apt-get install chromium-headless-shell)")
    path = _many_columns_page(tmp_path)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(path.as_uri())
            assert page.evaluate("document.documentElement.scrollWidth") <= 1400
            last = page.locator("table.grid tr").nth(1).locator("img").last.bounding_box()
            assert last is not None and last["x"] + last["width"] <= 1400, last
            assert last["width"] >= 96, "cells shrink to fit, but stay large enough to judge"
            page.screenshot(path=str(tmp_path / "report.png"), full_page=False)
        finally:
            browser.close()
