"""The peers' evaluation protocols against independent computations of their formulas, on fixed image and
string pairs; and the native protocol scoring a canny dataset's targets with the detector that made it.

The "independent" side follows the peers' code path literally (ControlNet++: edge PNGs written to disk,
the seeds of a prompt stacked into one batch for torchmetrics; AnyText: the corner sort in Python, the
Umeyama similarity by SVD, the warp by explicit bilinear sampling, the dictionary file read as their
TextRecognizer reads it, a plain dynamic-programming edit distance), so that a mistake in our per-image /
merged-state / library route shows up as a difference. ControlNet++'s Canny is kornia 0.7.0's: our
re-implementation is checked pixel for pixel against kornia 0.7.0 itself, installed from the package index
into a throw-away folder and run in a subprocess (skipped when the index cannot be reached).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFilter
from torchmetrics.classification import BinaryF1Score
from torchmetrics.image import MultiScaleStructuralSimilarityIndexMeasure

from common.atomic import atomic_save_image
from data.__main__ import main as data_main
from data.fill import fill_record
from data.records import Record, write_records
from data.skins import generate_skin
from inference import controlnetpp
from inference.anytext import (
    AnyTextDictChoice,
    AnyTextDictionary,
    anytext_text_scores,
    anytext_truth,
    choose_benchmark_dictionary,
    crop_line,
    line_corners,
    line_mask,
    read_anytext,
)
from inference.dataset_edges import dataset_edge_settings
from inference.evaluate import METRICS_CSV, METRICS_FILE, Evaluator, MetricSettings, ScoredImage, evaluate
from inference.kornia070_canny import canny as kornia070_canny
from inference.metrics import EdgeSettings, edge_scores
from inference.protocols import ANYTEXT, CONTROLNETPP, NATIVE
from inference.report_html import write_html_report
from recognizer.backends import load_ocr
from recognizer.ocr import OcrConfig
from recognizer.rec_characters import rec_characters
from recognizer.synthetic import KEY_LABELS, render_keyboard

SIZE = 192  # torchmetrics' 5-scale MS-SSIM needs >= 176 px a side


# --------------------------------------------------------------------------- fixed images


def _scene(seed: int, size: tuple[int, int] = (SIZE, SIZE), blur: float = 0.0) -> Image.Image:
    """Shapes and a line of text on a textured background; ``seed`` moves and recolours them."""
    rng = np.random.default_rng(seed)
    background = rng.integers(90, 140, size=(size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(background)
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x0, y0 = rng.integers(0, size[0] - 40), rng.integers(0, size[1] - 40)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.rounded_rectangle((x0, y0, x0 + rng.integers(20, 60), y0 + rng.integers(20, 60)), 6, colour)
    draw.ellipse((30 + seed % 7, 50, 110, 120 + seed % 5), outline=(250, 250, 250), width=3)
    draw.text((20, size[1] - 30), f"Key {seed}", fill=(255, 255, 0))
    return image.filter(ImageFilter.GaussianBlur(blur)) if blur else image


def _theirs_edge_png(image: Image.Image, path: Path) -> Path:
    """eval.py L176-180 / L226-232: kornia canny on [0, 1], to_pil_image(.., 'L'), RGB, saved as PNG.

    kornia 0.7.0 (their pin) is stood in for by inference.kornia070_canny, which
    test_controlnetpp_canny_is_kornia_070_pixel_for_pixel checks against kornia 0.7.0 itself.
    """
    tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1).unsqueeze(0) / 255.0
    edges = kornia070_canny(tensor, 0.1, 0.2)[1]
    Image.fromarray((edges[0, 0] * 255).to(torch.uint8).numpy(), "L").convert("RGB").save(path)
    return path


def _theirs_prompt(source: Image.Image, outputs: list[Image.Image], folder: Path) -> tuple[float, float]:
    """eval_edge.py eval_canny (L15-44) for one prompt: (F1, MS-SSIM) with the seeds stacked."""
    folder.mkdir(parents=True, exist_ok=True)
    label_path = _theirs_edge_png(source.resize(outputs[0].size, Image.Resampling.BICUBIC), folder / "gt.png")
    paths = [_theirs_edge_png(out, folder / f"group_{i}.png") for i, out in enumerate(outputs)]
    gt = torch.from_numpy(np.array(Image.open(label_path).convert("L")))[None, None].repeat(
        len(paths), 1, 1, 1
    )
    pred = torch.stack([torch.from_numpy(np.array(Image.open(p).convert("L"))) for p in paths])[:, None]
    ssim = MultiScaleStructuralSimilarityIndexMeasure(data_range=1.0)(
        (pred / 255.0).clip(0, 1), (gt / 255.0).clip(0, 1)
    )
    gt[gt == 255] = 1
    pred[pred == 255] = 1
    return float(BinaryF1Score()(pred.flatten(), gt.flatten())), float(ssim)


def _ours(prompts: list[tuple[Image.Image, list[Image.Image]]]) -> dict[str, float | None]:
    rows = []
    for record, (source, outputs) in enumerate(prompts):
        for seed, output in enumerate(outputs):
            scores = controlnetpp.score_image(output, source)
            rows.append(
                {
                    "record": record,
                    "seed": seed,
                    "controlnetpp_stats": scores.stats,
                    "controlnetpp_edge_ms_ssim": scores.ms_ssim,
                }
            )
    return controlnetpp.summarize(rows)


def test_controlnetpp_edges_equal_their_pooled_f1_and_ms_ssim(tmp_path: Path) -> None:
    """Two prompts of three seeds, the source at another size than the outputs (bicubic resize)."""
    prompts = [
        (
            _scene(0).resize((256, 256), Image.Resampling.LANCZOS),
            [_scene(0, blur=0.6), _scene(1), _scene(0, blur=1.5)],
        ),
        (_scene(3), [_scene(3), _scene(4, blur=0.8), _scene(5)]),
    ]
    theirs = [_theirs_prompt(src, outs, tmp_path / f"p{i}") for i, (src, outs) in enumerate(prompts)]
    ours = _ours(prompts)
    f1s = [f1 for f1, _ in theirs]
    assert min(f1s) > 0.05 and max(f1s) < 0.95, "the fixed pairs are neither trivial nor hopeless"
    assert ours["controlnetpp_edge_f1"] == pytest.approx(100 * sum(f1s) / len(f1s), abs=1e-9)
    assert ours["controlnetpp_edge_ms_ssim"] == pytest.approx(sum(s for _, s in theirs) / 2, abs=1e-6)


def test_controlnetpp_empty_maps_score_zero_f1_as_theirs(tmp_path: Path) -> None:
    """A flat source and flat outputs: no edges anywhere; torchmetrics' F1 is 0 there (ours native: 1)."""
    flat = Image.new("RGB", (SIZE, SIZE), (120, 130, 140))
    prompts = [(flat, [flat, Image.new("RGB", (SIZE, SIZE), (10, 10, 10))]), (_scene(7), [_scene(7)])]
    theirs = [_theirs_prompt(src, outs, tmp_path / f"p{i}") for i, (src, outs) in enumerate(prompts)]
    assert theirs[0][0] == 0.0 and theirs[1][0] == 1.0
    ours = _ours(prompts)
    assert ours["controlnetpp_edge_f1"] == pytest.approx(50.0)
    assert ours["controlnetpp_edge_ms_ssim"] == pytest.approx((theirs[0][1] + theirs[1][1]) / 2, abs=1e-6)
    assert edge_scores(flat, flat, EdgeSettings(condition_is_edges=False)).f1 == 1.0, (
        "native: both empty agree"
    )


