"""The native torch PP-OCR recognizer: parity with onnxruntime, conversion cache, crops geometry."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from recognizer.crops import crop_lines
from recognizer.ocr import OcrModelNotFoundError
from recognizer.rec_cache import CHARSET_FILE, WEIGHTS_FILE, load_or_convert
from recognizer.shipped_models import shipped_model_path
from recognizer.synthetic import render_keyboard
from recognizer.torch_rec import RecognizerConfig, TextRecognizer, load_text_recognizer

logger = logging.getLogger(__name__)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """``(1, 3, H, W)`` RGB in [-1, 1]."""
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 127.5 - 1


@pytest.fixture(scope="module")
def recognizer(tmp_path_factory: pytest.TempPathFactory) -> TextRecognizer:
    return load_text_recognizer(RecognizerConfig(cache_dir=tmp_path_factory.mktemp("rec_cache")))


@pytest.fixture(scope="module")
def onnx_logits() -> Callable[[np.ndarray], np.ndarray]:
    """onnxruntime on the shipped ONNX, also returning the logits that feed its final Softmax."""
    model = onnx.load(str(shipped_model_path("rec")))
    (softmax,) = [node for node in model.graph.node if node.op_type == "Softmax"][-1:]
    model.graph.output.append(onnx.helper.make_empty_tensor_value_info(softmax.input[0]))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])

    def run(bgr: np.ndarray) -> np.ndarray:
        _, logits = session.run(None, {"x": bgr})
        return logits

    return run


def test_logits_match_onnxruntime(
    recognizer: TextRecognizer,
    onnx_logits: Callable[[np.ndarray], np.ndarray],
    record_property: Callable[[str, object], None],
) -> None:
    keyboard = render_keyboard()
    text_crops = crop_lines(to_tensor(keyboard.image), [keyboard.boxes]).crops
    noise = torch.rand(3, 3, 48, 100, generator=torch.Generator().manual_seed(0)) * 2 - 1
    worst = 0.0
    for crops in (text_crops, noise):
        with torch.no_grad():
            ours = recognizer(crops).numpy()
        theirs = onnx_logits(np.ascontiguousarray(crops.flip(1).numpy()))  # the ONNX takes BGR
        assert ours.shape == theirs.shape
        worst = max(worst, float(np.abs(ours - theirs).max()))
    record_property("max_abs_logit_diff", worst)
    logger.warning("torch vs onnxruntime: max abs logit difference %.2e", worst)
    assert worst <= 1e-3
    assert recognizer.read(text_crops) == keyboard.texts


def test_conversion_runs_once_and_is_cached(tmp_path: Path) -> None:
    onnx_path = shipped_model_path("rec")
    first = load_or_convert(onnx_path, tmp_path)
    second = load_or_convert(onnx_path, tmp_path)

    assert first.converted and not second.converted
    assert first.folder == second.folder and first.folder.parent == tmp_path
    assert sorted(p.name for p in first.folder.iterdir()) == sorted([CHARSET_FILE, WEIGHTS_FILE])
    assert first.characters == second.characters and len(first.characters) == 18708
    assert first.state_dict.keys() == second.state_dict.keys()
    assert all(torch.equal(first.state_dict[k], second.state_dict[k]) for k in first.state_dict)

    (first.folder / CHARSET_FILE).unlink()  # an incomplete entry is converted again
    assert load_or_convert(onnx_path, tmp_path).converted


def test_recognizer_is_frozen_but_passes_gradients(recognizer: TextRecognizer) -> None:
    assert not any(p.requires_grad for p in recognizer.parameters())
    recognizer.train()
    assert not recognizer.training and not any(m.training for m in recognizer.modules())

    crops = torch.zeros(1, 3, 48, 64, requires_grad=True)
    recognizer(crops).logsumexp(-1).sum().backward()
    assert crops.grad is not None and crops.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="48"):
        recognizer(torch.zeros(1, 3, 32, 64))


def test_missing_onnx_names_the_file_and_the_setting(tmp_path: Path) -> None:
    with pytest.raises(OcrModelNotFoundError, match=r"missing_rec\.onnx.*RecognizerConfig\.onnx_path"):
        load_text_recognizer(RecognizerConfig(onnx_path=tmp_path / "missing_rec.onnx", cache_dir=tmp_path))


def _rotate_points(points: np.ndarray, angle_deg: float, size: tuple[int, int], new_size: tuple[int, int]):
    """Where points land under ``PIL.Image.rotate(angle_deg, expand=True)`` (counter-clockwise)."""
    theta = np.deg2rad(angle_deg)
    centre, new_centre = np.array(size) / 2, np.array(new_size) / 2
    d = points - centre
    rotated = np.stack([d[..., 0] * np.cos(theta) + d[..., 1] * np.sin(theta),
                        -d[..., 0] * np.sin(theta) + d[..., 1] * np.cos(theta)], axis=-1)  # fmt: skip
    return rotated + new_centre


def test_crops_follow_rotated_boxes(recognizer: TextRecognizer) -> None:
    keyboard = render_keyboard(size=(768, 384))
    rotated = keyboard.image.rotate(
        25, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=(228, 228, 234)
    )
    boxes = _rotate_points(keyboard.boxes, 25, keyboard.image.size, rotated.size)
    crops = crop_lines(to_tensor(rotated), [boxes]).crops
    assert recognizer.read(crops) == keyboard.texts


def test_tall_lines_are_turned_upright(recognizer: TextRecognizer) -> None:
    """Text running top to bottom, boxed by its image-aligned rectangle, is read like PP-OCR reads it."""
    keyboard = render_keyboard(labels=[("Delete", "删除")], size=(256, 160), columns=1)
    turned = keyboard.image.transpose(Image.Transpose.ROTATE_270)  # 90° clockwise
    boxes = _rotate_points(keyboard.boxes, -90, keyboard.image.size, turned.size)
    upright_order = np.stack([boxes.min(1), boxes.max(1)], 1)  # image-aligned TL/BR of each box
    image_aligned = np.stack(
        [
            upright_order[:, 0],
            np.stack([upright_order[:, 1, 0], upright_order[:, 0, 1]], -1),
            upright_order[:, 1],
            np.stack([upright_order[:, 0, 0], upright_order[:, 1, 1]], -1),
        ],
        axis=1,
    )
    result = crop_lines(to_tensor(turned), [image_aligned])
    assert recognizer.read(result.crops) == keyboard.texts
