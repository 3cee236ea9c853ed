"""Text losses through the frozen recognizer: they rank strings right, and their gradients teach text."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from recognizer.crops import crop_lines
from recognizer.synthetic import LabelledImage, render_keyboard
from recognizer.text_loss import TextLoss
from recognizer.torch_rec import RecognizerConfig, load_text_recognizer


def to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 127.5 - 1


def edit_distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (ca != cb))
    return row[-1]


@pytest.fixture(scope="module")
def text_loss(tmp_path_factory: pytest.TempPathFactory) -> TextLoss:
    return TextLoss(load_text_recognizer(RecognizerConfig(cache_dir=tmp_path_factory.mktemp("rec_cache"))))


@pytest.fixture(scope="module")
def keyboard() -> LabelledImage:
    return render_keyboard(size=(768, 384))


def test_correct_text_scores_far_better_than_wrong_text(text_loss: TextLoss, keyboard: LabelledImage) -> None:
    images = to_tensor(keyboard.image)
    wrong = keyboard.texts[1:] + keyboard.texts[:1]  # every box gets another key's label
    right = text_loss.ctc_loss(images, [keyboard.boxes], [keyboard.texts])
    shifted = text_loss.ctc_loss(images, [keyboard.boxes], [wrong])

    assert right.num_boxes == shifted.num_boxes == len(keyboard.texts)
    assert right.unknown_chars == right.skipped_boxes == 0
    assert float(right.loss) < 0.1
    assert float(shifted.loss) > 20 * float(right.loss) + 5


def test_batch_of_images_with_uneven_box_counts(text_loss: TextLoss, keyboard: LabelledImage) -> None:
    image = to_tensor(keyboard.image)
    images = torch.cat([image, image.flip(3), image])  # the mirrored one holds no boxes
    boxes = [keyboard.boxes[:3], keyboard.boxes[:0], keyboard.boxes[3:5]]
    texts = [keyboard.texts[:3], [], keyboard.texts[3:5]]
    result = text_loss.ctc_loss(images, boxes, texts)
    crops = crop_lines(images, boxes)

    assert result.num_boxes == 5 and float(result.loss) < 0.1
    assert crops.image_index.tolist() == [0, 0, 0, 2, 2]
    assert text_loss.recognizer.read(crops.crops) == keyboard.texts[:3] + keyboard.texts[3:5]


def test_unknown_characters_are_counted_and_their_boxes_skipped(
    text_loss: TextLoss, keyboard: LabelledImage
) -> None:
    texts = list(keyboard.texts[:3])
    # A G clef and a private-use code point: not in the PP-OCR charset (which does hold ⌘ ⇧ ⌫ ⏎ ⌥).
    texts[1] = "Sp\U0001d11ece\ue000"
    texts[2] = ""
    result = text_loss.ctc_loss(to_tensor(keyboard.image), [keyboard.boxes[:3]], [texts])

    assert result.unknown_chars == 2
    assert result.skipped_boxes == 2 and result.num_boxes == 1
    assert set(result.logs()) == {"ctc_loss", "ctc_boxes", "ctc_unknown_chars", "ctc_skipped_boxes"}
    images = to_tensor(keyboard.image).requires_grad_(True)
    none_usable = text_loss.ctc_loss(images, [keyboard.boxes[:1]], [["\ue000"]])
    assert none_usable.num_boxes == 0 and float(none_usable.loss.detach()) == 0.0
    none_usable.loss.backward()  # still a graph: a step without usable boxes needs no special case


def test_per_line_losses_for_callers_that_crop_themselves(
    text_loss: TextLoss, keyboard: LabelledImage
) -> None:
    crops = crop_lines(to_tensor(keyboard.image), [keyboard.boxes[:3]]).crops
    texts = [keyboard.texts[0], "\ue000", keyboard.texts[2]]
    lines = text_loss.ctc_per_line(crops, texts)
    wrong = text_loss.ctc_per_line(crops, [keyboard.texts[2], "", keyboard.texts[0]])

    assert lines.used.tolist() == [True, False, True] and lines.unknown_chars == 1
    assert float(lines.per_line[1]) == 0.0 and (lines.per_line[[0, 2]] < 0.1).all()
    assert (wrong.per_line[[0, 2]] > 5).all()
    features = text_loss.feature_per_line(crops, crops)
    assert features.shape == (3,) and float(features.abs().max()) < 1e-10


def test_gradients_reach_the_image_and_are_finite(text_loss: TextLoss, keyboard: LabelledImage) -> None:
    images = to_tensor(keyboard.image).requires_grad_(True)
    result = text_loss.ctc_loss(images, [keyboard.boxes[:4]], [["Space", "空格", "Shift", "上档"]])
    result.loss.backward()
    grad = images.grad
    assert grad is not None and torch.isfinite(grad).all()
    inside = grad[..., 40:200, 40:260].abs().sum()  # around the first key's labels
    assert inside > 0
    assert grad[..., 300:, 600:].abs().sum() == 0  # pixels outside every box get no gradient


def test_adam_on_pixels_turns_the_label_into_the_target(text_loss: TextLoss) -> None:
    key = render_keyboard([("Shift", "上档")], size=(256, 160), columns=1)
    pixels = to_tensor(key.image).requires_grad_(True)
    target = ["Space", "空格"]
    optimizer = torch.optim.Adam([pixels], lr=0.05)

    def distance() -> int:
        read = text_loss.recognizer.read(crop_lines(pixels.detach(), [key.boxes]).crops)
        return sum(edit_distance(r, t) for r, t in zip(read, target, strict=True))

    before = distance()
    for _ in range(30):
        loss = text_loss.ctc_loss(pixels, [key.boxes], [target]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            pixels.clamp_(-1, 1)
    after = distance()
    assert before >= 6  # "Shift" vs "Space" and "上档" vs "空格"
    assert after <= 2, f"still {after} edits away after 30 steps"


def test_feature_loss_is_zero_on_identical_images_and_grows_with_damage(
    text_loss: TextLoss, keyboard: LabelledImage
) -> None:
    reference = to_tensor(keyboard.image)
    boxes = [keyboard.boxes[:6]]
    same = text_loss.feature_loss(reference, reference, boxes)
    noisy = reference + 0.3 * torch.randn(reference.shape, generator=torch.Generator().manual_seed(0))
    generated = noisy.clamp(-1, 1).requires_grad_(True)
    damaged = text_loss.feature_loss(generated, reference, boxes)
    damaged.loss.backward()

    assert same.num_boxes == 6 and float(same.loss) < 1e-10
    assert float(damaged.loss.detach()) > 1e-3
    assert (
        generated.grad is not None and torch.isfinite(generated.grad).all() and generated.grad.abs().sum() > 0
    )
