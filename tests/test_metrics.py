"""Evaluation metrics on constructed cases with known answers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from inference.evaluate import Evaluator, MetricSettings
from inference.fid import check_fid_model, frechet_distance
from inference.metrics import (
    EdgeSettings,
    TextScores,
    aggregate,
    canny,
    condition_edges,
    edge_f1,
    edge_scores,
    edge_ssim,
    read_text_scores,
    text_scores,
    unordered_text_scores,
)
from recognizer.ocr import OcrConfig, OcrModelNotFoundError


def test_text_scores_on_known_strings() -> None:
    scores = text_scores(["Shift 上档", "Spac", "确定"], ["Shift 上档", "Space", "删除"])
    assert scores.lines == 3
    assert scores.sentence_accuracy == pytest.approx(1 / 3)
    # 1.0 for the exact line, 1 - 1/5 for one missing letter, 0 for two wrong characters out of two
    assert scores.normalized_edit_distance == pytest.approx((1.0 + 0.8 + 0.0) / 3)


def test_text_scores_need_one_reading_per_line() -> None:
    with pytest.raises(ValueError, match="2 read lines for 1"):
        text_scores(["a", "b"], ["a"])


def test_unordered_text_scores_pair_each_label_with_its_best_line() -> None:
    truth = ["符号", "Space", "A", "符号"]
    # Read out of order, one label cut short ("Spac"), one stray line ("@"), a label drawn twice ("符号").
    scores = unordered_text_scores(["Spac", "符号", "@", "符号", "A"], truth)
    assert scores.lines == 4
    assert scores.sentence_accuracy == pytest.approx(3 / 4)
    assert scores.normalized_edit_distance == pytest.approx((1.0 + 0.8 + 1.0 + 1.0) / 4)
    assert unordered_text_scores(["A"], ["A", "B"]).normalized_edit_distance == pytest.approx(0.5)
    assert unordered_text_scores([], ["A"]) == TextScores(1, 0.0, 0.0)
    assert unordered_text_scores(["A"], []).lines == 0


class _SizeReader:
    """An OCR stand-in that 'reads' each crop as its size, to check which pixels were cropped."""

    def recognize(self, lines: Sequence[np.ndarray]) -> list[tuple[str, float]]:
        return [(f"{line.shape[1]}x{line.shape[0]}", 1.0) for line in lines]


def test_read_text_scores_scales_boxes_from_condition_to_image() -> None:
    image = Image.new("RGB", (64, 32))  # half the condition's 128x64 size
    boxes = [[[10, 10], [50, 10], [50, 30], [10, 30]], [[0, 0], [20, 0], [20, 60], [0, 60]]]
    read, scores = read_text_scores(_SizeReader(), image, boxes, ["20x10", "wrong"], (128, 64))
    assert read == ["20x10", "30x10"]  # the tall box is turned to read left to right
    assert (scores.lines, scores.sentence_accuracy) == (2, 0.5)


def _square(size: int = 64) -> Image.Image:
    image = Image.new("RGB", (size, size), "black")
    ImageDraw.Draw(image).rectangle((16, 16, 47, 47), fill=(255, 200, 0))
    return image


def test_identical_edges_score_perfectly() -> None:
    image = _square()
    edges = Image.fromarray(canny(image, 100, 200)).convert("RGB")  # a condition as the Canny builder writes
    scores = edge_scores(image, edges, EdgeSettings())
    assert (scores.f1, scores.f1_tolerant, scores.ssim) == (1.0, 1.0, pytest.approx(1.0))

    canny_mode = EdgeSettings(condition_is_edges=False)  # the condition is a picture: Canny on both
    assert edge_scores(image, image, canny_mode).f1 == 1.0


def test_edge_f1_on_known_counts() -> None:
    target = np.zeros((8, 8), dtype=bool)
    target[2, 1:5] = True  # 4 edge pixels
    pred = np.zeros_like(target)
    pred[2, 1:3] = True  # 2 of them found
    pred[6, 6:8] = True  # 2 false positives
    assert edge_f1(pred, target) == pytest.approx(0.5)  # precision 2/4, recall 2/4
    assert edge_f1(target, target) == 1.0


def test_one_pixel_shift_counts_only_within_tolerance() -> None:
    target = np.zeros((32, 32), dtype=bool)
    target[4:28, 10] = True
    shifted = np.roll(target, 1, axis=1)
    assert edge_f1(shifted, target) == 0.0
    assert edge_f1(shifted, target, tolerance=1) == 1.0
    assert edge_ssim(shifted, target) < 0.9 and edge_ssim(target, target) == pytest.approx(1.0)


def test_empty_edge_maps() -> None:
    empty, full = np.zeros((8, 8), dtype=bool), np.ones((8, 8), dtype=bool)
    assert edge_f1(empty, empty) == 1.0
    assert edge_f1(empty, full) == edge_f1(full, empty) == 0.0
    with pytest.raises(ValueError, match="differ in shape"):
        edge_f1(empty, np.zeros((4, 4), dtype=bool))


def test_condition_edges_follow_the_output_size() -> None:
    condition = Image.new("RGB", (128, 128))
    ImageDraw.Draw(condition).line((0, 64, 127, 64), fill="white", width=2)
    edges = condition_edges(condition, (64, 64), EdgeSettings())
    assert edges.shape == (64, 64) and edges[32].all() and edges.sum() == 64


def test_aggregate_pools_text_over_lines() -> None:
    rows = [
        {
            "edge_f1": 0.2,
            "edge_ssim": 0.5,
            "text_lines": 2,
            "sentence_accuracy": 0.5,
            "normalized_edit_distance": 0.75,
        },
        {
            "edge_f1": 0.4,
            "edge_ssim": 0.7,
            "text_lines": 1,
            "sentence_accuracy": 1.0,
            "normalized_edit_distance": 1.0,
        },
        {"edge_f1": 0.6, "edge_ssim": 0.9},  # a record without labels
    ]
    summary = aggregate(rows)
    assert summary["images"] == 3 and summary["text_lines"] == 3
    assert summary["edge_f1"] == pytest.approx(0.4) and summary["edge_ssim"] == pytest.approx(0.7)
    assert summary["sentence_accuracy"] == pytest.approx(2 / 3)  # 2 of 3 lines exact, not mean(0.5, 1)
    assert summary["normalized_edit_distance"] == pytest.approx((2 * 0.75 + 1.0) / 3)
    assert summary["clip_score"] is None and summary["edge_f1_tolerant"] is None


def test_frechet_distance_known_values() -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(64, 4))
    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-6)
    shifted = features + 0.5  # same covariance, mean moved by 0.5 in each of 4 dimensions
    assert frechet_distance(features, shifted) == pytest.approx(4 * 0.25, rel=1e-6)
    with pytest.raises(ValueError, match="at least 2 images"):
        frechet_distance(features[:1], features)


def test_missing_metric_models_are_clear_errors(tmp_path: Path) -> None:
    missing = tmp_path / "rec.onnx"
    with pytest.raises(OcrModelNotFoundError, match=r"OCR rec model file not found: .*rec\.onnx"):
        Evaluator(MetricSettings(ocr=OcrConfig(rec_model=missing, use_angle_cls=False)), needs_text=True)
    Evaluator(MetricSettings(ocr=OcrConfig(rec_model=missing)), needs_text=False)  # no labels: OCR not needed
    with pytest.raises(
        FileNotFoundError, match=r"--clip-model .*not a local CLIP folder.*nothing is downloaded"
    ):
        Evaluator(MetricSettings(text=False, clip_model=tmp_path), needs_text=False)
    with pytest.raises(FileNotFoundError, match=r"--fid-model .*inception-2015-12-05\.pt"):
        check_fid_model(tmp_path / "inception.pt")


def test_clip_score_with_local_weights(tiny_sdxl_dir: Path, tmp_path: Path) -> None:
    """A tiny random CLIP saved like a downloaded one: scores are in [0, 100] and per pair."""
    import shutil

    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from inference.clip_score import ClipScorer

    folder = tmp_path / "clip"
    text = {"vocab_size": 1000, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
            "num_attention_heads": 4, "bos_token_id": 998, "eos_token_id": 999}  # fmt: skip
    vision = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4,
              "image_size": 32, "patch_size": 8}  # fmt: skip
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(folder)
    shutil.copytree(tiny_sdxl_dir / "tokenizer", folder, dirs_exist_ok=True)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        folder
    )

    scorer = ClipScorer(folder)
    scores = scorer([_square(), Image.new("RGB", (48, 48), "white")], ["a yellow square", "white"])
    assert len(scores) == 2 and all(0.0 <= s <= 100.0 for s in scores)
    assert scorer([_square()], ["a yellow square"])[0] == pytest.approx(scores[0], abs=1e-4)


class _MeanColour(torch.nn.Module):
    """Stands in for the TorchScript Inception: same call, features = per-channel means."""

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def test_fid_of_a_set_against_itself_is_zero(tmp_path: Path) -> None:
    from inference.fid import FidScorer

    model = tmp_path / "inception.pt"
    torch.jit.script(_MeanColour()).save(str(model))
    paths = []
    for i, colour in enumerate([(10, 20, 30), (200, 100, 0), (0, 255, 90), (120, 120, 120)]):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", (40, 30), colour).save(paths[-1])
    scorer = FidScorer(model)
    reference = scorer.features(paths)
    assert reference.shape == (4, 3)
    assert scorer.fid(paths, reference) == pytest.approx(0.0, abs=1e-6)
    assert scorer.fid(paths[:2] + paths[:2], reference) > 1.0
