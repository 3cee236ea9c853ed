"""The playground in a real headless browser: Debian's Chromium driven by Playwright (no browser download).

Loads /ui of a real service on the tiny model, uploads a control image, generates, and checks the page
shows the image and the saved metadata, and that the autosave (PNG text chunks + history.jsonl) holds
it; then compares two checkpoints side by side and re-runs an image from the history tab.
Skips when no Chromium binary or no playwright package is installed.
"""

from __future__ import annotations

import io
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import test_serve
from PIL import Image
from test_serve import config

from serve.app import create_app
from serve.config import ServeConfig
from serve.history import HISTORY_FILE
from serve.images import read_png_metadata
from serve.testing import BackgroundServer

serve_run = test_serve.serve_run
condition_png = test_serve.condition_png

BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser")
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def chromium() -> str:
    pytest.importorskip("playwright.sync_api", reason="playwright (pip) is not installed")
    for name in BROWSERS:
        if found := shutil.which(name):
            return found
    pytest.skip("no headless Chromium installed (apt-get install chromium-headless-shell)")


def _entries(history: Path) -> list[dict]:
    path = history / HISTORY_FILE
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _wait_for(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_playground_generates_saves_compares_and_reruns(
    chromium: str, serve_run: Path, condition_png: bytes, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    history = tmp_path / "history"
    upload = tmp_path / "condition.png"
    upload.write_bytes(condition_png)
    with (
        BackgroundServer(create_app(config(serve_run, history_dir=history))) as running,
        sync_playwright() as pw,
    ):
        running.wait_ready()
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1800})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(running.url + "/ui/")
            page.wait_for_selector("#generate")
            assert "checkpoint-4" in page.inner_text("body")  # the checkpoint gallery
            with page.expect_response(lambda answer: "/gradio_api/upload?" in answer.url and answer.ok):
                page.set_input_files("#condition input[type=file]", str(upload))
            page.wait_for_selector("#condition img")  # the upload is the component's value
            prompt = page.locator(
                "#prompt textarea"
            ).input_value()  # this run's task: no recipe, so the toy's
            steps = page.locator("#steps input[type=number]")
            steps.fill("2")
            steps.press("Enter")
            page.click("#generate")
            page.wait_for_selector("#saved :text('Saved images/')")
            page.wait_for_selector("#output img")

            [entry] = _entries(history)
            assert (entry["checkpoint"], entry["seed"], entry["steps"], entry["width"]) == (
                "checkpoint-2",
                0,
                2,
                64,
            )
            saved = (history / entry["image_path"]).read_bytes()
            metadata = read_png_metadata(saved)
            assert "circle with" in prompt and "keyboard" not in prompt, (
                "keyboards only for runs that learned labels"
            )
            assert metadata["prompt"] == prompt and metadata["steps_run"] == 2
            shown = page.inner_text("#metadata")
            assert "checkpoint-2" in shown and "steps_run" in shown  # the page shows the saved metadata
            page.screenshot(path=str(tmp_path / "playground.png"), full_page=True)

            page.click("#compare")
            page.wait_for_function("document.querySelectorAll('#compared img').length >= 2")
            _wait_for(lambda: len(_entries(history)) == 3, "the compared images to be saved")
            compared = {e["checkpoint"] for e in _entries(history)[1:]}
            assert compared == {"checkpoint-2", "checkpoint-4"}

            page.get_by_role("tab", name="History").click()
            page.wait_for_function("document.querySelectorAll('#history img').length >= 3")
            page.locator("#history img").last.click()  # the oldest: the first generated image
            page.wait_for_selector("#picked-metadata :text('checkpoint-2')")
            page.click("#rerun")
            _wait_for(lambda: len(_entries(history)) == 4, "the re-run to be saved")
            rerun = _entries(history)[-1]
            assert {k: rerun[k] for k in ("checkpoint", "seed", "steps")} == {
                k: entry[k] for k in ("checkpoint", "seed", "steps")
            }
            first = np.asarray(Image.open(io.BytesIO(saved)).convert("RGB"))
            again = np.asarray(Image.open(history / rerun["image_path"]).convert("RGB"))
            assert np.array_equal(first, again)  # same settings and condition, same picture
        finally:
            browser.close()


best_run = test_serve.best_run


@pytest.mark.slow
def test_playground_opens_on_the_runs_best_with_its_recipe_and_task(
    chromium: str, best_run: Path, fill_jsonl: Path, tmp_path: Path
) -> None:
    """Served as the README says (``checkpoint-* RUN``), the playground opens on the run's best/, at its
    recipe (64², guidance 1, 2 steps) with its first validation record as the example (a circle outline
    and its colours), so Generate works at once; the 64² output is shown at least 384 px wide, sharp, and
    saved at its own size."""
    from playwright.sync_api import sync_playwright

    first = json.loads(fill_jsonl.read_text().splitlines()[0])
    history = tmp_path / "history"
    checkpoints = (*sorted(str(p) for p in best_run.glob("checkpoint-*")), str(best_run))
    with (
        BackgroundServer(create_app(ServeConfig(checkpoints, history_dir=history))) as running,
        sync_playwright() as pw,
    ):
        running.wait_ready()
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(running.url + "/ui/")
            page.wait_for_selector("#generate")
            assert page.locator("#prompt textarea").input_value() == first["text"]
            assert "circle with" in first["text"] and "keyboard" not in page.inner_text("body")
            assert page.locator("#steps input[type=number]").input_value() == "2"
            page.locator("#settings").get_by_text("Settings", exact=True).click()  # the accordion
            assert float(page.locator("#guidance input[type=number]").input_value()) == 1.0
            assert page.locator("#width input").input_value() == "64"
            assert page.locator("#checkpoint input").input_value().startswith("best (step")
            page.wait_for_selector("#condition img")  # the example condition, no upload needed
            page.click("#generate")
            page.wait_for_selector("#saved :text('Saved images/')")
            shown = page.locator("#output img").bounding_box()
            assert shown is not None and min(shown["width"], shown["height"]) >= 384, shown
            rendering = page.locator("#output img").evaluate("img => getComputedStyle(img).imageRendering")
            assert rendering == "pixelated"
            page.screenshot(path=str(tmp_path / "playground_best.png"), full_page=True)
        finally:
            browser.close()
    [entry] = _entries(history)
    assert (entry["checkpoint"], entry["steps"], entry["guidance"], entry["width"]) == ("best", 2, 1.0, 64)
    assert entry["prompt"] == first["text"]
    with Image.open(history / entry["image_path"]) as saved:
        assert saved.size == (64, 64), "enlarged on the page only, not in the saved file"
    condition = np.asarray(Image.open(history / entry["condition_path"]).convert("L"))
    original = fill_jsonl.parent / first["conditioning_image"]
    assert np.array_equal(condition, np.asarray(Image.open(original).convert("L")))
