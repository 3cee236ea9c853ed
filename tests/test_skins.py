"""Procedural keyboard skins and the CJK font (real drawing and files, no mocks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.fonts import FontNotFoundError, default_cjk_font_path, load_font, resolve_font_path
from data.records import read_records
from data.skin_style import MIN_LABEL_CONTRAST, contrast_ratio, draw_style
from data.skins import ELEMENT_SIZES, ELEMENTS, generate_skin
from data.skins_builder import build_skins
from data.validate import validate_dataset

REPO = Path(__file__).resolve().parents[1]
SCALE = 0.25


def test_default_font_draws_cjk_glyphs() -> None:
    path = default_cjk_font_path()
    assert path.is_file() and path.suffix == ".ttc"
    font = load_font(None, 32)
    missing = bytes(font.getmask("\U000f0000"))  # a private-use code point: the font's missing-glyph box
    masks = {ch: bytes(font.getmask(ch)) for ch in "删除空格上档A"}
    assert missing not in masks.values(), "every label character has a real glyph"
    assert len(set(masks.values())) == len(masks)


def test_missing_font_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FontNotFoundError, match=r"nofont\.ttf does not exist"):
        resolve_font_path(tmp_path / "nofont.ttf")
    with pytest.raises(FontNotFoundError, match="is not a file"):
        resolve_font_path(tmp_path)
    broken = tmp_path / "broken.ttf"
    broken.write_bytes(b"not a font")
    with pytest.raises(FontNotFoundError, match="cannot load font"):
        load_font(broken, 12)


def test_styles_keep_labels_legible() -> None:
    for seed in range(200):
        style = draw_style(np.random.default_rng(seed))
        for key, ink in ((style.key_fill, style.label), (style.accent_fill, style.accent_label)):
            assert contrast_ratio(key, ink) >= MIN_LABEL_CONTRAST
        assert contrast_ratio(style.nav_fill, style.nav_label) >= MIN_LABEL_CONTRAST


def test_skin_elements_sizes_and_labels() -> None:
    skin = generate_skin(0, seed=3, scale=SCALE)
    assert tuple(skin.elements) == ELEMENTS
    for name, image in skin.elements.items():
        width, height = ELEMENT_SIZES[name]
        assert image.size == (round(width * SCALE), round(height * SCALE))
        assert image.mode == ("RGB" if name == "background" else "RGBA")
    assert len(skin.labels["keys26"]) == 26 and len(skin.labels["keys9"]) == 12
    assert len(skin.labels["function"]) == 5 and 4 <= len(skin.labels["navbar"]) <= 5
    boards = np.asarray(skin.elements["keys26"])
    assert (boards[:, :, 3] == 255).mean() > 0.4, "key caps are opaque"
    assert (boards[:, :, 3] < 128).mean() > 0.05, "gaps between keys are see-through"


def test_skins_are_reproducible_and_vary_with_seed() -> None:
    first, again = generate_skin(2, seed=5, scale=SCALE), generate_skin(2, seed=5, scale=SCALE)
    for name in ELEMENTS:
        assert first.elements[name].tobytes() == again.elements[name].tobytes()
    others = [generate_skin(2, seed=s, scale=SCALE) for s in range(6, 10)]
    assert any(o.style != first.style for o in others)
    assert len({str(o.labels["function"]) for o in [first, *others]}) > 1, "labels vary too"
    with pytest.raises(ValueError, match="scale"):
        generate_skin(0, scale=0)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_build_skins_writes_folders_and_resumes(tmp_path: Path) -> None:
    out = build_skins(tmp_path / "skins", n=3, seed=1, scale=SCALE)
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert folders == ["skin_00000", "skin_00001", "skin_00002"]
    meta = json.loads((out / "skin_00001" / "skin.json").read_text(encoding="utf-8"))
    assert meta["seed"] == 1 and meta["index"] == 1 and "Q" in meta["labels"]["keys26"]
    for name in ELEMENTS:
        with Image.open(out / "skin_00001" / f"{name}.png") as image:
            assert image.format == "PNG"
    expected = _tree(out)

    old_ns = 1_000_000_000_000_000_000
    kept = out / "skin_00000" / "keys26.png"
    os.utime(kept, ns=(old_ns, old_ns))
    (out / "skin_00002" / "skin.json").unlink()  # as if interrupted before the folder was finished
    (out / "skin_00002" / "navbar.png").unlink()
    build_skins(out, n=3, seed=1, scale=SCALE)
    assert _tree(out) == expected, "unfinished folder rebuilt identically"
    assert kept.stat().st_mtime_ns == old_ns, "finished folder untouched"

    with pytest.raises(FileExistsError, match="another --out"):
        build_skins(out, n=3, seed=2, scale=SCALE)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cli_chain_skins_compose_canny_glyph_caption(tmp_path: Path) -> None:
    """What `make skins-demo` runs, as subprocesses, on two skins."""
    parts, composed, canny, glyph, blip, final = (
        str(tmp_path / name) for name in ("parts", "composed", "canny", "glyph", "blip", "final")
    )
    steps = [
        ("-m", "data", "skins", "--out", parts, "--n", "2", "--seed", "4"),
        ("-m", "data", "compose", "--in", parts, "--out", composed),
        ("-m", "data", "canny", "--in", composed, "--out", canny),
        ("-m", "data", "glyph", "--in", canny, "--out", glyph),
        ("-m", "data.tiny_blip", blip),
        ("-m", "data", "caption", "--in", glyph, "--out", final, "--model", blip, "--batch-size", "2"),
    ]
    for step in steps:
        done = _run(*step)
        assert done.returncode == 0, f"{step}: {done.stderr[-2000:]}"
    records = read_records(tmp_path / "final" / "train.jsonl")
    assert len(records) == 2 and all(r.text.endswith(",iflyskin") for r in records)
    assert all(len(r.gt_text or ()) >= 15 for r in records), "labels read back and recorded"
    assert validate_dataset(tmp_path / "final" / "train.jsonl", open_images=True) == []
    for command in ("skins", "compose", "glyph", "caption"):
        helped = _run("-m", "data", command, "--help")
        assert helped.returncode == 0 and "usage: python -m data" in helped.stdout