def test_controlnetpp_ms_ssim_is_empty_for_small_images() -> None:
    small = _scene(1, (128, 128))
    scores = controlnetpp.score_image(small, small)
    assert scores.ms_ssim is None and scores.f1 == 100.0
    summary = controlnetpp.summarize([{"record": 0, "controlnetpp_stats": scores.stats}])
    assert summary == {"controlnetpp_edge_f1": 100.0, "controlnetpp_edge_ms_ssim": None}


# --------------------------------------------------------------------------- ControlNet++: kornia 0.7.0

_KORNIA_070_PROBE = """
import sys
from pathlib import Path

import kornia
import numpy as np
import torch
from kornia.filters import canny
from PIL import Image

assert kornia.__version__ == "0.7.0", kornia.__file__
folder = Path(sys.argv[1])
(folder / "theirs").mkdir()
for png in sorted(folder.glob("*.png")):  # eval.py L176-180: pil_to_tensor / 255, canny, to_pil_image 'L'
    pixels = torch.from_numpy(np.array(Image.open(png).convert("RGB"))).permute(2, 0, 1).unsqueeze(0) / 255.0
    edges = canny(pixels, 0.1, 0.2)[1]
    stored = Image.fromarray(edges[0, 0].mul(255).byte().numpy(), "L").convert("RGB")
    stored.save(folder / "theirs" / png.name)
for tensor in sorted(folder.glob("*.pt")):
    image = torch.load(tensor)
    results = {h: canny(image, 0.1, 0.2, hysteresis=h) for h in (True, False)}
    torch.save(results, folder / "theirs" / tensor.name)
"""


