"""Layout specs and the compose builder (real skin folders, real files, no mocks)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from data.__main__ import main
from data.compose import compose_skin, fit_element
from data.compose_builder import MISSING_FILE, build_compose
from data.layout import ElementSpec, LayoutError, default_layout_path, load_layout, parse_layout
from data.records import read_records
from data.skins_builder import build_skins
from data.validate import validate_dataset

SCALE = 0.25


def _half_layout() -> dict:
    """The packaged layout at 256x256, so the tests compose small pictures."""
    raw = yaml.safe_load(default_layout_path().read_text(encoding="utf-8"))
    raw["canvas"] = [256, 256]
    raw["outline_width"] = 1
    for element in raw["elements"].values():
        element["rect"] = [v // 4 for v in element["rect"]]
    return raw


@pytest.fixture(scope="module")
def skins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_skins(tmp_path_factory.mktemp("skins") / "parts", n=3, seed=0, scale=SCALE)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


# --------------------------------------------------------------------------------------------------
# layout specs


def test_packaged_layout_loads() -> None:
    layout = load_layout()
    assert layout.canvas == (1024, 1024)
    names = [e.name for e in layout.elements]
    assert names == ["background", "navbar", "keys26", "function", "keys9"]
    assert {e.name for e in layout.elements if e.required} == {"background", "keys26"}


def test_invalid_layout_names_file_and_every_field(tmp_path: Path) -> None:
    raw = _half_layout()
    raw["canvsa"] = 1
    raw["elements"]["keys26"]["fit"] = "fill"
    raw["elements"]["keys9"]["rect"] = [0, 200, 256, 100]  # past the bottom of the 256 canvas
    raw["elements"]["navbar"]["requird"] = True
    del raw["elements"]["function"]["rect"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(LayoutError) as caught:
        load_layout(path)
    message = str(caught.value)
    assert f"{path}: canvsa: unknown key (did you mean 'canvas'?)" in message
    assert f"{path}: elements.keys26.fit: must be one of stretch, contain, cover, got 'fill'" in message
    assert f"{path}: elements.keys9.rect: [0, 200, 256, 100] reaches outside the 256x256 canvas" in message
    assert f"{path}: elements.navbar.requird: unknown key (did you mean 'required'?)" in message
    assert f"{path}: elements.function.rect: missing required field" in message
    assert len(caught.value.problems) == 5

    path.write_text("canvas: [10, 10\n", encoding="utf-8")
    with pytest.raises(LayoutError, match="not valid YAML"):
        load_layout(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_layout(tmp_path / "missing.yaml")


def test_fit_modes_geometry() -> None:
    wide = Image.new("RGBA", (200, 100), (255, 0, 0, 255))
    rect = (10, 20, 100, 100)
    stretched, at = fit_element(wide, ElementSpec("e", rect, fit="stretch"))
    assert stretched.size == (100, 100) and at == (10, 20)
    contained, at = fit_element(wide, ElementSpec("e", rect, fit="contain"))
    assert contained.size == (100, 50) and at == (10, 45), "whole image, centred"
    covered, at = fit_element(wide, ElementSpec("e", rect, fit="cover"))
    assert covered.size == (100, 100) and at == (10, 20), "fills the rect, cropped"


# --------------------------------------------------------------------------------------------------
# composing


def test_compose_places_elements_and_outlines_keys(skins: Path) -> None:
    layout = parse_layout(_half_layout())
    composed = compose_skin(skins / "skin_00000", layout)
    assert composed.image.size == composed.condition.size == (256, 256) and composed.missing == ()
    condition = np.asarray(composed.condition)
    assert set(np.unique(condition)) <= {0, 255} and (condition[:, :, 0] == condition[:, :, 2]).all()
    keys26 = next(e for e in layout.elements if e.name == "keys26")
    x, y, w, h = keys26.rect
    inside = condition[y : y + h, x : x + w, 0] > 0
    assert 0.03 < inside.mean() < 0.5, "outlines of the key caps, not filled rectangles"
    rows_with_edges = inside.any(axis=1)
    assert rows_with_edges.sum() > h // 3, "three rows of keys outlined"
    navbar_height = next(e for e in layout.elements if e.name == "navbar").rect[3]
    below_navbar = condition[navbar_height + 1 :, :, 0]
    assert not below_navbar[-1].any() and not below_navbar[:, 0].all(), "no border from the background"


def test_build_compose_missing_optional_and_required(skins: Path, tmp_path: Path) -> None:
    parts = tmp_path / "parts"
    for folder in sorted(skins.iterdir()):
        if folder.is_dir():
            (parts / folder.name).mkdir(parents=True)
            for file in folder.iterdir():
                (parts / folder.name / file.name).write_bytes(file.read_bytes())
    (parts / "skin_00001" / "keys9.png").unlink()
    (parts / "skin_00001" / "navbar.png").unlink()
    (parts / "skin_00002" / "keys26.png").unlink()  # required
    (parts / "skin_00003").mkdir()  # an element file that is not an image
    (parts / "skin_00003" / "background.png").write_bytes(b"not a png")
    out = tmp_path / "composed"

    summary = build_compose(parts, out, parse_layout(_half_layout()), workers=1)
    assert summary.built == 2 and len(summary.failed) == 2
    reasons = {f.key: f.reason for f in summary.failed}
    assert reasons["skin_00002"].startswith("required element 'keys26' missing")
    assert "cannot read element image" in reasons["skin_00003"]
    assert summary.notes == {"missing optional element: keys9": 1, "missing optional element: navbar": 1}
    missing = json.loads((out / MISSING_FILE).read_text(encoding="utf-8"))
    assert missing == {"skin_00000": [], "skin_00001": ["navbar", "keys9"]}
    records = read_records(out / "train.jsonl")
    assert [r.image for r in records] == ["images/skin_00000.png", "images/skin_00001.png"]
    assert validate_dataset(out / "train.jsonl", open_images=True) == []
    failed = [json.loads(line) for line in (out / "failed.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {f["key"] for f in failed} == {"skin_00002", "skin_00003"}

    again = build_compose(parts, out, parse_layout(_half_layout()), workers=1)
    assert again.kept == 2 and again.built == 0, "resumed"
    with pytest.raises(FileExistsError, match="overwrite"):
        build_compose(parts, out, load_layout(), workers=1)


@pytest.mark.usefixtures("restore_logging")
def test_compose_cli(skins: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    layout = tmp_path / "small.yaml"
    layout.write_text(yaml.safe_dump(_half_layout(), sort_keys=False), encoding="utf-8")
    out = tmp_path / "out"
    args = ["compose", "--in", str(skins), "--out", str(out), "--layout", str(layout), "--workers", "1"]
    assert main([*args, "--text", "skin"]) == 0
    assert [r.text for r in read_records(out / "train.jsonl")] == ["skin"] * 3
    bad = tmp_path / "bad.yaml"
    bad.write_text("canvas: [64, 64]\nelements: {keys26: {rect: [0, 0, 65, 10]}}\n", encoding="utf-8")
    assert main(["compose", "--in", str(skins), "--out", str(tmp_path / "o2"), "--layout", str(bad)]) == 1
    assert (
        f"{bad}: elements.keys26.rect: [0, 0, 65, 10] reaches outside the 64x64 canvas"
        in capsys.readouterr().err
    )