@pytest.fixture(scope="module")
def kornia070(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """kornia 0.7.0 (pure Python; torch is the venv's) installed into a throw-away folder."""
    target = tmp_path_factory.mktemp("kornia070")
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps"]
    command += ["--retries", "1", "--timeout", "30", "--target", str(target), "kornia==0.7.0"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        pytest.skip(f"kornia 0.7.0 could not be installed from the package index: {done.stderr[-400:]}")
    return target


def _flat_colour_images() -> dict[str, Image.Image]:
    """The project's flat-colour images: fill records (a disc on a plain background) and skin elements
    (keyboards, function row, navigation bar; the backgrounds only cost time)."""
    images = {f"fill{i}": fill_record(i, 256, seed=0)[0] for i in range(8)}
    for index in (0, 1):
        skin = generate_skin(index, seed=0, scale=0.5)
        elements = {name: image for name, image in skin.elements.items() if name != "background"}
        images |= {f"skin{index}_{name}": element.convert("RGB") for name, element in elements.items()}
    return images


def test_controlnetpp_canny_is_kornia_070_pixel_for_pixel(kornia070: Path, tmp_path: Path) -> None:
    """Fills, skins and scenes through our edge map vs kornia 0.7.0's canny as ControlNet++ calls it; random
    tensors through our canny vs 0.7.0's (magnitude and edges, with and without hysteresis)."""
    images = {**_flat_colour_images(), "scene0": _scene(0), "scene1": _scene(1, (200, 176), blur=0.8)}
    for name, image in images.items():
        image.save(tmp_path / f"{name}.png")
    generator = torch.Generator().manual_seed(0)
    tensors = {
        "noise_rgb": torch.rand(2, 3, 48, 64, generator=generator),
        "noise_grey": torch.rand(1, 1, 37, 29, generator=generator),
        "blocks": torch.rand(1, 3, 6, 8, generator=generator).repeat_interleave(8, 2).repeat_interleave(8, 3),
    }
    for name, tensor in tensors.items():
        torch.save(tensor, tmp_path / f"{name}.pt")
    probe = tmp_path / "probe.py"
    probe.write_text(_KORNIA_070_PROBE)
    env = {**os.environ, "PYTHONPATH": str(kornia070), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(probe), str(tmp_path)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]

    differing = {}
    for name, image in images.items():
        ours = controlnetpp.edge_map(image).numpy()
        theirs = np.array(Image.open(tmp_path / "theirs" / f"{name}.png").convert("L"))
        assert theirs.any(), f"{name}: no edges at all, not a test"
        if not np.array_equal(ours, theirs):
            differing[name] = int((ours != theirs).sum())
    assert not differing, f"edge pixels that differ from kornia 0.7.0: {differing}"
    for name, tensor in tensors.items():
        theirs = torch.load(tmp_path / "theirs" / f"{name}.pt")
        for hysteresis in (True, False):
            magnitude, edges = kornia070_canny(tensor, 0.1, 0.2, hysteresis=hysteresis)
            assert torch.equal(magnitude, theirs[hysteresis][0]), (name, hysteresis)
            assert torch.equal(edges, theirs[hysteresis][1]), (name, hysteresis)


# --------------------------------------------------------------------------- AnyText: strings


@pytest.fixture(scope="module")
def characters() -> list[str]:
    return rec_characters(OcrConfig())


def _unknown(characters: list[str], n: int) -> list[str]:
    """Characters PP-OCRv6's dictionary lacks (it has emoji like 😀, so rarer ones are picked)."""
    known = set(characters)
    candidates = ["\U0002a6a5", "\U0002a6a6", "\u2603", "\u26c4", "\U0001f9ff", "\U0001fae0", "\u0d9e"]
    missing = [c for c in candidates if c not in known]
    assert len(missing) >= n, f"the recogniser's dictionary has all of {candidates}"
    return missing[:n]


def _edit_distance(a: list[int], b: list[int]) -> int:
    """Plain Levenshtein distance (insert, delete, substitute: cost 1)."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (x != y))
    return row[-1]


def _theirs_text(pairs: list[tuple[str, str]], characters: list[str]) -> tuple[float, float]:
    """eval_dgocr.py L50-52, L129-138 and anytext_singleGPU.py L115 on (read, truth) pairs."""
    chars = ["sos", *characters, " "]
    char2id = {}
    for i, char in enumerate(chars):
        char2id[char] = i
    accuracy, similarity = [], []
    for read, truth in pairs:
        truth = truth[:20]
        gt_order = [char2id.get(m, len(chars) - 1) for m in truth]
        pred_order = [char2id.get(m, len(chars) - 1) for m in read]
        accuracy.append(1 if read == truth else 0)
        similarity.append(
            1 - _edit_distance(pred_order, gt_order) / (max(len(pred_order), len(gt_order)) + 1e-5)
        )
    return sum(accuracy) / len(accuracy), sum(similarity) / len(similarity)


def test_anytext_text_scores_equal_their_formula(characters: list[str]) -> None:
    a, b = _unknown(characters, 2)
    long_truth = "Shift 上档 Backspace 删除键 Enter"  # 27 characters, cut to 20
    pairs = [
        ("Shift 上档", "Shift 上档"),  # exact
        ("", ""),  # both empty: AnyText's 1 - 0 / 1e-5 = 1
        (f"键{a}", f"键{b}"),  # two unknown characters share one id: NED 1, but the strings differ
        (f"x{a}", "x "),  # ... and that id is the space's
        (long_truth[:20], long_truth),  # the first 20 characters are the whole truth there
        (long_truth, long_truth),  # reading more than 20 characters is not exact
        ("Spac", "Space"),
        ("", "确定"),
    ]
    read, truth = [r for r, _ in pairs], anytext_truth([t for _, t in pairs])
    ours = anytext_text_scores(read, truth, AnyTextDictionary.of(characters))
    accuracy, similarity = _theirs_text(pairs, characters)
    assert ours.lines == len(pairs)
    assert ours.sentence_accuracy == pytest.approx(accuracy, abs=1e-12) and accuracy == 3 / 8
    assert ours.normalized_edit_distance == pytest.approx(similarity, abs=1e-12)
    unknown_pair = anytext_text_scores([read[2]], [truth[2]], AnyTextDictionary.of(characters))
    assert (unknown_pair.sentence_accuracy, unknown_pair.normalized_edit_distance) == (0.0, 1.0)


def test_anytext_truth_keeps_twenty_lines_of_twenty_characters() -> None:
    truth = [f"line {i} " + "x" * 30 for i in range(25)]
    cut = anytext_truth(truth)
    assert len(cut) == 20 and all(len(t) == 20 for t in cut) and cut[3] == truth[3][:20]


# --------------------------------------------------------------------------- AnyText: dictionaries

SHIPPED_DICTS = Path(controlnetpp.__file__).parent / "dicts"


def _their_char_dict(path: Path) -> list[str]:
    """cldm/recognizer.py get_char_dict (L221-227), as written: bytes lines, decoded, line ends stripped."""
    character_str = []
    with open(path, "rb") as fin:
        lines = fin.readlines()
        for line in lines:
            line = line.decode("utf-8").strip("\n").strip("\r\n")
            character_str.append(line)
    return character_str


def test_shipped_dictionaries_are_anytexts_files() -> None:
    """Byte for byte the files PROVENANCE.md names (with their sha256), numbered as AnyText does."""
    provenance = (SHIPPED_DICTS / "PROVENANCE.md").read_text(encoding="utf-8")
    for name, file in (("zh", "ppocr_keys_v1.txt"), ("en", "en_dict.txt")):
        choice = AnyTextDictChoice(name)
        assert choice.path == SHIPPED_DICTS / file
        digest = hashlib.sha256(choice.path.read_bytes()).hexdigest()
        assert re.search(rf"`{re.escape(file)}`.*`{digest}`", provenance), f"{file} is not the recorded file"
        chars = ["sos", *_their_char_dict(choice.path), " "]
        assert AnyTextDictionary.load(choice).char2id == {char: i for i, char in enumerate(chars)}
        assert choice.describe()["characters"] == len(chars) - 2 and choice.describe()["sha256"] == digest
    assert _their_char_dict(SHIPPED_DICTS / "en_dict.txt")[-1] == " ", "en_dict.txt's last character: a space"


OUTSIDE_ONE_DICTIONARY = [  # (read, truth)
    ("£5", "¢5"),  # both in PP-OCRv6's list, neither in ppocr_keys_v1.txt nor en_dict.txt: one id there
    ("〃", "〓"),  # both in ppocr_keys_v1.txt, neither in PP-OCRv6's list nor en_dict.txt
    ("确定", "回车"),  # in ppocr_keys_v1.txt and PP-OCRv6's list, not in en_dict.txt
    ("Tab©1", "Tab 1"),  # © is outside ppocr_keys_v1.txt and en_dict.txt: it takes the space's id there
    ("Shift", "Shift"),
]


@pytest.mark.parametrize("name", ["zh", "en"])
def test_anytext_ned_is_over_the_benchmark_dictionary(name: str, characters: list[str]) -> None:
    read, truth = zip(*OUTSIDE_ONE_DICTIONARY, strict=True)
    choice = AnyTextDictChoice(name)
    ours = anytext_text_scores(list(read), list(truth), AnyTextDictionary.load(choice))
    accuracy, similarity = _theirs_text(OUTSIDE_ONE_DICTIONARY, _their_char_dict(choice.path))
    assert ours.sentence_accuracy == pytest.approx(accuracy, abs=1e-12) and accuracy == 1 / 5
    assert ours.normalized_edit_distance == pytest.approx(similarity, abs=1e-12)
    _, recognisers = _theirs_text(OUTSIDE_ONE_DICTIONARY, characters)
    assert abs(similarity - recognisers) > 0.05, "these lines score differently over the recogniser's list"


def test_the_data_picks_the_benchmark_dictionary() -> None:
    english = choose_benchmark_dictionary(["Shift", "Tab 1", "", "F12 ~!@#"])
    assert english.name == "en" and english.origin.startswith("the data")
    assert choose_benchmark_dictionary(["Shift", "回车"]).name == "zh"
    assert choose_benchmark_dictionary(["Café"]).name == "zh", "é is not in en_dict.txt"
    assert choose_benchmark_dictionary([]).name == "zh"
    with pytest.raises(FileNotFoundError, match=r"--anytext-dict nope\.txt"):
        AnyTextDictChoice("nope.txt")


class _Scripted:
    """A recogniser that reads the given strings in turn, so that only the protocol math is compared."""

    def __init__(self, reads: list[str]) -> None:
        self.reads = list(reads)

    def recognize(self, lines: list[np.ndarray]) -> list[tuple[str, float]]:
        return [(self.reads.pop(0), 1.0) for _ in lines]


def _line_boxes(lines: int) -> list[list[list[int]]]:
    return [
        [[10, 10 + 30 * k], [150, 10 + 30 * k], [150, 34 + 30 * k], [10, 34 + 30 * k]] for k in range(lines)
    ]


def _text_records(root: Path, truths: list[list[str]]) -> list[ScoredImage]:
    """One flat 192 px image per record and a box per line (the scripted reader ignores the pixels), written
    as a dataset (``root/train.jsonl``); each record's image is also its 'generated' image."""
    records, items = [], []
    for i, lines in enumerate(truths):
        image = root / f"images/{i:03d}.png"
        atomic_save_image(Image.new("RGB", (SIZE, SIZE), (200, 200, 210)), image)
        records.append(
            Record(
                f"record {i}",
                image.relative_to(root).as_posix(),
                image.relative_to(root).as_posix(),
                _line_boxes(len(lines)),
                lines,
            )
        )
        items.append(ScoredImage("ckpt", i, 0, image, f"record {i}", image, _line_boxes(len(lines)), lines))
    write_records(root / "train.jsonl", records)
    return items


@pytest.mark.parametrize(
    ("pairs", "option", "expected"),
    [
        ([OUTSIDE_ONE_DICTIONARY[:2], OUTSIDE_ONE_DICTIONARY[2:]], None, "zh"),
        ([OUTSIDE_ONE_DICTIONARY[:2], OUTSIDE_ONE_DICTIONARY[2:]], "en", "en"),
        ([[("Tab©1", "Tab 1"), ("Entr", "Enter")], [("Shift", "Shift")]], None, "en"),
    ],
)
def test_anytext_evaluation_records_and_uses_the_benchmark_dictionary(
    tmp_path: Path,
    characters: list[str],
    pairs: list[list[tuple[str, str]]],
    option: str | None,
    expected: str,
) -> None:
    """metrics.json's AnyText NED equals theirs over the benchmark file: the data's set by default, the
    command line's when given; and says which file it used."""
    items = _text_records(tmp_path / "data", [[truth for _, truth in record] for record in pairs])
    chosen = AnyTextDictChoice(option) if option else None
    settings = MetricSettings(protocols=(ANYTEXT,), anytext_dict=chosen).for_data(
        tmp_path / "data/train.jsonl"
    )
    evaluator = Evaluator(settings, needs_text=True)
    evaluator.ocr = _Scripted([read for record in pairs for read, _ in record])
    metrics = evaluate(evaluator, items, tmp_path / "out", {"ckpt": 1})

    file = SHIPPED_DICTS / {"zh": "ppocr_keys_v1.txt", "en": "en_dict.txt"}[expected]
    flat = [pair for record in pairs for pair in record]
    accuracy, similarity = _theirs_text(flat, _their_char_dict(file))
    (summary,) = metrics["summary"]
    assert summary["anytext_lines"] == len(flat)
    assert summary["anytext_sentence_accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert summary["anytext_normalized_edit_distance"] == pytest.approx(similarity, abs=1e-12)
    assert abs(similarity - _theirs_text(flat, characters)[1]) > 0.02, "the recogniser's list would differ"
    recorded = json.loads((tmp_path / "out" / METRICS_FILE).read_text())["metric_settings"][
        "anytext_dictionary"
    ]
    assert recorded["dictionary"] == expected and recorded["file"] == file.name
    assert recorded["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()
    assert recorded["origin"] == ("--anytext-dict" if option else recorded["origin"])
    assert option or recorded["origin"].startswith("the data")


# --------------------------------------------------------------------------- AnyText: crops


def _theirs_corners(mask: np.ndarray) -> np.ndarray:
    """recognizer.py L19-41, with Python's sort as they wrote it."""
    _, thresh = cv2.threshold(mask, 127, 255, 0)
    contours, _ = cv2.findContours(thresh, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    box = np.intp(cv2.boxPoints(cv2.minAreaRect(max(contours, key=cv2.contourArea))))
    x_sorted = sorted(box, key=lambda p: p[0])
    tl, bl = sorted(x_sorted[:2], key=lambda p: p[1])
    tr, br = sorted(x_sorted[2:], key=lambda p: p[1])
    return np.array([tl, tr, br, bl])


def _umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity src -> dst (Umeyama 1991, eq. 39-42), as a 3x3 matrix."""
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    u, s, vt = np.linalg.svd(dst_c.T @ src_c / len(src))
    d = np.array([1.0, 1.0 if np.linalg.det(u) * np.linalg.det(vt) > 0 else -1.0])
    rotation = u @ np.diag(d) @ vt
    scale = (s * d).sum() / src_c.var(0).sum()
    matrix = np.eye(3)
    matrix[:2, :2] = scale * rotation
    matrix[:2, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def _theirs_crop(image: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """recognizer.py L44-60 by hand: affine_grid + grid_sample(align_corners=True), bilinear, zero padding."""
    pts = corners.astype(np.float32)
    width = max(np.linalg.norm(pts[0] - pts[1]), np.linalg.norm(pts[2] - pts[3]))
    height = max(np.linalg.norm(pts[0] - pts[3]), np.linalg.norm(pts[1] - pts[2]))
    dst = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float64)
    rows, cols = image.shape[:2]
    t = np.array([[2 / cols, 0, -1], [0, 2 / rows, -1], [0, 0, 1]])
    theta = np.linalg.inv(t @ _umeyama(pts.astype(np.float64), dst) @ np.linalg.inv(t))
    out = np.zeros((int(height), int(width), image.shape[2]))
    padded = np.zeros((rows + 2, cols + 2, image.shape[2]))
    padded[1:-1, 1:-1] = image
    for i in range(int(height)):
        for j in range(int(width)):
            x_n, y_n = -1 + 2 * j / (cols - 1), -1 + 2 * i / (rows - 1)
            x_in, y_in, _ = theta @ [x_n, y_n, 1]
            x, y = (x_in + 1) / 2 * (cols - 1), (y_in + 1) / 2 * (rows - 1)
            x0, y0 = math.floor(x), math.floor(y)
            fx, fy = x - x0, y - y0
            if not (-1 <= x0 <= cols - 1 and -1 <= y0 <= rows - 1):
                continue
            p = padded[y0 + 1 : y0 + 3, x0 + 1 : x0 + 3]
            out[i, j] = (
                p[0, 0] * (1 - fx) * (1 - fy)
                + p[0, 1] * fx * (1 - fy)
                + p[1, 0] * (1 - fx) * fy
                + p[1, 1] * fx * fy
            )
    return np.clip(out, 0, 255)


POLYGONS = {
    "axis-aligned": [[20, 30], [120, 30], [120, 62], [20, 62]],
    "rotated 25°": [[40, 20], [131, 62], [118, 91], [27, 49]],
    "trapezoid": [[30, 100], [150, 92], [140, 140], [45, 130]],
    "vertical": [[150, 10], [175, 10], [175, 90], [150, 90]],
    "kite, fractional": [[60.4, 140.2], [95.7, 128.9], [110.1, 170.6], [70.8, 182.3]],
}


@pytest.mark.parametrize("name", list(POLYGONS))
def test_anytext_crop_equals_their_geometry(name: str) -> None:
    image = np.array(_scene(11, (200, 192)))
    polygon = np.rint(np.array(POLYGONS[name], dtype=np.float64))
    mask = line_mask(polygon, (200, 192))
    ours_corners = line_corners(mask)
    np.testing.assert_array_equal(ours_corners, _theirs_corners(mask))
    ours = crop_line(torch.from_numpy(image).permute(2, 0, 1).float(), ours_corners).permute(1, 2, 0).numpy()
    theirs = _theirs_crop(image.astype(np.float64), ours_corners)
    assert ours.shape == theirs.shape and min(ours.shape[:2]) >= 20
    np.testing.assert_allclose(ours, theirs, atol=2e-3)


class _Recorder:
    """A recogniser that keeps the crops it is shown and reads each as its size (to check the turn)."""

    def __init__(self) -> None:
        self.crops: list[np.ndarray] = []

    def recognize(self, lines: list[np.ndarray]) -> list[tuple[str, float]]:
        self.crops += lines
        return [(f"{line.shape[1]}x{line.shape[0]}", 1.0) for line in lines]


def test_anytext_turns_lines_taller_than_1_2_times_their_width(characters: list[str]) -> None:
    image = _scene(2)
    boxes = [  # 26 wide: 34 tall is turned (1.31 > 1.2), 30 tall is not (1.15), 38 tall is (native: not)
        [[20, 20], [46, 20], [46, 54], [20, 54]],
        [[80, 20], [106, 20], [106, 50], [80, 50]],
        [[130, 20], [156, 20], [156, 58], [130, 58]],
    ]
    recorder = _Recorder()
    read, _ = read_anytext(
        recorder, image, boxes, ["a", "b", "c"], image.size, AnyTextDictionary.of(characters)
    )
    heights_widths = [crop.shape[:2] for crop in recorder.crops]
    assert [h < w for h, w in heights_widths] == [True, False, True], heights_widths
    assert read == [f"{w}x{h}" for h, w in heights_widths]


def test_anytext_reads_rendered_labels_with_the_real_recogniser(characters: list[str]) -> None:
    key = render_keyboard(KEY_LABELS[:2], size=(256, 128), columns=2, font_size=18)
    ocr = load_ocr(OcrConfig(use_angle_cls=False))
    read, scores = read_anytext(
        ocr, key.image, key.boxes.tolist(), key.texts, key.image.size, AnyTextDictionary.of(characters)
    )
    assert read == key.texts and (scores.sentence_accuracy, scores.normalized_edit_distance) == (1.0, 1.0)


# --------------------------------------------------------------------------- native: the dataset's detector


def _labelled_dataset(root: Path, n: int = 3) -> Path:
    """n rendered keyboards (real text, 192 px) with boxes over a soft texture, so that Canny thresholds
    matter; the conditions are placeholders for the builders to replace."""
    records = []
    for i in range(n):
        key = render_keyboard(KEY_LABELS[i : i + 2], size=(SIZE, SIZE), columns=1, font_size=20)
        picture = Image.blend(key.image, _scene(i), 0.3).filter(ImageFilter.GaussianBlur(0.8))
        image, condition = f"images/{i:03d}.png", f"conditioning_images/{i:03d}.png"
        atomic_save_image(picture, root / image)
        atomic_save_image(key.image.convert("L").convert("RGB"), root / condition)
        records.append(Record(f"keys {i}", image, condition, key.boxes.round(1).tolist(), key.texts))
    write_records(root / "train.jsonl", records)
    return root / "train.jsonl"


@pytest.mark.parametrize("options", [[], ["--blur", "3", "--gray", "--low", "30", "--high", "120"]])
def test_canny_dataset_targets_score_one_against_their_own_conditions(
    tmp_path: Path, options: list[str]
) -> None:
    source = _labelled_dataset(tmp_path / "src")
    out = tmp_path / "canny"
    assert data_main(["canny", "--in", str(source), "--out", str(out), "--workers", "1", *options]) == 0
    jsonl = out / "train.jsonl"
    settings = dataset_edge_settings(jsonl)
    assert settings.origin.endswith("canny_params.json") and (settings.blur == 3) == bool(options)
    default = EdgeSettings()
    for line in jsonl.read_text().splitlines():
        record = json.loads(line)
        target = Image.open(out / record["image"]).convert("RGB")
        condition = Image.open(out / record["conditioning_image"]).convert("RGB")
        own = edge_scores(target, condition, settings)
        assert (own.f1, own.f1_tolerant) == (1.0, 1.0) and own.ssim == pytest.approx(1.0)
        assert edge_scores(target, condition, default).f1 < 0.99, "scored at 100/200, the targets fall short"
    explicit = dataset_edge_settings(jsonl, low=100, high=200)
    assert (explicit.low, explicit.high, explicit.origin) == (
        100,
        200,
        f"command line over {settings.origin}",
    )


def test_datasets_without_a_canny_record_keep_the_default_detector(fill_jsonl: Path, tmp_path: Path) -> None:
    assert dataset_edge_settings(fill_jsonl) == EdgeSettings()
    shared = tmp_path / "shared"
    source = _labelled_dataset(tmp_path / "src", n=1)
    edge_png = tmp_path / "edge.png"
    Image.new("RGB", (SIZE, SIZE)).save(edge_png)
    args = ["canny", "--in", str(source), "--out", str(shared), "--workers", "1", "--shared-condition"]
    assert data_main([*args, str(edge_png)]) == 0
    assert dataset_edge_settings(shared / "train.jsonl") == EdgeSettings(), (
        "one shared condition: no detector"
    )


# --------------------------------------------------------------------------- all protocols in one evaluation


def test_evaluation_reports_each_number_with_its_protocol(tmp_path: Path, characters: list[str]) -> None:
    """Two records x two seeds of 'generated' images (shifted, blurred copies of the targets)."""
    jsonl = _labelled_dataset(tmp_path / "data", n=2)
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    out = tmp_path / "out"
    items = []
    outputs: dict[int, list[Image.Image]] = {}
    for index, record in enumerate(records):
        target = Image.open(jsonl.parent / record["image"]).convert("RGB")
        for seed in (0, 1):
            image = target.filter(ImageFilter.GaussianBlur(0.4 * seed)).rotate(
                seed, fillcolor=(228, 228, 234)
            )
            path = out / "images" / "ckpt" / f"{index:05d}_s{seed}.png"
            atomic_save_image(image, path)
            outputs.setdefault(index, []).append(image)
            items.append(
                ScoredImage(
                    "ckpt", index, seed, path, record["text"], jsonl.parent / record["conditioning_image"],
                    record["box"], record["gt_text"], jsonl.parent / record["image"],
                )
            )  # fmt: skip
    settings = MetricSettings(protocols=(ANYTEXT, NATIVE, CONTROLNETPP)).for_data(jsonl)
    metrics = evaluate(Evaluator(settings, needs_text=True), items, out, {"ckpt": 1})

    assert list(metrics["protocols"]) == [NATIVE, CONTROLNETPP, ANYTEXT]
    assert "eval_edge.py" in metrics["protocols"][CONTROLNETPP]["follows"]
    assert "DuGuang" in metrics["protocols"][ANYTEXT]["recogniser"]
    (summary,) = metrics["summary"]
    theirs = [
        _theirs_prompt(Image.open(jsonl.parent / r["image"]).convert("RGB"), outputs[i], tmp_path / f"p{i}")
        for i, r in enumerate(records)
    ]
    assert summary["controlnetpp_edge_f1"] == pytest.approx(100 * sum(f for f, _ in theirs) / 2, abs=1e-9)
    assert summary["controlnetpp_edge_ms_ssim"] == pytest.approx(sum(s for _, s in theirs) / 2, abs=1e-6)
    rows = metrics["images"]
    pairs = [
        (read, truth) for row in rows for read, truth in zip(row["anytext_read"], row["gt_text"], strict=True)
    ]
    assert metrics["metric_settings"]["anytext_dictionary"]["dictionary"] == "zh", "Chinese labels"
    accuracy, similarity = _theirs_text(pairs, _their_char_dict(SHIPPED_DICTS / "ppocr_keys_v1.txt"))
    assert summary["anytext_lines"] == len(pairs) == 16
    assert summary["anytext_sentence_accuracy"] == pytest.approx(accuracy)
    assert summary["anytext_normalized_edit_distance"] == pytest.approx(similarity)
    assert summary["edge_f1"] is not None and summary["text_lines"] == 16

    with (out / METRICS_CSV).open() as handle:
        header = next(csv.reader(handle))
    assert {"edge_f1", "controlnetpp_edge_f1", "anytext_sentence_accuracy"} <= set(header)
    assert json.loads((out / METRICS_FILE).read_text())["metric_settings"]["protocols"] == [
        NATIVE,
        CONTROLNETPP,
        ANYTEXT,
    ]

    report = {
        "data": str(jsonl),
        "records": 2,
        "seeds": [0, 1],
        "settings": {},
        "checkpoints": [{"name": "ckpt"}],
    }
    html = write_html_report(out, report, metrics, [], {}).read_text(encoding="utf-8")
    assert "<th colspan='3' class='protocol'>native</th>" in html.replace("colspan='5'", "colspan='3'")
    assert "ControlNet++ protocol</th>" in html and "AnyText protocol</th>" in html
    assert "eval/eval_edge.py" in html and "DuGuang ConvNextTiny" in html and "canny_params.json" not in html


def test_cli_protocols_and_the_datasets_detector(tmp_path: Path) -> None:
    from inference.__main__ import _metrics, build_parser

    source = _labelled_dataset(tmp_path / "src", n=1)
    out = tmp_path / "canny"
    assert data_main(["canny", "--in", str(source), "--out", str(out), "--workers", "1", "--low", "40"]) == 0
    base = ["--checkpoint", "ckpt", "--data", str(out / "train.jsonl"), "--out", str(tmp_path / "r")]
    settings = _metrics(build_parser().parse_args([*base, "--protocol", "anytext", "controlnet++", "native"]))
    assert settings is not None and settings.protocols == (NATIVE, CONTROLNETPP, ANYTEXT)
    assert settings.edges is not None and (settings.edges.low, settings.edges.high) == (40, 80)
    default = _metrics(build_parser().parse_args([*base, "--canny-high", "90"]))
    assert default is not None and default.protocols == (NATIVE,)
    assert default.edges is not None and (default.edges.low, default.edges.high) == (40, 90)
    with pytest.raises(SystemExit):
        build_parser().parse_args([*base, "--protocol", "controlnet"])
    assert default.anytext_dict is None, "by default the data picks AnyText's dictionary"
    chosen = _metrics(build_parser().parse_args([*base, "--protocol", "anytext", "--anytext-dict", "en"]))
    assert chosen is not None and chosen.anytext_dict == AnyTextDictChoice("en", "--anytext-dict")
    custom = tmp_path / "keys.txt"
    custom.write_text("a\nb\n", encoding="utf-8")
    own = _metrics(build_parser().parse_args([*base, "--protocol", "anytext", "--anytext-dict", str(custom)]))
    assert own is not None and own.as_dict()["anytext_dictionary"]["file"] == str(custom)
    assert own.as_dict()["anytext_dictionary"]["characters"] == 2


def test_cli_names_a_missing_anytext_dictionary(tmp_path: Path) -> None:
    """The CLI's metric settings refuse a dictionary file that is not there (main reports it, exit 2)."""
    from inference.__main__ import _metrics, build_parser

    _text_records(tmp_path / "data", [["Shift"]])
    missing = tmp_path / "keys.txt"
    args = ["--checkpoint", str(tmp_path / "ckpt"), "--data", str(tmp_path / "data/train.jsonl")]
    args += ["--out", str(tmp_path / "r"), "--protocol", "anytext", "--anytext-dict", str(missing)]
    with pytest.raises(FileNotFoundError, match=f"--anytext-dict {re.escape(str(missing))}: no such file"):
        _metrics(build_parser().parse_args(args))
